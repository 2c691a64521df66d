"""MT-A: several tasks' adapters trained jointly; each task's checkpoint is an ST-A one that fusion can load."""
import json

import pytest
import torch

from adapters.mta import main as mta_main
from adapters.mta import run_mta, step_budget, task_configs
from common.errors import UserError
from common.sweep import compose


def _overrides(tmp_path, *extra):
    return ["experiment=adapters_mt", "scale=smoke", "model=tiny-bert", f"records_dir={tmp_path}", "seed=3",
            "multitask.tasks=[rte,stsb]", "multitask.eval_every=2", "method.reduction_factor=4", *extra]


def test_mta_trains_one_adapter_per_task_and_saves_st_a_checkpoints_that_reproduce_its_scores(tmp_path):
    from common.config import TrainerConfig
    from common.methods import load_trainable
    from common.paths import SCRATCH_DIR
    from common.run import prepare
    from common.trainer import evaluate

    ov = _overrides(tmp_path)
    cfg = compose(ov)
    recs = run_mta(cfg, task_configs(cfg, ov))
    assert [r["task"] for r in recs] == ["rte", "stsb"]
    assert all(r["multitask"]["tasks"] == ["rte", "stsb"] and not r["multitask"]["train_backbone"] for r in recs)
    assert recs[0]["history"] == recs[1]["history"]  # one joint run
    for rec in recs:
        # An ST-A model of the same task, loaded from the MT-A checkpoint, scores what the record says on dev:
        # the checkpoint holds exactly that task's adapter and head, under ST-A's names.
        st = compose(["scale=smoke", "model=tiny-bert", f"task={rec['task']}", "method=adapter",
                      "method.reduction_factor=4", "seed=3"])
        spec, model, tok, items, _, _ = prepare(st)
        folder = SCRATCH_DIR / "checkpoints" / rec["run_id"]
        load_trainable(model, folder / "trainable.safetensors")
        again = evaluate(model, items["dev"], spec, tok, TrainerConfig(**st["trainer"]), torch.device("cpu"))
        assert again == pytest.approx(rec["final"]["dev"], abs=1e-6)
        assert json.loads((folder / "run.json").read_text())["experiment"] == "adapters_mt"
    # and fusion finds them by name
    from common.run import run

    fused = run(compose(["scale=smoke", "model=tiny-bert", "task=rte", "method=adapter_fusion", "seed=3",
                         f"records_dir={tmp_path}", "method.adapters=[rte,stsb]", "method.adapters_from=[adapters_mt]"]))
    assert fused["status"] == "completed"


def test_mta_gives_each_task_its_single_task_step_budget():
    """The experiment's targets at `small`: CB (32 examples, one batch) trains its 200 steps inside the joint
    run, as in ST-A, not the ~1 % of MRPC's steps that shares by size would give it."""
    from common.multitask import interleaved_batches

    ov = ["experiment=adapters_mt"]
    cfgs = task_configs(compose(ov), ov)
    sizes = {"mrpc": 3301, "cb": 32}  # the training sets at `small` (test_scale loads CB's)
    steps, epochs = step_budget(cfgs, sizes, 32)
    own = {t: -(-sizes[t] // 32) * cfgs[t]["trainer"]["epochs"] for t in sizes}
    assert steps == sum(own.values()) and own["cb"] >= 200
    stream = interleaved_batches(sizes, 32, seed=2, epochs=epochs)
    drawn = [next(stream)[0] for _ in range(steps)]
    assert {t: drawn.count(t) for t in sizes} == own


def test_mta_rejects_one_task_and_houlsby(tmp_path, capsys):
    assert mta_main(_overrides(tmp_path, "multitask.tasks=[rte]")) == 2
    assert "at least two tasks" in capsys.readouterr().err
    assert mta_main(_overrides(tmp_path, "multitask.train_backbone=true")) == 2
    assert "multitask.backbone_lr" in capsys.readouterr().err
    ov = _overrides(tmp_path, "method.config=houlsby")
    cfg = compose(ov)
    with pytest.raises(UserError, match="Pfeiffer"):
        run_mta(cfg, task_configs(cfg, ov))


def test_mta_with_the_backbone_trained_records_its_lr(tmp_path):
    ov = _overrides(tmp_path, "multitask.train_backbone=true", "multitask.backbone_lr=1e-5")
    cfg = compose(ov)
    recs = run_mta(cfg, task_configs(cfg, ov))
    assert all(r["multitask"]["train_backbone"] and r["multitask"]["backbone_lr"] == 1e-5 for r in recs)
    assert recs[0]["trainable_params"] > 0.5 * recs[0]["total_params"]  # the backbone trains too


def test_mta_plan_prices_one_joint_run_per_seed_and_reads_its_records(tmp_path):
    from adapters.mta import plan_frame
    from common.plan import STARTUP_S, Throughput, predict

    ov = _overrides(tmp_path)
    df = plan_frame(ov, seeds=(3,))
    assert len(df) == 1 and df.task[0] == "rte+stsb" and df.status[0] == "todo"
    cfg = compose(ov)
    cfgs = task_configs(cfg, ov)
    parts = [predict(c, Throughput(), 1)["predicted_s"] for c in cfgs.values()]
    assert df.predicted_s[0] == pytest.approx(sum(parts) - STARTUP_S, abs=0.2)  # start-up counted once
    recs = run_mta(cfg, cfgs)
    done = plan_frame(ov, seeds=(3,))
    assert done.status[0] == "done" and done.measured_s[0] == max(r["wall_time_s"] for r in recs)
