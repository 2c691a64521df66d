"""Adapters: invariants on every tiny architecture and MiniLM (table-driven), placement, errors."""
import pytest
import torch
from conftest import TINY

from common.errors import UserError
from common.methods import attach_method, count_params, load_trainable, save_trainable
from common.models import build_task_model

CONFIGS = ["pfeiffer", "houlsby"]


def _model(family, task_type="classification"):
    torch.manual_seed(0)
    model, tok = build_task_model(family, task_type, 2)
    return model.eval(), tok


def _batch(tok, kind=None):
    enc = tok(["a cat sat on the mat", "dogs bark"], padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor([0, 1])}


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("family", TINY)
def test_zero_up_projection_gives_the_base_models_outputs(family, config):
    base, tok = _model(family)
    batch = _batch(tok, base.kind)
    with torch.no_grad():
        before = base(batch)["logits"]
    attach_method(base, {"name": "adapter", "config": config, "init": "zero_up", "reduction_factor": 4})
    base.eval()
    with torch.no_grad():
        after = base(batch)["logits"]
    assert torch.allclose(before, after, atol=1e-6), (before - after).abs().max()
    # and the default (near-identity) init does change them, so the adapters are really in the path
    other, _ = _model(family)
    attach_method(other, {"name": "adapter", "config": config, "init": "bert", "reduction_factor": 4})
    other.eval()
    with torch.no_grad():
        assert not torch.allclose(before, other(batch)["logits"], atol=1e-6)


def _adapters(model):
    from adapters.methods import Adapter

    return [m for m in model.modules() if isinstance(m, Adapter)]


@pytest.mark.parametrize("family", TINY)
def test_placement_and_trainable_sets(family):
    from common import arch

    for config in CONFIGS:
        model, _ = _model(family)
        attach_method(model, {"name": "adapter", "config": config, "reduction_factor": 4})
        n_blocks = len(arch.layers(model.backbone))
        assert len(_adapters(model)) == (2 if config == "houlsby" else 1) * n_blocks
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        for n in names:
            is_ln = "norm" in n.lower() or "ln_" in n
            assert ".adapter." in n or n.startswith("head.") or (config == "houlsby" and is_ln), n
        if config == "houlsby":
            assert any("norm" in n.lower() or "ln_" in n for n in names)  # Houlsby trains the LayerNorms
        d = arch.hidden_size(model.backbone)
        per = 2 * d * (d // 4) + d + d // 4
        expected = len(_adapters(model)) * per + sum(p.numel() for p in model.head.parameters())
        if config == "pfeiffer":
            assert count_params(model)[0] == expected


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("family", ["tiny-bert", "tiny-bart", "tiny-t5", "tiny-gpt2"])
def test_backbone_unchanged_after_training_and_save_load_reproduces(tmp_path, family, config):
    model, tok = _model(family)
    attach_method(model, {"name": "adapter", "config": config, "reduction_factor": 4})
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    batch = _batch(tok, model.kind)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        model(batch)["loss"].backward()
        opt.step()
        opt.zero_grad()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    model.eval()
    with torch.no_grad():
        out = model(batch)["logits"]
    path = save_trainable(model, tmp_path / "ck", {"name": "adapter", "config": config, "reduction_factor": 4})
    from safetensors.torch import load_file

    saved = load_file(str(path))
    assert set(saved) == {n for n, p in model.named_parameters() if p.requires_grad}
    fresh, _ = _model(family)
    attach_method(fresh, {"name": "adapter", "config": config, "reduction_factor": 4})
    load_trainable(fresh, path)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(batch)["logits"], out)


def test_pfeiffer_matches_its_formula_on_minilm():
    """Post-LN block: FFN output LN(z) -> LN(z + A(LN(z))) with the block's own LayerNorm."""
    from adapters.methods import AroundLayerNorm

    model, _ = _model("minilm")
    attach_method(model, {"name": "adapter", "config": "pfeiffer"})
    wrapped = [m for m in model.modules() if isinstance(m, AroundLayerNorm)]
    assert len(wrapped) == 6 and wrapped[0].adapter.down.out_features == 384 // 16
    z = torch.randn(2, 5, 384)
    ln, a = wrapped[0].ln, wrapped[0].adapter
    with torch.no_grad():
        ref = torch.nn.functional.layer_norm(z + a(ln(z)), (384,), ln.weight, ln.bias, ln.eps)
        assert torch.allclose(wrapped[0](z), ref, atol=1e-6)


@pytest.mark.parametrize("options,needle", [
    ({"reduction_factor": 5}, "reduction_factor=5 must divide the hidden size 32"),
    ({"config": "lora"}, "config='lora'; valid: pfeiffer, houlsby"),
    ({"init": "xavier"}, "init='xavier'; valid"),
    ({"non_linearity": "elu"}, "non_linearity='elu'; valid"),
    ({"size": 0}, "size must be >= 1"),
])
def test_bad_options_are_clear_errors(options, needle):
    model, _ = _model("tiny-bert")
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        attach_method(model, {"name": "adapter", **options})
