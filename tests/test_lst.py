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


def test_bad_input_is_a_clear_error():
    with pytest.raises(UserError, match="must divide"):
        _model("tiny-bert", reduction_factor=3)
    with pytest.raises(UserError, match="distinct layers in 1..2"):
        _model("tiny-bert", side_layers=[3])
    with pytest.raises(UserError, match="side_layers is empty"):
        _model("tiny-bert", side_layers=[])
    with pytest.raises(UserError, match="gate="):
        _model("tiny-bert", gate="maybe")
