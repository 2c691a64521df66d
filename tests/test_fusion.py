"""AdapterFusion: weights sum to one, one adapter with V = I is that adapter, adapters load by task name."""
import json

import pytest
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


@pytest.mark.parametrize("model_name", ["tiny-bert", "tiny-bart", "tiny-t5", "tiny-gpt2"])
def test_fusion_of_one_adapter_with_identity_value_equals_the_adapter_alone_in_the_model(model_name):
    from adapters.fusion import add_fusion, fusion_weights
    from adapters.methods import AdapterConfig
    from common.methods import attach_method
    from common.models import build_task_model

    torch.manual_seed(0)
    cfg = {"name": "adapter", "config": "pfeiffer", "reduction_factor": 4, "init": "bert"}
    single, tok = build_task_model(model_name, "classification", 2)
    attach_method(single, cfg)
    state = {k[len("backbone."):]: v for k, v in single.state_dict().items() if ".adapter." in k}
    fused, _ = build_task_model(model_name, "classification", 2)
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
    w = fusion_weights(fused, batch)
    assert len(w) == len(layers) and all(x.shape[-1] == 1 and torch.allclose(x, torch.ones_like(x)) for x in w)


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
    with pytest.raises(UserError, match="neither a checkpoint folder nor a task"):
        attach_method(build_task_model("tiny-bert", "classification", 2)[0],
                      {"name": "adapter_fusion", "adapters": [str(tmp_path / "missing")]})


def test_adapters_are_found_by_task_name_and_seed_best_dev_first(tmp_path, monkeypatch):
    from adapters.fusion import find_adapter
    from common import paths
    from common.errors import UserError

    monkeypatch.setattr(paths, "SCRATCH_DIR", tmp_path)
    for run, task, seed, dev, exp in (("a", "rte", 2, 60.0, "adapters_st"), ("b", "rte", 2, 65.0, "adapters_st"),
                                      ("c", "rte", 3, 90.0, "adapters_st"), ("d", "rte", 2, 99.0, "other")):
        (tmp_path / "checkpoints" / run).mkdir(parents=True)
        (tmp_path / "checkpoints" / run / "run.json").write_text(
            json.dumps({"experiment": exp, "task": task, "seed": seed, "dev": dev}))
    assert find_adapter("rte", "adapters_st", 2).name == "b"
    assert find_adapter("rte", "adapters_st", 3).name == "c"
    assert find_adapter(str(tmp_path / "checkpoints" / "a"), "adapters_st", 2).name == "a"
    with pytest.raises(UserError, match="tasks saved there: rte"):
        find_adapter("mrpc", "adapters_st", 2)


def test_fusion_run_finds_the_st_a_adapters_by_task_name(tmp_path):
    """ST-A runs with save_checkpoint, then a fusion run naming them by task: the whole stage-2 path."""
    from common.paths import SCRATCH_DIR
    from common.run import run
    from common.sweep import compose

    def cfg(*o):
        return compose(["scale=smoke", "model=tiny-bert", f"records_dir={tmp_path}", "seed=7", *o])

    for task in ("rte", "mrpc"):
        rec = run(cfg(f"task={task}", "method=adapter", "method.reduction_factor=4", "trainer.save_checkpoint=true"))
        info = json.loads((SCRATCH_DIR / "checkpoints" / rec["run_id"] / "run.json").read_text())
        assert (info["task"], info["seed"], info["experiment"]) == (task, 7, rec["experiment"])
    rec = run(cfg("task=rte", "method=adapter_fusion", "method.adapters=[rte,mrpc]",
                  f"method.adapters_from=[{rec['experiment']}]"))
    assert rec["config"]["method"]["adapter_seed"] == 7 and rec["status"] == "completed"


def test_adapterhub_check_maps_every_one_of_our_tensors_to_a_distinct_adapterhub_name(tmp_path):
    """The comparison's name map (run for real in AdapterHub's own environment) covers each case's tensors."""
    from safetensors.torch import load_file

    from adapters._adapterhub_side import their_name
    from adapters.adapterhub_check import CASES, N_FUSED, build_case

    for case, spec in CASES.items():
        build_case(case, tmp_path / case)
        if spec is None:
            continue
        names = list(load_file(str(tmp_path / case / "ours.safetensors")))
        theirs = [their_name(n, ",".join(f"a{i}" for i in range(N_FUSED))) for n in names]
        assert len(set(theirs)) == len(names) > 0
        if spec[2]:  # fusion: every adapter and the fusion layer of each block
            assert {t.split(".adapters.")[1].split(".")[0] for t in theirs if ".adapters." in t} == {"a0", "a1", "a2"}
            assert any(".adapter_fusion_layer.a0,a1,a2.value." in t for t in theirs) == (spec[2] == "dynamic")
