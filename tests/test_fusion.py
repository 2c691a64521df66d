"""AdapterFusion's layer (work in progress): weights sum to one, one adapter with V = I is that adapter."""
import torch

from adapters.fusion import FusionLayer


def test_fusion_weights_sum_to_one_per_token_and_regulariser_starts_near_zero():
    torch.manual_seed(0)
    f = FusionLayer(8).eval()
    f.return_weights = True
    out = f(torch.randn(2, 5, 8), torch.randn(2, 5, 3, 8))
    assert out.shape == (2, 5, 8)
    assert torch.allclose(f.last_weights.sum(-1), torch.ones(2, 5))
    assert f.regularization().item() < 1e-9


def test_fusion_over_one_adapter_with_identity_value_is_that_adapter():
    f = FusionLayer(8).eval()
    with torch.no_grad():
        f.value.weight.copy_(torch.eye(8))
    a = torch.randn(2, 5, 1, 8)
    assert torch.allclose(f(torch.randn(2, 5, 8), a), a[:, :, 0], atol=1e-6)


def test_static_fusion_has_no_value_matrix():
    f = FusionLayer(8, dynamic=False)
    assert f.value is None and f.regularization().item() == 0.0


def test_fusion_of_one_adapter_with_identity_value_equals_the_adapter_alone_in_the_model():
    from adapters.fusion import add_fusion
    from adapters.methods import AdapterConfig
    from common.methods import attach_method
    from common.models import build_task_model

    torch.manual_seed(0)
    cfg = {"name": "adapter", "config": "pfeiffer", "reduction_factor": 4, "init": "bert"}
    single, tok = build_task_model("tiny-bert", "classification", 2)
    attach_method(single, cfg)
    state = {k[len("backbone."):]: v for k, v in single.state_dict().items() if ".adapter." in k}
    fused, _ = build_task_model("tiny-bert", "classification", 2)
    fused.head.load_state_dict(single.head.state_dict())
    layers = add_fusion(fused.backbone, [state], AdapterConfig(**{k: v for k, v in cfg.items() if k != "name"}))
    with torch.no_grad():
        for f in layers:
            f.value.weight.copy_(torch.eye(f.value.weight.size(0)))
    enc = tok(["a cat sat", "dogs bark loudly"], padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    single.eval(), fused.eval()
    with torch.no_grad():
        assert torch.allclose(single(batch)["logits"], fused(batch)["logits"], atol=1e-6)


def test_fusion_method_loads_frozen_adapters_trains_fusion_and_adds_the_regulariser(tmp_path):
    import pytest

    from common.errors import UserError
    from common.methods import attach_method, save_trainable
    from common.models import build_task_model

    cfg = {"name": "adapter", "config": "pfeiffer", "reduction_factor": 4, "init": "bert"}
    folders = []
    for i in range(2):
        torch.manual_seed(i)
        m, tok = build_task_model("tiny-bert", "classification", 2)
        attach_method(m, cfg)
        save_trainable(m, tmp_path / f"a{i}", cfg)
        folders.append(str(tmp_path / f"a{i}"))
    model, tok = build_task_model("tiny-bert", "classification", 3)
    attach_method(model, {"name": "adapter_fusion", "adapters": folders})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".fusion." in n or n.startswith("head.") for n in trainable)
    assert any(".adapters.1." in n for n, _ in model.named_parameters())  # both adapters present, frozen
    enc = tok(["a cat sat", "dogs bark"], padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor([0, 2])}
    from adapters.fusion import FusionLayer

    for f in (m for m in model.modules() if isinstance(m, FusionLayer)):
        with torch.no_grad():
            f.value.weight.add_(0.1)  # move V away from I: the regulariser must show in the training loss
    model.train()
    torch.manual_seed(0)
    with_reg = model(batch)["loss"]
    model.aux_losses.clear()
    torch.manual_seed(0)
    assert with_reg > model(batch)["loss"]
    with pytest.raises(UserError, match="method.adapters is empty"):
        attach_method(build_task_model("tiny-bert", "classification", 2)[0], {"name": "adapter_fusion"})
    with pytest.raises(UserError, match="no trained adapter in"):
        attach_method(build_task_model("tiny-bert", "classification", 2)[0],
                      {"name": "adapter_fusion", "adapters": [str(tmp_path / "missing")]})
