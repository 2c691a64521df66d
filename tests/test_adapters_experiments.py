"""The adapter experiment driver end to end at smoke scale (stage 1 -> fusion by task name -> attention; MT-A;
the size trade-off), and the plots on its CSVs."""
import json
import os
import shutil
import subprocess
import sys

import pandas as pd

from common.paths import REPO_ROOT


def test_driver_writes_the_issue_csvs_and_plots(tmp_path):
    out = tmp_path / "res"
    env = {**os.environ, "PEFT_SCRATCH_DIR": str(tmp_path / "scratch")}
    p = subprocess.run([sys.executable, "-m", "adapters.experiments", "all", "--smoke", "--jobs", "1", "--out", str(out)],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    d = out / "adapters"
    base = pd.read_csv(d / "baselines.csv")
    assert {"head_only", "full_ft"} <= set(base.method)
    fusion = pd.read_csv(d / "fusion.csv")
    assert set(fusion.method) == {"adapter_fusion"} and 1 not in set(fusion[fusion.role == "report"].seed)
    att = pd.read_csv(d / "attention.csv")
    # each layer's weights over the fused adapters (the smoke stage 1's two) sum to one
    assert set(att.adapter) == {"mrpc", "sst2"}  # the smoke stage 1: the first target and the first source
    assert att.groupby(["task", "layer"]).weight.sum().sub(1).abs().max() < 1e-4
    mta = pd.read_csv(d / "mta.csv")
    assert set(mta.task) == {"rte", "cb"} and set(mta.method) == {"adapter_mta"}
    # the source adapters and MT-A train at one lr: ST-A's dev-best (mean over the targets), from its grid
    src, st_choice = pd.read_csv(d / "src.csv"), pd.read_csv(d / "adapters_st_lr_choice.csv")
    grid = {float(x) for g in st_choice.grid for x in str(g).split()}
    assert len(set(src.lr)) == 1 and set(src.lr) == set(mta.lr) and src.lr.iloc[0] in grid
    longer = pd.read_csv(d / "longer.csv")  # FT on MRPC at twice the epochs, at the calibration's lr
    cal = base[(base.method == "full_ft") & (base.task == "mrpc")]
    assert set(longer.method) == {"full_ft"} and set(longer.lr) == set(cal[cal.role == "report"].lr)
    size = pd.read_csv(d / "size.csv")
    assert {"adapter", "top_k", "layernorm", "full_ft"} == set(size.method)
    p = subprocess.run([sys.executable, "-m", "adapters.plots", str(d)], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    for f in ("table1.md", "attention.png", "size.png", "claims.md"):
        assert (d / f).stat().st_size > 0
    table = (d / "table1.md").read_text()
    assert "(76.82)" in table and "+5.8" in table  # the paper's RTE Fusion number and gain beside ours
    # which MT-A ran is read from its records (the smoke one keeps the backbone frozen), not assumed
    assert set(mta.train_backbone) == {False} and "backbone frozen" in table and "trained jointly (as" not in table
    # the MT-A plan composes the run ids the mta step ran (at ST-A's shared lr): the finished seed counts as done
    from adapters.mta import plan_frame

    plan = plan_frame(["experiment=adapters_mt", f"records_dir={out / 'records'}", "scale=smoke", "model=tiny-bert",
                       "multitask.tasks=[rte,cb]"], seeds=(2,), results_root=out)
    assert list(plan.status) == ["done"] and plan.lr.iloc[0] == mta.lr.iloc[0]

    # fusion published the adapters it fused beside their records (committed; scratch is not)
    weights = out / "records" / "adapters" / "weights"
    assert len(list(weights.glob("*/trainable.safetensors"))) == 2

    def fusion_on_a_new_machine():
        shutil.rmtree(tmp_path / "scratch" / "checkpoints")
        shutil.rmtree(out / "records" / "adapters" / "adapters_fusion")
        r = subprocess.run([sys.executable, "-m", "adapters.experiments", "fusion", "--smoke", "--jobs", "1", "--out",
                            str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stderr

    stage1 = sorted((out / "records" / "adapters").glob("adapters_s[tr]*/*.json"))
    before = {f.name: json.loads(f.read_text())["final"]["test"] for f in stage1}
    fused_before = {f.name: json.loads(f.read_text())["final"]["test"]
                    for f in (out / "records" / "adapters" / "adapters_fusion").glob("*.json")}
    # the records and published weights are there, the scratch checkpoints are not: copied back, nothing re-run
    assert "re-running" not in fusion_on_a_new_machine()
    fused_after = {f.name: json.loads(f.read_text())["final"]["test"]
                   for f in (out / "records" / "adapters" / "adapters_fusion").glob("*.json")}
    assert fused_after == fused_before  # the same adapters fused: the same fusion runs and scores
    # no published weights either: re-run from their records (same run ids, rewritten in place)
    shutil.rmtree(weights)
    assert "re-running 2 adapter(s)" in fusion_on_a_new_machine()
    after = {f.name: json.loads(f.read_text())["final"]["test"]
             for f in sorted((out / "records" / "adapters").glob("adapters_s[tr]*/*.json"))}
    assert after == before  # the same runs: no new record, the same scores (deterministic on one thread)
    assert len(list(weights.glob("*/trainable.safetensors"))) == 2  # published again
    assert len(list((tmp_path / "scratch" / "checkpoints").glob("*/run.json"))) >= 3  # 2 adapters + fusion's own

    # attention.csv keeps each fusion run's weights by run id: with every checkpoint gone, nothing re-runs
    att = pd.read_csv(d / "attention.csv")
    shutil.rmtree(tmp_path / "scratch" / "checkpoints")
    r = subprocess.run([sys.executable, "-m", "adapters.experiments", "attention", "--smoke", "--jobs", "1", "--out",
                        str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0 and " runs (" not in r.stderr, r.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_csv(d / "attention.csv"), att)
    # called while fusion runs: a target whose fusion run has no record yet is skipped (not run), the others kept
    first, *rest = list(dict.fromkeys(att.task))
    fused = out / "records" / "adapters" / "adapters_fusion"
    (fused / f"{att[att.task == first].run_id.iloc[0]}.json").unlink()
    kept = att[att.task != first].reset_index(drop=True)
    kept.to_csv(d / "attention.csv", index=False)
    code = ("from pathlib import Path; from adapters.experiments import Plan; print('columns:', "
            f"list(Plan(True, Path({str(out)!r}), 1).attention(done_only=True).columns))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode == 0 and "columns: ['task', 'seed', 'run_id'" in r.stdout, r.stderr[-3000:]
    assert set(pd.read_csv(d / "attention.csv").task) == set(rest)  # smoke has one target: rest may be empty
    assert not (fused / f"{att[att.task == first].run_id.iloc[0]}.json").exists()


def test_fusion_scaling_recovers_a_linear_cost_and_flags_a_nonlinear_one():
    import pandas as pd

    from adapters.plots import fusion_scaling

    def bench(ms_of_n):
        return pd.DataFrame([{"method": f"fusion_{n}", "seq_len": 64, "metric": m, "value": v}
                             for n in (2, 4, 8, 11) for m, v in (("train_examples_per_s", 1000.0 / ms_of_n(n)),
                                                                  ("peak_rss_mb", 1.0))]
                            + [{"method": "lora", "seq_len": 64, "metric": "train_examples_per_s", "value": 1.0}])

    text, pts = fusion_scaling(bench(lambda n: 20.0 + 5.0 * n))
    assert list(pts.N) == [2, 4, 8, 11] and "| 64 | 30, 40, 60, 75 | 5.0 | 20 | 1.000 |" in text
    text, _ = fusion_scaling(bench(lambda n: 2.0 ** n))  # exponential: the fit's R² says it is not a line
    assert float(text.strip().split("|")[-2]) < 0.95


def _runs(rows):
    return pd.DataFrame([{"split": "test", "metric": "accuracy", "still_improving": False, "n_train": 250, **r}
                         for r in rows])


def test_fusion_rule_decides_only_on_non_overlapping_seed_ranges():
    from adapters.plots import fusion_rule

    t1 = _runs([{"task": t, "column": c, "seed": s, "value": v}
                for t, st, fu in (("cb", (80, 82, 81), (85, 86, 84)),     # all fusion seeds above: better
                                  ("mrpc", (78, 79, 80), (79.5, 81, 77)))  # overlapping: no verdict
                for c, vals in (("st_a", st), ("fusion_st_a", fu)) for s, v in zip((2, 3, 4), vals)])
    rows = {line.split(" | ")[0].lstrip("| "): line for line in fusion_rule(t1).splitlines()[2:]}
    assert "| fusion better |" in rows["cb"] and "+4.0" in rows["cb"] and "+6.1" in rows["cb"]  # paper beside
    assert "no consistent difference" in rows["mrpc"]
    t1.loc[(t1.task == "mrpc") & (t1.column == "fusion_st_a"), "value"] = [70, 71, 72]
    assert "| ST-A better |" in fusion_rule(t1)
    t1.loc[0, "still_improving"] = True  # a cb run
    cb = next(line for line in fusion_rule(t1).splitlines() if line.startswith("| cb |"))
    assert "no verdict (still improving)" in cb and "+4.0†" in cb


def test_tradeoff_rules_compare_within_the_seed_spread():
    from adapters.plots import tradeoff_rule

    s = pd.DataFrame([
        {"task": "mrpc", "method": "full_ft", "config": "FT", "trainable_params": 22_000_000, "median": 80.0},
        {"task": "mrpc", "method": "adapter", "config": "adapter m=1", "trainable_params": 20_000, "median": 75.0},
        {"task": "mrpc", "method": "adapter", "config": "adapter m=64", "trainable_params": 600_000, "median": 79.0},
        {"task": "mrpc", "method": "top_k", "config": "top-1", "trainable_params": 1_800_000, "median": 76.0},
        {"task": "mrpc", "method": "top_k", "config": "top-6", "trainable_params": 21_000_000, "median": 80.5}])
    s = s.assign(still_improving=False, minus_ft=s["median"] - 80.0)
    lines = tradeoff_rule(s, {"mrpc": 1.5}).splitlines()[2:]
    assert "adapter m=64 (2.73 %) vs FT" in lines[0] and lines[0].endswith("| holds |")  # 79 is within 1.5 of 80
    assert "adapter m=64 (600,000) vs top-1" in lines[1] and lines[1].endswith("| adapter better |")  # +3 > 1.5
    assert lines[2].endswith("| within the seed spread (1.5) |")  # m=64 vs top-6: -1.5, not beyond the spread
    assert tradeoff_rule(s, {"mrpc": 0.5}).splitlines()[2].endswith("| fails |")
