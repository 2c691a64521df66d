"""LST invariants on tiny models and MiniLM: no graph through the backbone, gates, Fisher / magnitude init,
layer dropping, the backbone cache, save -> load, bad input."""
import pytest
import torch

from common.errors import UserError
from common.memory import count_saved
from common.methods import (
    attach_method,
    load_trainable,
    save_trainable,
    trainable_state,
)
from common.models import build_task_model
from common.multitask import state_fingerprint
from ladder_side.methods import (
    LadderSide,
    empirical_fisher,
    init_from_backbone,
)


def _model(name="tiny-bert", task="classification", **cfg):
    torch.manual_seed(0)
    m, tok = build_task_model(name, task, 1 if task == "regression" else 2, pooling="mean")
    attach_method(m, {"name": "lst", "reduction_factor": 4 if name.startswith("tiny") else 8, "init": "random", **cfg})
    return m, tok


def _batch(tok, labels=(0, 1)):
    enc = tok(["a cat sat on the mat", "dogs bark at night loudly"], padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor(labels)}


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-roberta", "tiny-bart", "minilm"])
def test_the_backbone_builds_no_graph_gets_no_gradient_and_stays_bit_identical(name):
    m, tok = _model(name)
    before = state_fingerprint(m.backbone)
    side: LadderSide = m.token_encoder
    batch = _batch(tok)
    embeds = m.embed(batch["input_ids"], batch["attention_mask"])[0]
    with count_saved() as saved:
        side.backbone_states(embeds, batch["attention_mask"])
    assert saved == {}  # nothing of the backbone's forward is kept for backward
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        m.train()
        m(batch)["loss"].backward()
        assert all(p.grad is None for p in m.backbone.parameters())
        opt.step()
        opt.zero_grad()
    after = state_fingerprint(m.backbone)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad} == {"token_encoder", "head"}


def test_gates_start_at_one_half_and_fixed_or_sum_gates_do_not_train():
    m, _ = _model()
    assert torch.allclose(m.token_encoder.gates(), torch.full((2,), 0.5))
    assert m.token_encoder.alpha.requires_grad
    for gate in ("fixed", "sum"):
        assert not _model(gate=gate)[0].token_encoder.alpha.requires_grad


def test_layer_dropping_keeps_exactly_the_requested_blocks_and_ladders():
    m, tok = _model("minilm", side_layers=[2, 4, 6])
    side = m.token_encoder
    assert side.kept == [2, 4, 6] and len(side.blocks) == 3 and len(side.ladders) == 3 and side.alpha.numel() == 3
    assert m(_batch(tok))["logits"].shape == (2, 2)


@pytest.mark.parametrize("init", ["fisher", "magnitude"])
def test_init_copies_the_selected_rows_and_columns_of_the_backbone_blocks(init):
    from common.data import DataArgs, tokenize
    from common.tasks import get_task

    m, tok = _model(init="random")  # initialised by hand below, as attach / the trainer would
    spec = get_task("rte")
    items = tokenize([{"text_a": f"sentence {i} about cats", "text_b": "cats", "label": i % 2} for i in range(6)],
                     spec, tok, "encoder", DataArgs(max_seq_len=16))
    fisher = empirical_fisher(m, items, spec, tok, 6) if init == "fisher" else None
    if fisher is not None:
        assert all(f.abs().sum() > 0 for f in fisher.values())  # every matrix got a gradient signal
    chosen = init_from_backbone(m.token_encoder, fisher, 4)
    from common import arch

    for ix, i, sblock in zip(chosen, m.token_encoder.kept, m.token_encoder.blocks):
        fam = arch.family(m.backbone)
        a, b = arch.block_weights(arch.encoder_blocks(m.backbone)[i - 1], fam), arch.block_weights(sblock, fam)
        assert torch.equal(b["Wq"].weight, a["Wq"].weight[ix["attn"]][:, ix["resid"]])
        assert torch.equal(b["W2"].weight, a["W2"].weight[ix["resid"]][:, ix["ffn"]])
        assert torch.equal(b["Wo"].bias, a["Wo"].bias[ix["resid"]])
        heads, hd = arch.attention_shape(m.backbone)
        per_head = torch.bincount(ix["attn"] // hd, minlength=heads)
        assert (per_head == hd // 4).all()  # every head keeps its share: the head count is kept


def test_fisher_init_runs_before_training_in_a_real_run(tmp_path):
    from common.run import run
    from common.sweep import compose

    rec = run(compose(["scale=smoke", "model=tiny-bert", "method=lst", "method.reduction_factor=4",
                       "method.fisher_samples=8", f"records_dir={tmp_path}"]))
    assert rec["status"] == "completed" and rec["trainable_params"] < rec["total_params"] / 10


def test_cached_backbone_gives_the_uncached_logits_and_reports_its_size():
    m, tok = _model(cache_backbone=True, cache_dtype="float32")
    ref, _ = _model(cache_backbone=False)
    ref.load_state_dict(m.state_dict())
    batch = _batch(tok)
    m.eval(), ref.eval()
    with torch.no_grad():
        first = m(batch)["logits"]
        again = m(batch)["logits"]  # served from the cache
        assert torch.equal(first, again) and torch.equal(first, ref(batch)["logits"])
    assert m.token_encoder.cache_bytes() > 0 and len(m.token_encoder.cache) == 2
    half, _ = _model(cache_backbone=True)
    half.load_state_dict(m.state_dict())
    half.eval()
    with torch.no_grad():
        half(batch)
        assert torch.allclose(half(batch)["logits"], first, atol=1e-2)


def test_save_load_reproduces_outputs_and_writes_only_side_and_head(tmp_path):
    from safetensors.torch import load_file

    m, tok = _model("tiny-bert", "regression")
    with torch.no_grad():
        m.token_encoder.alpha.add_(1.0)
    batch = _batch(tok, labels=(0.5, 2.0))
    batch["labels"] = batch["labels"].float()
    m.eval()
    path = save_trainable(m, tmp_path / "lst", {"name": "lst", "reduction_factor": 4, "init": "random"})
    saved = load_file(str(path))
    assert set(saved) == set(trainable_state(m)) and not any(k.startswith("backbone.") for k in saved)
    fresh, _ = _model("tiny-bert", "regression")
    load_trainable(fresh, path)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(m(batch)["logits"], fresh(batch)["logits"])


@pytest.mark.parametrize("dropout,maps_kept", [(0.0, False), (None, True)])
def test_side_attention_without_dropout_keeps_no_attention_maps_for_backward(dropout, maps_kept):
    m, tok = _model("tiny-bert", side_attention_dropout=dropout)
    assert m.token_encoder.config.attention_probs_dropout_prob == (0.0 if dropout == 0.0 else 0.1)
    batch = _batch(tok)
    L = batch["input_ids"].size(1)
    shapes = []
    m.train()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        m(batch)["loss"].backward()
    heads = m.backbone.config.num_attention_heads
    assert ((2, heads, L, L) in shapes) == maps_kept  # (B, heads, L, L): only the math path stores the maps


def test_bad_input_is_a_clear_error():
    with pytest.raises(UserError, match="must divide"):
        _model("tiny-bert", reduction_factor=3)
    with pytest.raises(UserError, match="distinct layers in 1..2"):
        _model("tiny-bert", side_layers=[3])
    with pytest.raises(UserError, match="side_layers is empty"):
        _model("tiny-bert", side_layers=[])
    with pytest.raises(UserError, match="gate="):
        _model("tiny-bert", gate="maybe")
    with pytest.raises(UserError, match=r"side_attention_dropout must be in \[0, 1\)"):
        _model("tiny-bert", side_attention_dropout=1.5)


# ----------------------------------------------------------------------------- T5: side encoder + side decoder
def _t5(**cfg):
    torch.manual_seed(0)
    m, tok = build_task_model("tiny-t5", "generation", 0)
    attach_method(m, {"name": "lst", "reduction_factor": 4, "init": "random", **cfg})
    return m, tok


def _t5_batch(tok, targets=("yes it is", "no")):
    enc = tok(["a cat sat on the mat", "dogs bark at night loudly"], padding=True, return_tensors="pt")
    lab = tok(list(targets), padding=True, return_tensors="pt")
    labels = lab["input_ids"].masked_fill(lab["attention_mask"] == 0, -100)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def test_t5_side_trains_without_a_backbone_graph_and_only_side_state_trains():
    m, tok = _t5()
    before = state_fingerprint(m.backbone)
    batch = _t5_batch(tok)
    embeds = m.embed(batch["input_ids"], batch["attention_mask"])[0]
    side = m.side_lm
    with count_saved() as saved:
        enc_last, _ = side.encoder_states(embeds, batch["attention_mask"])
        side.decoder_states(m.backbone._shift_right(batch["labels"]), enc_last, batch["attention_mask"])
    assert saved == {}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        m.train()
        loss = m(batch)["loss"]
        loss.backward()
        losses.append(loss.item())
        assert all(p.grad is None for p in m.backbone.parameters())
        opt.step()
        opt.zero_grad()
    assert losses[-1] < losses[0]  # the side network alone fits the batch
    after = state_fingerprint(m.backbone)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad} == {"side_lm"}
    assert torch.allclose(side.encoder.gates().detach(), torch.full((2,), 0.5), atol=0.1)


def test_t5_side_decoder_is_causal_and_greedy_decoding_matches_teacher_forcing():
    m, tok = _t5()
    m.eval()
    batch = _t5_batch(tok)
    changed = dict(batch, labels=batch["labels"].clone())
    changed["labels"][:, -2] = 7  # the decoder input at the last position only (labels are shifted right)
    embeds = m.embed(batch["input_ids"], batch["attention_mask"])[0]
    with torch.no_grad():
        a = m.side_lm(embeds, batch["attention_mask"], batch["labels"])
        b = m.side_lm(embeds, batch["attention_mask"], changed["labels"])
        assert torch.allclose(a[:, :-1], b[:, :-1])  # position t never sees targets after t - 1
        assert not torch.allclose(a[:, -1], b[:, -1])  # ... and does see the ones before it
        out = m.side_lm.generate(embeds, batch["attention_mask"], tok.pad_token_id, max_new_tokens=4)
        logits = m.side_lm(embeds, batch["attention_mask"], out)  # teacher forcing on its own output
    assert out.shape[0] == 2 and 1 <= out.shape[1] <= 4
    eos = m.backbone.config.eos_token_id
    for row, lg in zip(out, logits):
        for t, tokid in enumerate(row.tolist()):
            assert tokid == lg[t].argmax().item()
            if tokid == eos:
                break


def test_t5_init_copies_selected_rows_and_columns_including_cross_attention_and_position_bias():
    from common import arch
    from ladder_side.methods import init_from_backbone

    m, _ = _t5()
    chosen = init_from_backbone(m.side_lm, None, 4)
    bb, fam = m.backbone, "t5"
    dec = arch.decoder_blocks(bb)
    assert len(chosen) == 4  # 2 encoder + 2 decoder blocks
    for ix, i, sblock in zip(chosen[2:], m.side_lm.kept, m.side_lm.decoder.blocks):
        a, b = arch.block_weights(dec[i - 1], fam, "cross"), arch.block_weights(sblock, fam, "cross")
        assert set(a) == set(b) == {"Wq", "Wk", "Wv", "Wo"}
        assert torch.equal(b["Wk"].weight, a["Wk"].weight[ix["cross"]][:, ix["resid"]])
        assert torch.equal(b["Wo"].weight, a["Wo"].weight[ix["resid"]][:, ix["cross"]])
        assert torch.equal(arch.block_weights(sblock, fam)["W1"].weight,
                          arch.block_weights(dec[i - 1], fam)["W1"].weight[ix["ffn"]][:, ix["resid"]])
    rel = m.side_lm.decoder.blocks[0].layer[0].SelfAttention.relative_attention_bias.weight
    assert torch.equal(rel, dec[0].layer[0].SelfAttention.relative_attention_bias.weight)


def test_t5_fisher_init_and_a_real_generation_run(tmp_path):
    from common.run import run
    from common.sweep import compose

    rec = run(compose(["scale=smoke", "model=tiny-t5", "task=e2e_nlg", "method=lst", "method.reduction_factor=4",
                       "method.fisher_samples=4", f"records_dir={tmp_path}"]))
    assert rec["status"] == "completed" and rec["trainable_params"] < rec["total_params"] / 10
    assert "bleu" in rec["final"]["test"]


def test_t5_save_load_reproduces_outputs(tmp_path):
    from safetensors.torch import load_file

    m, tok = _t5()
    with torch.no_grad():
        m.side_lm.decoder.alpha.add_(1.0)
    m.eval()
    path = save_trainable(m, tmp_path / "lst", {"name": "lst", "reduction_factor": 4, "init": "random"})
    assert all(k.startswith("side_lm.") for k in load_file(str(path)))
    fresh, _ = _t5()
    load_trainable(fresh, path)
    fresh.eval()
    batch = _t5_batch(tok)
    with torch.no_grad():
        assert torch.equal(m(batch)["loss"], fresh(batch)["loss"])


def test_t5_and_other_bad_input_is_a_clear_error():
    with pytest.raises(UserError, match="cache_backbone covers the encoder path"):
        _t5(cache_backbone=True)
    with pytest.raises(UserError, match="must divide the backbone's d_model 32"):
        _t5(reduction_factor=3)
    with pytest.raises(UserError, match="must divide the backbone's d_kv 8"):
        _t5(reduction_factor=16)
    with pytest.raises(UserError, match="distinct layers in 1..2"):
        _t5(side_layers=[0])
    for name, task in (("tiny-gpt2", "generation"), ("tiny-t5", "classification")):
        m, _ = build_task_model(name, task, 2, pooling="mean" if task == "classification" else None)
        with pytest.raises(UserError, match="has no side network here"):
            attach_method(m, {"name": "lst", "reduction_factor": 4})


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-bart", "tiny-t5"])
def test_arch_block_helpers_reproduce_the_models_own_stacks(name):
    """The side networks run blocks one by one (common/arch.py); on the backbone's own blocks that loop must
    give the stack's outputs: the masks, T5's shared position biases and the decoder's causality are right."""
    from common import arch

    m, tok = build_task_model(name, "generation" if name != "tiny-bert" else "classification", 2)
    bb = m.backbone.eval()
    enc = tok(["a cat sat on the mat", "dogs bark"], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    embeds = m.embed(ids, mask)[0]
    with torch.no_grad():
        hs = arch.layer_states(bb, embeds, mask)
        blocks = arch.encoder_blocks(bb)
        if name != "tiny-t5":
            x = hs[0]
            block_mask = arch.bidirectional_mask(bb.config, x, mask)
            for blk, ref in zip(blocks, hs[1:]):
                x = arch.run_block(blk, x, block_mask)
                assert torch.allclose(x, ref, atol=1e-5)
            return
        enc_cfg, x, biases = bb.encoder.config, hs[0], (None, None)
        masks = arch.t5_masks(enc_cfg, x, mask)
        for k, blk in enumerate(blocks):  # the last hidden state is after the final norm
            x, biases = arch.run_t5_block(blk, x, masks, biases)
            ref = hs[k + 1]
            assert torch.allclose(bb.encoder.final_layer_norm(x) if k == len(blocks) - 1 else x, ref, atol=1e-5)
        dec_ids = torch.tensor([[0, 5, 9, 4], [0, 7, 7, 3]])
        dhs = arch.decoder_layer_states(bb, dec_ids, hs[-1], mask)
        dec_cfg, y, biases = bb.decoder.config, dhs[0], (None, None)
        masks = arch.t5_masks(dec_cfg, y, torch.ones_like(dec_ids), hs[-1], mask)
        dec = arch.decoder_blocks(bb)
        for k, blk in enumerate(dec):
            y, biases = arch.run_t5_block(blk, y, masks, biases, hs[-1])
            assert torch.allclose(bb.decoder.final_layer_norm(y) if k == len(dec) - 1 else y, dhs[k + 1], atol=1e-5)
