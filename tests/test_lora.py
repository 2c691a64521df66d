"""LoRA on every tiny architecture: zero init = base model, frozen backbone, merge, counts, export, errors."""
import pytest
import torch
from torch import nn

from common import arch
from common.errors import UserError
from common.methods import (attach_method, count_params, load_trainable, prepare_inference, save_trainable,
                            trainable_state)
from common.models import build_task_model, load_backbone
from conftest import TINY
from lora import methods as L
from lora import targets as T

GEN = {"tiny-bart", "tiny-t5", "tiny-gpt2"}
# Leaf module names per family, written out independently of lora/targets.py's regexes.
LEAVES = {"bert": {"Wq": "query", "Wk": "key", "Wv": "value", "W1": "intermediate.dense"},
          "bart": {"Wq": "q_proj", "Wk": "k_proj", "Wv": "v_proj", "Wo": "out_proj", "W1": "fc1", "W2": "fc2"},
          "t5": {"Wq": "q", "Wk": "k", "Wv": "v", "Wo": "o", "W1": "wi", "W2": "wo"}}
LEAVES["roberta"] = LEAVES["bert"]


def build(family, seed=0, lora=True, **kw):
    """A tiny task model, with LoRA (r 2, no dropout, ``kw`` on top) attached unless ``lora=False``."""
    torch.manual_seed(seed)
    tt = "generation" if family in GEN else "classification"
    model, tok = build_task_model(family, tt, 2)
    if lora:
        attach_method(model, {"name": "lora", "r": 2, "dropout": 0.0, **kw}, max_seq_len=32)
    return model, tok


def inputs(tok, family):
    enc = tok(["a tiny test sentence here", "short"], padding=True, return_tensors="pt")
    kw = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if family in ("tiny-bart", "tiny-t5"):
        kw["decoder_input_ids"] = enc["input_ids"][:, :4]
    return kw


@torch.no_grad()  # autograd on or off can pick different attention kernels: compare like with like
def out(backbone, kw):
    o = backbone(**kw)
    return o.logits if hasattr(o, "logits") else o.last_hidden_state


def perturb_B(model, std=0.2):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, std)


def adapted_shapes(base: nn.Module, family: str, weights) -> list[tuple[int, int]]:
    """(d_out, d_in) of every matrix the paper's names point at, read off the base model."""
    shapes = []
    for n, m in base.named_modules():
        if family == "gpt2":  # fused c_attn (Conv1D weight (H, 3H)): each of q, k, v is H x H
            H = arch.hidden_size(base)
            if n.endswith("attn.c_attn"):
                shapes += [(H, H)] * len(set(weights) & {"Wq", "Wk", "Wv"})
            leaf = {"Wo": "attn.c_proj", "W1": "mlp.c_fc", "W2": "mlp.c_proj"}
            if any(n.endswith(leaf[w]) for w in weights if w in leaf):
                shapes.append(tuple(m.weight.shape[::-1]))
            continue
        if not isinstance(m, nn.Linear):
            continue
        for w in weights:
            leaf = LEAVES[family].get(w)
            if family in ("bert", "roberta") and w == "Wo":
                hit = n.endswith("attention.output.dense")
            elif family in ("bert", "roberta") and w == "W2":
                hit = n.endswith(".output.dense") and "attention" not in n
            else:
                hit = n.endswith("." + leaf)
            if hit:
                shapes.append(tuple(m.weight.shape))
    return shapes


ALL = ["Wq", "Wk", "Wv", "Wo", "W1", "W2"]


@pytest.mark.parametrize("family", TINY + ["minilm"])
def test_zero_B_equals_base_model(family):
    model, tok = build(family, weights=ALL)
    base = load_backbone(family).eval()
    model.eval()
    kw = inputs(tok, family)
    got, ref = out(model.backbone, kw), out(base, kw)
    if family == "tiny-gpt2":  # Conv1D -> nn.Linear: the same map through another GEMM call
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    else:
        assert torch.equal(got, ref)


@pytest.mark.parametrize("family", TINY + ["minilm"])
@pytest.mark.parametrize("weights", [["Wq", "Wv"], ["Wk"], ALL])
def test_trainable_count_is_r_times_din_plus_dout_per_matrix(family, weights):
    r = 3
    model, _ = build(family, weights=weights, r=r)
    head = sum(p.numel() for p in model.head.parameters()) if model.head is not None else 0
    shapes = adapted_shapes(load_backbone(family), arch.family(model.backbone), weights)
    assert shapes, "the independent count found no matrix"
    assert count_params(model)[0] == head + sum(r * (o + i) for o, i in shapes)
    if family == "minilm" and weights == ["Wq", "Wv"]:  # the paper's 2 r d per square matrix, d = 384
        assert count_params(model)[0] - head == 6 * 2 * 2 * r * 384


@pytest.mark.parametrize("family", TINY)
def test_training_moves_only_lora_and_head_then_merged_equals_unmerged(family):
    model, tok = build(family, weights=["Wq", "Wv", "W2"])
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert all(".lora_" in n for n, p in model.backbone.named_parameters() if p.requires_grad)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    kw = inputs(tok, family)
    batch = {"input_ids": kw["input_ids"], "attention_mask": kw["attention_mask"],
             "labels": kw["input_ids"] if family in GEN else torch.tensor([0, 1])}
    for _ in range(3):
        model(batch)["loss"].backward()
        assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
        opt.step()
        opt.zero_grad()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"frozen {n} changed"
    model.eval()
    unmerged = out(model.backbone, kw)
    base = out(load_backbone(family).eval(), kw)
    assert not torch.allclose(unmerged, base, atol=1e-4), "training did not change the function"
    prepare_inference(model, {"name": "lora", "r": 2})  # what common.run does before the test split
    assert all(m.merged for _, m in L._lora_layers(model))
    torch.testing.assert_close(out(model.backbone, kw), unmerged, rtol=1e-5, atol=1e-5)
    L.unmerge(model)
    torch.testing.assert_close(out(model.backbone, kw), unmerged, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", TINY + ["minilm"])
def test_exported_adapter_loads_with_peft_and_merged_backbone_with_transformers(tmp_path, family):
    from peft import PeftModel

    model, tok = build(family, weights=["Wq", "Wv", "Wo", "W1"])
    perturb_B(model)
    model.eval()
    kw = inputs(tok, family)
    ref = out(model.backbone, kw)
    L.export_adapter(model, tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    peft_model = PeftModel.from_pretrained(load_backbone(family), tmp_path / "adapter").eval()
    torch.testing.assert_close(out(peft_model, kw), ref, rtol=1e-5, atol=1e-5)
    # merged export: the stock architecture, no LoRA modules, same function
    L.export_merged(model, tmp_path / "merged")
    cls = type(load_backbone(family))
    merged = cls.from_pretrained(tmp_path / "merged").eval()
    assert not L._lora_layers(merged) and type(merged) is cls
    torch.testing.assert_close(out(merged, kw), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["tiny-bert", "tiny-gpt2"])
def test_save_load_round_trip_writes_only_lora_and_head(tmp_path, family):
    from safetensors.torch import load_file

    cfg = {"name": "lora", "r": 2, "dropout": 0.0, "weights": ["Wq", "Wv"]}
    model, tok = build(family, weights=cfg["weights"])
    perturb_B(model)
    model.eval()
    kw = inputs(tok, family)
    ref = out(model.backbone, kw)
    path = save_trainable(model, tmp_path, cfg)
    names = set(load_file(str(path)))
    assert names == set(trainable_state(model))
    assert all(".lora_" in n or n.startswith("head.") for n in names)
    fresh, _ = build(family, seed=7, weights=cfg["weights"])
    fresh.eval()
    assert not torch.allclose(out(fresh.backbone, kw), ref)
    load_trainable(fresh, path)
    torch.testing.assert_close(out(fresh.backbone, kw), ref)


def test_gpt2_generation_with_lora_merged_equals_unmerged():
    model, tok = build("tiny-gpt2", weights=["Wq", "Wv"])
    perturb_B(model, 0.5)
    model.eval()
    prompts = [tok("name : the eagle", add_special_tokens=False)["input_ids"], [5, 6]]
    a = model.generate(prompts, tok.pad_token_id, max_new_tokens=6, num_beams=3, do_sample=False)
    L.merge(model)
    b = model.generate(prompts, tok.pad_token_id, max_new_tokens=6, num_beams=3, do_sample=False)
    assert a == b


def test_gpt2_split_and_join_are_exact_inverses():
    bb = load_backbone("tiny-gpt2")
    before = {n: p.clone() for n, p in bb.state_dict().items()}
    T.split_gpt2(bb, ALL)
    assert any(isinstance(m, T.FusedQKV) for m in bb.modules())
    T.join_gpt2(bb)
    after = bb.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[n], before[n]) for n in before)


@pytest.mark.parametrize("weights,match", [(["Wx"], "unknown weight name"), ([], "empty"),
                                           ("Wq,Wz", "unknown weight name")])
def test_bad_weight_names(weights, match):
    with pytest.raises(UserError, match=match):
        build("tiny-bert", weights=weights)


def test_target_that_matches_nothing_lists_the_linear_modules():
    with pytest.raises(UserError, match=r"matches no linear module.*c_attn"):
        T.resolve(load_backbone("tiny-gpt2"), ["Wq"])  # unsplit GPT-2 has no separate Wq


@pytest.mark.parametrize("kw,match", [({"r": 0}, "r must be >= 1"), ({"init": "zeros"}, "init")])
def test_bad_options(kw, match):
    with pytest.raises(UserError, match=match):
        build("tiny-bert", **kw)


def test_weights_string_form_and_order():
    assert T.parse_weights("wv, Wq") == ["Wq", "Wv"]


# ----------------------------------------------------------------------------- analysis
def test_phi_grid_matches_the_definition_and_its_bounds():
    from lora.analysis import phi_grid, right_singular

    g = torch.Generator().manual_seed(0)
    U1 = right_singular(torch.randn(8, 40, generator=g))
    U2 = right_singular(torch.randn(16, 40, generator=g))
    grid = phi_grid(U1, U2)
    for i, j in [(1, 1), (3, 7), (8, 16)]:
        direct = (U1[:, :i].T @ U2[:, :j]).pow(2).sum() / min(i, j)
        torch.testing.assert_close(grid[i - 1, j - 1], direct)
    assert bool(((grid >= 0) & (grid <= 1 + 1e-9)).all())
    same = phi_grid(U1, U1)
    torch.testing.assert_close(same.diagonal(), torch.ones(8, dtype=same.dtype))  # a subspace vs itself
    # a subspace inside another: phi = 1 once j covers it (i <= j)
    A = torch.randn(4, 40, generator=g)
    inside = phi_grid(right_singular(A[:2]), right_singular(A))
    torch.testing.assert_close(inside[:, -1], torch.ones(2, dtype=inside.dtype))


def test_amplification_on_known_matrices():
    from lora.analysis import amplification_table

    d, r = 12, 2
    W = torch.diag(torch.arange(d, 0, -1).double())  # singular values 12, 11, ..., 1 on the axes
    A = torch.zeros(r, d, dtype=torch.float64)
    B = torch.zeros(d, r, dtype=torch.float64)
    A[0, d - 1] = A[1, d - 2] = 1.0  # ΔW lives on W's two weakest axes (singular values 1 and 2)
    B[d - 1, 0] = 3.0
    B[d - 2, 1] = 2.0
    state = {f"backbone.encoder.layer.0.attention.self.query.lora_{k}.default.weight": v for k, v in (("A", A), ("B", B))}
    df = amplification_table({r: (state, float(r))}, layer=1, base_weights={("Wq", 1): W}).set_index("directions")
    torch.testing.assert_close(df.proj_norm["w"], (12.0 ** 2 + 11.0 ** 2) ** 0.5)  # W's own top-2 directions
    torch.testing.assert_close(df.proj_norm["delta_w"], (1.0 + 4.0) ** 0.5)  # W on ΔW's axes: 1 and 2
    torch.testing.assert_close(df.delta_w_norm["delta_w"], (9.0 + 4.0) ** 0.5)  # alpha / r = 1
    torch.testing.assert_close(df.amplification["delta_w"], 13 ** 0.5 / 5 ** 0.5)
    # random orthonormal U, V: E ||U^T W V||_F^2 = ||W||_F^2 r^2 / (d_out d_in)
    df = amplification_table({r: (state, float(r))}, layer=1, base_weights={("Wq", 1): W},
                             n_random=4000).set_index("directions")
    expected = (float(W.square().sum()) * r ** 2 / d ** 2) ** 0.5
    assert abs(df.proj_norm["random"] / expected - 1) < 0.05, (df.proj_norm["random"], expected)


def test_label_smoothing_recomputed_loss_matches_the_models_own():
    """The LM loss recomputed for label smoothing lines up labels like the model does (tiny epsilon)."""
    for family in ("tiny-gpt2", "tiny-t5"):
        torch.manual_seed(0)
        model, tok = build_task_model(family, "generation", 0)
        model.eval()  # same dropout (none) in both forward passes
        enc = tok(["name : the eagle", "food : french"], padding=True, return_tensors="pt")
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        b = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}
        own = model(b)["loss"]
        model.label_smoothing = 1e-9
        torch.testing.assert_close(model(b)["loss"], own, rtol=1e-5, atol=1e-5)
        model.label_smoothing = 0.1
        assert not torch.allclose(model(b)["loss"], own)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-roberta", "tiny-bart", "tiny-t5", "tiny-gpt2"])
def test_sublayer_map_finds_wo_and_w2_in_every_family_unsplit(name):
    """common.arch's map serves adapters too: Wo and W2 resolve on stock models (GPT-2: its Conv1D)."""
    from common import arch
    from common.models import load_backbone

    model = load_backbone(name)
    found = arch.resolve_weights(model, ["Wo", "W2"], who="adapter")
    blocks = len(arch.layers(model))
    assert len(found["W2"]) == blocks  # one FFN output per block
    cross = sum(n.endswith(("encoder_attn", "EncDecAttention")) for n, _ in model.named_modules())  # decoder blocks
    assert len(found["Wo"]) == blocks + cross  # self-attention in every block, cross-attention in decoder blocks
    with pytest.raises(UserError, match="adapter: unknown weight"):
        arch.parse_weights(["Wx"], who="adapter")
