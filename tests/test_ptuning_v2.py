"""P-Tuning v2 deep prompts: placement, masking, gradient flow, peft equivalence, save/load, errors."""
import pytest
import torch
from torch import nn

from common import arch
from common.errors import UserError
from common.methods import attach_method, count_params, load_trainable, save_trainable, trainable_state
from common.models import TaskModel, build_task_model, load_backbone
from conftest import TINY
from ptuning_v2 import attention
from ptuning_v2.methods import parse_layers


def deep(family, task_type="classification", num_labels=2, seed=0, **kw):
    torch.manual_seed(seed)
    model, tok = build_task_model(family, task_type, num_labels)
    attach_method(model, {"name": "deep_prompt", "prefix_len": 3, "prefix_dropout": 0.0, **kw}, max_seq_len=32)
    return model, tok


def batch(tok, labels=(0, 1)):
    enc = tok(["a tiny test sentence here", "short"], padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor(labels)}


def cross_attentions(model):
    return [m for n, m in model.named_modules() if n.endswith(("encoder_attn", "EncDecAttention", "crossattention"))]


@pytest.mark.parametrize("family", TINY + ["minilm"])
@pytest.mark.parametrize("spec", ["all", "top:1", "bottom:1", "1,3"])
def test_prompts_in_exactly_the_requested_layers(family, spec):
    model, _ = build_task_model(family, "classification", 2)
    n = len(arch.layers(model.backbone))
    if spec == "1,3" and n < 3:
        spec = "1"
    attach_method(model, {"name": "deep_prompt", "prefix_len": 2, "layers": spec})
    want = set(parse_layers(spec, n))
    got = {i for i, b in enumerate(arch.layers(model.backbone)) if attention.has_prefix(arch.self_attention(b))}
    assert got == want
    assert not any(attention.has_prefix(m) for m in cross_attentions(model.backbone))
    heads, d = arch.attention_shape(model.backbone)
    head = sum(p.numel() for p in model.head.parameters())
    assert count_params(model)[0] == head + len(want) * 2 * heads * 2 * d


def test_reparam_counts_and_trains():
    model, tok = deep("tiny-bert", reparam=True, reparam_hidden=16)
    H, n = 32, 2
    head = sum(p.numel() for p in model.head.parameters())
    assert count_params(model)[0] == head + 3 * H + (H * 16 + 16) + (16 * n * 2 * H + n * 2 * H)
    model(batch(tok))["loss"].backward()
    assert model.deep_prompt.mlp_in.weight.grad.abs().sum() > 0


def _manual_attention(q, k, v, mask_bool):
    s = q @ k.transpose(-1, -2) / q.size(-1) ** 0.5
    s = s.masked_fill(~mask_bool, float("-inf"))
    return (s.softmax(-1) @ v).transpose(1, 2)


def test_attention_function_prepends_prefix_and_widens_the_mask():
    torch.manual_seed(0)
    B, h, L, d, P = 2, 2, 5, 4, 3
    q, k, v = (torch.randn(B, h, L, d) for _ in range(3))
    mask = torch.ones(B, 1, L, L, dtype=torch.bool)
    mask[1, ..., 3:] = False  # second sequence padded after 3 tokens
    mod = nn.Module()
    mod.is_causal = False
    out_plain, _ = attention.deep_prompt_attention(mod, q, k, v, mask, scaling=d ** -0.5)
    torch.testing.assert_close(out_plain, _manual_attention(q, k, v, mask))
    pk, pv = torch.randn(B, h, P, d), torch.randn(B, h, P, d)
    attention.set_prefix(mod, lambda b, dtype, dev: (pk, pv))
    out, _ = attention.deep_prompt_attention(mod, q, k, v, mask, scaling=d ** -0.5)
    wide = torch.cat([torch.ones(B, 1, L, P, dtype=torch.bool), mask], -1)
    torch.testing.assert_close(out, _manual_attention(q, torch.cat([pk, k], 2), torch.cat([pv, v], 2), wide))


@pytest.mark.parametrize("family", ["tiny-bert", "tiny-roberta", "tiny-gpt2", "minilm"])
def test_equals_peft_prefix_tuning_given_the_same_prefix(family):
    from peft import PrefixTuningConfig, get_peft_model

    P = 4
    model, tok = deep(family, "token_classification", 3, layers="all")
    model.eval()
    b = batch(tok)
    ours = arch.token_states(model.backbone, arch.embed_tokens(model.backbone, b["input_ids"]), b["attention_mask"],
                             model.position_offset)
    base = load_backbone(family, tok=tok)
    base = base.transformer if family == "tiny-gpt2" else base
    peft_model = get_peft_model(base, PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=3))
    kv = model.deep_prompt.all_kv()  # (layers, 2, heads, P, d) -> peft's (P, layers * 2 * heads * d)
    n, _, h, p, d = kv.shape
    peft_model.prompt_encoder["default"].embedding.weight.data.copy_(kv.permute(3, 0, 1, 2, 4).reshape(p, -1))
    peft_model.eval()
    theirs = peft_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", TINY)
def test_backbone_unchanged_and_gradients_stop_below_the_lowest_prompt(family):
    model, tok = deep(family, layers="top:1")
    blocks = arch.layers(model.backbone)
    needs_grad = []
    hooks = [b.register_forward_hook(lambda m, i, o: needs_grad.append((o[0] if isinstance(o, tuple) else o)
                                                                        .requires_grad)) for b in blocks]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model(batch(tok))["loss"].backward()
    opt.step()
    for h in hooks:
        h.remove()
    order = needs_grad[: len(blocks)]
    if arch.lm_kind(model.backbone) == "seq2seq":  # encoder blocks run first; the top block is the decoder's last
        assert order[:-1] == [False] * (len(blocks) - 1) and order[-1]
    else:
        assert order == [False] * (len(blocks) - 1) + [True]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert model.deep_prompt.prefix.grad is not None


def test_layers_below_the_prompts_compute_what_the_base_model_computes():
    torch.manual_seed(0)
    base, tok = build_task_model("tiny-bert", "classification", 2)
    model, _ = deep("tiny-bert", layers="2", shift_positions=False)
    b = batch(tok)
    hs = lambda m: m.backbone(input_ids=b["input_ids"], attention_mask=b["attention_mask"],  # noqa: E731
                              output_hidden_states=True).hidden_states
    ref, got = hs(base.eval()), hs(model.eval())
    torch.testing.assert_close(got[1], ref[1])  # after layer 1 (no prompt): identical
    assert not torch.allclose(got[2], ref[2])  # after layer 2 (prompted): different


@pytest.mark.parametrize("family", ["tiny-bert", "tiny-t5", "tiny-gpt2"])
@pytest.mark.parametrize("reparam", [False, True])
def test_save_load_round_trip(tmp_path, family, reparam):
    from safetensors.torch import load_file

    model, tok = deep(family, reparam=reparam, seed=0)
    model.eval()
    b = batch(tok)
    ref = model(b)["logits"]
    path = save_trainable(model, tmp_path, {"name": "deep_prompt", "prefix_len": 3, "reparam": reparam})
    assert set(load_file(str(path))) == set(trainable_state(model))
    assert all(k.startswith(("deep_prompt.", "head.")) for k in load_file(str(path)))
    fresh, _ = deep(family, reparam=reparam, seed=1)
    fresh.eval()
    assert not torch.allclose(fresh(b)["logits"], ref)
    load_trainable(fresh, path)
    torch.testing.assert_close(fresh(b)["logits"], ref)


@pytest.mark.parametrize("family", ["tiny-bart", "tiny-t5", "tiny-gpt2"])
def test_generation_with_deep_prompts(family):
    model, tok = deep(family, "generation", 0)
    src = tok(["name [ x ] area [ y ]"])["input_ids"][0]
    out = model.generate([src, src[:4]], tok.pad_token_id, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    for blk in arch.layers(model.backbone):
        attention.set_prefix(arch.self_attention(blk), None)
    plain = model.generate([src, src[:4]], tok.pad_token_id, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert len(out) == 2 and out != plain


@pytest.mark.parametrize("cfg,needle", [
    ({"layers": "7"}, "layer index 7 is outside the model's layers 1..2"),
    ({"layers": "top:0"}, "asks for 0 layers"),
    ({"layers": ","}, "selects no layer"),
    ({"layers": "first"}, "cannot read layers='first'"),
    ({"prefix_len": 0}, "prefix_len must be >= 1"),
    ({"prefix_len": 250}, "exceeds the model's 256 positions"),
])
def test_bad_input(cfg, needle):
    model, _ = build_task_model("tiny-bert", "classification", 2)
    with pytest.raises(UserError) as e:
        attach_method(model, {"name": "deep_prompt", **cfg}, max_seq_len=32)
    assert needle in str(e.value)


def test_unsupported_backbone_is_named():
    from transformers import DistilBertConfig, DistilBertModel

    backbone = DistilBertModel(DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32))
    with pytest.raises(UserError, match="'distilbert' is not supported; supported: bert, roberta, bart, t5, gpt2"):
        TaskModel(backbone, "classification", 2)


@pytest.mark.parametrize("family", ["tiny-bert", "tiny-roberta"])
def test_verbalizer_head_with_deep_prompts(tmp_path, family):
    from ptuning_v2.verbalizer import add_mask, build_verbalizer_model

    torch.manual_seed(0)
    model, tok = build_verbalizer_model(family, ["no", "yes"])
    attach_method(model, {"name": "deep_prompt", "prefix_len": 3, "prefix_dropout": 0.0})
    assert count_params(model)[0] == model.deep_prompt.prefix.numel()  # the LM head stays frozen
    b = add_mask(tok(["it rains today", "sunny"], padding=True, return_tensors="pt"), tok)
    b["labels"] = torch.tensor([0, 1])
    assert ((b["input_ids"] == tok.mask_token_id).sum(1) == 1).all()
    out = model(b)
    assert out["logits"].shape == (2, 2)
    out["loss"].backward()
    assert model.deep_prompt.prefix.grad.abs().sum() > 0
    model.eval()
    ref = model(b)["logits"]
    path = save_trainable(model, tmp_path)
    fresh, _ = build_verbalizer_model(family, ["no", "yes"])
    torch.manual_seed(5)
    attach_method(fresh, {"name": "deep_prompt", "prefix_len": 3, "prefix_dropout": 0.0})
    load_trainable(fresh, path)
    torch.testing.assert_close(fresh.eval()(b)["logits"], ref)


def test_verbalizer_needs_a_masked_lm_backbone():
    from ptuning_v2.verbalizer import build_verbalizer_model

    with pytest.raises(UserError, match="no MLM head|has none"):
        build_verbalizer_model("minilm", ["no", "yes"])
    with pytest.raises(UserError, match="one token"):
        build_verbalizer_model("tiny-bert", ["no", "absolutely-not-one-piece"])
