"""Trainer, run records and the aggregator, end to end at smoke scale on tiny models."""
import json

import pandas as pd
import pytest

from common.aggregate import BASE_COLUMNS, aggregate
from common.sweep import compose
from common.records import record_path
from common.run import run


def smoke_cfg(tmp_path, *overrides):
    return compose(["scale=smoke", "model=tiny-bert", f"records_dir={tmp_path}", *overrides])


def test_same_seed_same_metrics_and_a_complete_record(tmp_path):
    a = run(smoke_cfg(tmp_path / "a", "method=bitfit", "trainer.epochs=2"))
    b = run(smoke_cfg(tmp_path / "b", "method=bitfit", "trainer.epochs=2"))
    assert a["final"] == b["final"]
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    for key in ("config", "git", "environment", "data_sizes", "trainable_params", "total_params", "history",
                "final", "wall_time_s", "peak_memory_mb", "status", "seed"):
        assert key in a, key
    assert a["status"] == "completed" and len(a["history"]) == 2
    assert a["data_sizes"] == {"train": 32, "dev": 32, "test": 32}
    assert a["environment"]["packages"]["torch"] and "commit" in a["git"]
    assert a["final"]["dev"] == max((h["dev"] for h in a["history"]), key=lambda d: d["accuracy"])


def test_other_seed_other_run(tmp_path):
    a = run(smoke_cfg(tmp_path, "method=full_ft", "seed=1"))
    b = run(smoke_cfg(tmp_path, "method=full_ft", "seed=2"))
    assert a["run_id"] != b["run_id"]
    assert [h["train_loss"] for h in a["history"]] != [h["train_loss"] for h in b["history"]]


def test_completed_record_is_skipped_unless_forced(tmp_path):
    cfg = smoke_cfg(tmp_path, "method=head_only")
    first = run(cfg)
    path = record_path(cfg)
    stamp = path.stat().st_mtime_ns
    assert run(cfg)["finished_at"] == first["finished_at"] and path.stat().st_mtime_ns == stamp
    cfg["force"] = True
    run(cfg)
    assert path.stat().st_mtime_ns != stamp
    assert not list(path.parent.glob("*.tmp"))  # atomic writes leave no temporary files


@pytest.mark.parametrize("task,model,method", [
    ("copa", "tiny-roberta", "full_ft"),  # multiple choice, FewGLUE splits
    ("conll2003", "tiny-bert", "prompt_tuning"),  # token classification
    ("stsb", "tiny-bart", "layernorm"),  # regression on an encoder-decoder
    ("multirc", "tiny-bert", "bitfit"),  # grouped EM
    ("e2e_nlg", "tiny-gpt2", "full_ft"),  # causal generation
    ("e2e_nlg", "tiny-t5", "prompt_tuning"),  # seq2seq generation
    ("crossfit/ai2_arc", "tiny-bert", "top_k"),  # CrossFit multiple choice
])
def test_each_task_type_runs_end_to_end(tmp_path, mirror, task, model, method):
    task_args = ["task=crossfit", f"task.name={task}"] if task.startswith("crossfit/") else [f"task={task}"]
    rec = run(compose(["scale=smoke", f"model={model}", f"method={method}", f"records_dir={tmp_path}",
                       "trainer.save_checkpoint=true", *task_args]))
    import torch

    from common.config import TrainerConfig
    from common.methods import load_trainable, prepare_inference
    from common.paths import SCRATCH_DIR
    from common.run import prepare
    from common.tasks import get_task
    from common.trainer import evaluate

    spec = get_task(task, mirror)
    assert set(rec["final"]) == {"dev", "test"}
    for metrics in rec["final"].values():
        # METEOR needs NLTK's WordNet data; where it is missing the metric is left out, never faked
        want = [m for m in spec.metrics if m != "meteor" or "meteor" in metrics]
        assert list(metrics) == want
        signed = {"mcc", "pearson", "spearman"}  # correlations may be negative; every other metric is a share
        assert all((-100 if m in signed else 0) <= v <= 100 for m, v in metrics.items()), metrics
    assert rec["primary_metric"] == spec.metrics[0]
    # The recorded test metrics are what the saved checkpoint scores on the test split, recomputed here
    # from a fresh model: catches a record that reports another checkpoint, order or split.
    spec, model, tok, items, _, method_cfg = prepare(rec["config"])
    load_trainable(model, SCRATCH_DIR / "checkpoints" / rec["run_id"] / "trainable.safetensors")
    prepare_inference(model, method_cfg)
    again = evaluate(model, items["test"], spec, tok, TrainerConfig(**rec["config"]["trainer"]), torch.device("cpu"))
    assert again == pytest.approx(rec["final"]["test"], abs=1e-6)


def test_aggregator_csv_matches_records(tmp_path):
    for m in ("bitfit", "head_only"):
        for seed in (1, 2):
            run(smoke_cfg(tmp_path, f"method={m}", f"seed={seed}", "experiment=baselines"))
    run(smoke_cfg(tmp_path, "method=bitfit", "method.lr=5e-4", "seed=1", "experiment=baselines"))
    folder = tmp_path / "common" / "baselines"
    out = tmp_path / "out" / "baselines.csv"
    aggregate(folder, out)
    df = pd.read_csv(out)
    assert list(df.columns[: len(BASE_COLUMNS)]) == BASE_COLUMNS
    swept = list(df.columns[len(BASE_COLUMNS):])
    assert swept == ["method.lr"]  # the one config key that varies across these runs
    records = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    assert len(df) == sum(len(m) for r in records for m in r["final"].values())
    for r in records:
        for split, metrics in r["final"].items():
            for metric, value in metrics.items():
                row = df[(df.method == r["method"]) & (df.seed == r["seed"]) & (df.split == split)
                         & (df.metric == metric) & (df["method.lr"] == r["config"]["method"]["lr"])]
                assert len(row) == 1 and row["value"].iloc[0] == pytest.approx(value)
                assert row["trainable_params"].iloc[0] == r["trainable_params"]


def test_options_added_later_keep_old_run_ids_at_their_neutral_value(tmp_path):
    from common.records import NEUTRAL_WHEN_ADDED, run_id

    cfg = smoke_cfg(tmp_path)
    old = {**cfg, "trainer": {k: v for k, v in cfg["trainer"].items()
                              if f"trainer.{k}" not in NEUTRAL_WHEN_ADDED}}  # as recorded before they existed
    assert run_id(old) == run_id(cfg)
    changed = {**cfg, "trainer": {**cfg["trainer"], "label_smoothing": 0.1}}
    assert run_id(changed) != run_id(cfg)


def test_execution_details_stay_out_of_the_run_identity_and_bf16_does_not(tmp_path):
    """device, threads and force_fp32 (fp32 on CUDA: what a CPU run computes) do not change what a run
    computes, so a GPU run with force_fp32 has the CPU run's identity; bf16 autocast does change it."""
    from common.records import run_id

    cfg = smoke_cfg(tmp_path)
    same = {**cfg, "trainer": {**cfg["trainer"], "device": "cuda", "num_threads": 8, "force_fp32": True}}
    assert run_id(same) == run_id(cfg)
    assert run_id({**cfg, "trainer": {**cfg["trainer"], "bf16": not cfg["trainer"]["bf16"]}}) != run_id(cfg)


def test_atomic_target_keeps_the_old_file_whole_when_a_write_fails(tmp_path):
    from common.records import atomic_target

    path = tmp_path / "sub" / "state.bin"
    with atomic_target(path) as tmp:
        tmp.write_bytes(b"first")
    assert path.read_bytes() == b"first"
    with pytest.raises(RuntimeError), atomic_target(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"first" and sorted(p.name for p in path.parent.iterdir()) == ["state.bin"]
