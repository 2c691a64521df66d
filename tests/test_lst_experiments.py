"""The LST experiment driver at smoke scale, the plots on its CSVs, and the memory measurement's ordering."""
import os
import subprocess
import sys

import pandas as pd
import pytest

from common.paths import REPO_ROOT


def test_driver_writes_the_issue_csvs_and_plots(tmp_path):
    out = tmp_path / "res"
    env = {**os.environ, "PEFT_SCRATCH_DIR": str(tmp_path / "scratch")}
    for step in ("glue", "cache"):  # the ablation is the same engine; its plan is checked below without running
        p = subprocess.run([sys.executable, "-m", "ladder_side.experiments", step, "--smoke", "--jobs", "1", "--out",
                            str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200, env=env)
        assert p.returncode == 0, p.stderr[-3000:]
    d = out / "ladder_side"
    glue = pd.read_csv(d / "glue.csv")
    assert set(glue.method) == {"lst"} and 1 not in set(glue[glue.role == "report"].seed)
    cache = pd.read_csv(d / "cache.csv")
    lst = cache[cache.method == "lst"]
    assert set(lst["method.cache_backbone"]) == {True, False} and (lst.epoch1_s > 0).all()
    assert set(cache[cache.method == "full_ft"].source) == {"common/calibration"}  # FT's epoch beside them
    cached = lst["method.cache_backbone"].astype(bool)
    assert (lst[cached].backbone_cache_mb > 0).all() and lst[~cached].backbone_cache_mb.isna().all()
    p = subprocess.run([sys.executable, "-m", "ladder_side.plots", str(d)], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    for f in ("glue_table.md", "cache_table.md"):
        assert (d / f).stat().st_size > 0
    table = (d / "cache_table.md").read_text()
    assert "| FT |" in table and "| LST |" in table and "| LST, cached backbone |" in table
    assert "Cached − uncached test score, per seed" in table


def test_lst_needs_less_training_memory_than_full_fine_tuning():
    from ladder_side.memory import measure

    ft, lst = measure("full_ft", "rte", 32, 4), measure("lst", "rte", 32, 4)
    assert lst["grad_bytes"] < ft["grad_bytes"] / 20 and lst["activation_bytes"] < ft["activation_bytes"]
    assert lst["total_bytes"] < ft["total_bytes"]


@pytest.mark.parametrize("experiment,task,cached", [("lst_ablation", "stsb", False), ("lst_ablation_sst2", "sst2", True)])
def test_the_ablation_tunes_one_lr_at_the_default_for_all_nine_settings(tmp_path, experiment, task, cached):
    from common.sweep import Sweep

    sw = Sweep(experiment, records_dir=tmp_path, out_dir=tmp_path)
    assert len(sw.cells) == 9 and len(sw.tune_cells()) == 1
    plan = sw.planned()
    assert sum(r["phase"] == "tune" for r in plan) == 4 and sum(r["phase"] == "report" for r in plan) == 27
    assert {r["cfg"]["task"]["name"] for r in plan} == {task}
    from ladder_side.memory import ablation_tasks

    assert task in ablation_tasks()  # its training memory is measured too
    assert {r["cfg"]["method"]["cache_backbone"] for r in plan} == {cached}
    first = Sweep("lst_ablation", records_dir=tmp_path, out_dir=tmp_path)
    assert [c.setting for c in sw.cells] == [c.setting for c in first.cells]  # the same ablation on both tasks


def test_benchmark_writes_both_targets_with_the_side_dropout_variant(tmp_path):
    out = tmp_path / "lst.csv"
    p = subprocess.run([sys.executable, "-m", "ladder_side.bench", "--seq-len", "16", "--batch-size", "2",
                        "--batches", "1", "--repeats", "1", "--out", str(out)], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    df = pd.read_csv(out)
    ratios = df[df.method == "ratio"].set_index("metric")["value"]
    assert set(ratios.index) == {"memory_ratio_lst_over_ft", "memory_ratio_lst_attn_dropout_over_ft",
                                 "epoch_time_ratio_lst_cached_over_ft"}
    assert 0 < ratios["memory_ratio_lst_over_ft"] <= ratios["memory_ratio_lst_attn_dropout_over_ft"] < 1
    assert "loadavg_1m" in df
    md = out.with_suffix(".md").read_text()
    assert "| memory_ratio_lst_over_ft |" in md and "| lst_cached |" in md


def _summary(rows):
    return pd.DataFrame([{"task": t, "method": m, "median": v, "min": v - 0.2, "max": v + 0.2, "n": 3,
                          "still_improving": o} for t, m, v, o in rows])


def _memory(mib: dict):
    return pd.DataFrame([{"task": "stsb", "method": m, "total_bytes": v * 2**20} for m, v in mib.items()])


def test_lst_claim_compares_memory_within_a_task_and_withholds_open_cells():
    from ladder_side.plots import glue_table, memory_claim

    s = _summary([("stsb", "full_ft", 86.0, False), ("stsb", "lst", 85.0, False), ("stsb", "lora", 85.5, False)])
    mem = _memory({"full_ft": 1000, "lst": 200, "lora": 600, "prompt_tuning": 700})
    row = memory_claim(s, mem).splitlines()[2].split(" | ")
    assert row[1:4] == ["80", "30 to 40 (2 methods)", "True"] and row[-1].rstrip(" |") == "True"
    # another method cheaper than LST fails (i); a 3-point cost fails (ii)
    row = memory_claim(_summary([("stsb", "full_ft", 88.0, False), ("stsb", "lst", 85.0, False)]),
                       _memory({"full_ft": 1000, "lst": 200, "lora": 100})).splitlines()[2].split(" | ")
    assert row[3] == "False" and row[-1].rstrip(" |") == "False"
    # a still-improving cell gives no verdict
    row = memory_claim(_summary([("stsb", "full_ft", 86.0, True), ("stsb", "lst", 85.0, False)]),
                       mem).splitlines()[2]
    assert "no verdict" in row and "-1.0†" in row
    # a method measured but never scored keeps its memory row; its score cells are empty
    pt = next(line for line in glue_table(s, mem).splitlines() if line.startswith("| Prompt tuning"))
    assert "| — |" in pt and "700 (70 %)" in pt


def test_epoch_seconds_reads_each_epochs_last_evaluation():
    from common.aggregate import epoch_seconds

    hist = [{"epoch": 1, "elapsed_s": 5.0}, {"epoch": 1, "elapsed_s": 10.0}, {"epoch": 2, "elapsed_s": 13.0},
            {"epoch": 3, "elapsed_s": 17.0}, {"epoch": 4, "elapsed_s": 27.0}]
    assert epoch_seconds({"history": hist}) == (10.0, 4.0)  # later epochs 3, 4, 10 s: median 4
    assert epoch_seconds({"history": hist[:2]}) == (10.0, None) and epoch_seconds({}) == (None, None)


def test_ablation_rules_pair_each_setting_with_the_default_by_seed():
    from ladder_side.plots import ablation_claims

    vals = {"method.gate=learned": [85.0, 85.0, 85.0], "method.init=random": [84.0, 84.5, 83.0],
            "method.gate=fixed": [85.5, 84.0, 86.0], "method.side_layers=2,4,6": [84.5, 84.6, 84.2],
            "method.side_layers=3,6": [83.0, 83.5, 83.9], "method.gate=sum": [86.0, 86.0, 86.0]}
    rows = [{"task": "stsb", "method": "lst", "seed": seed, "split": "test", "metric": "pearson", "value": v,
             "still_improving": setting == "method.gate=sum", "role": "report", "selected": True, "setting": setting}
            for setting, vs in vals.items() for seed, v in zip((2, 3, 4), vs)]
    mem = pd.DataFrame([{"method": "lst", "total_bytes": 200 * 2**20},
                        {"method": "method.side_layers=2,4,6", "total_bytes": 150 * 2**20}])
    lines = {line.split(" | ")[0].lstrip("| "): line for line in ablation_claims(pd.DataFrame(rows), mem).splitlines()
             if line.startswith("| method.")}
    assert lines["method.init=random"].endswith("| paper's choice better on every seed |")
    assert "-1.00, -0.50, -2.00" in lines["method.init=random"]  # setting − default, in seed order
    assert lines["method.gate=fixed"].endswith("| no consistent difference |")
    assert lines["method.side_layers=2,4,6"].endswith("| holds (cost ≤ 1.0) |") and "150 (75 %)" in lines["method.side_layers=2,4,6"]
    assert lines["method.side_layers=3,6"].endswith("| fails (cost > 1.0) |")  # median cost 1.5
    assert lines["method.gate=sum"].endswith("| no verdict (still improving) |")
    assert lines["method.reduction_factor=4"].endswith("| not run yet |")


def test_ablation_verdicts_are_per_task_and_side_by_side_across_tasks():
    from ladder_side.plots import ablation_claims

    vals = {"stsb": {"method.gate=learned": [85.0, 85.0, 85.0], "method.init=random": [84.0, 84.5, 83.0],
                     "method.gate=fixed": [85.5, 84.0, 86.0]},
            "sst2": {"method.gate=learned": [90.0, 90.0, 90.0], "method.init=random": [91.0, 90.5, 92.0],
                     "method.gate=fixed": [89.0, 91.0, 90.0]}}
    metric = {"stsb": "pearson", "sst2": "accuracy"}
    rows = [{"task": task, "method": "lst", "seed": seed, "split": "test", "metric": metric[task], "value": v,
             "still_improving": False, "role": "report", "selected": True, "setting": setting}
            for task, per in vals.items() for setting, vs in per.items() for seed, v in zip((2, 3, 4), vs)]
    mem = pd.DataFrame([{"task": "stsb", "method": "lst", "total_bytes": 200 * 2**20},
                        {"task": "sst2", "method": "lst", "total_bytes": 400 * 2**20}])
    text = ablation_claims(pd.DataFrame(rows), mem)
    stsb, sst2 = text.split("Task: sst2")[0], text.split("Task: sst2")[1].split("Across tasks")[0]
    assert "| 200 (100 %) |" in stsb and "| 400 (100 %) |" in sst2  # each task's own memory
    assert "-1.00, -0.50, -2.00" in stsb and "+1.00, +0.50, +2.00" in sst2  # paired within the task only
    across = {line.split(" | ")[0].lstrip("| "): line for line in text.split("Across tasks")[1].splitlines()
              if line.startswith("| method.")}
    assert across["method.init=random"].endswith("| differs by task |")
    assert across["method.gate=fixed"].endswith("| no consistent difference | no consistent difference | no consistent difference |")
    assert across["method.gate=sum"].endswith("| not run yet |")


def test_a_cell_run_longer_replaces_the_shorter_runs_and_keeps_its_own_convergence_mark():
    from ladder_side.plots import ablation_claims, with_longer

    def rows(setting, vals, rising=False, **extra):
        return [{"task": "stsb", "method": "lst", "seed": s, "split": "test", "metric": "pearson", "value": v,
                 "still_improving": rising, "role": "report", "selected": True, "setting": setting, **extra}
                for s, v in zip((2, 3, 4), vals)]

    abl = pd.DataFrame(rows("method.gate=learned", [85.0] * 3) + rows("method.reduction_factor=4", [84.0] * 3, True)
                       + rows("method.gate=fixed", [84.0] * 3))
    longer = pd.DataFrame(rows("method.reduction_factor=4", [85.5, 86.0, 85.2], replaces="ablation", epochs=12)
                          + [{**r, "task": "stsb", "method": "full_ft", "setting": None}
                             for r in rows("", [87.0] * 3, replaces="glue", epochs=6)])
    out, note = with_longer(abl, longer, "ablation")
    assert len(out) == 9 and sorted(out[out.setting == "method.reduction_factor=4"].value) == [85.2, 85.5, 86.0]
    assert (out[out.setting == "method.gate=fixed"].value == 84.0).all()  # other cells untouched
    assert "LST method.reduction_factor=4 on stsb at 12 epochs" in note and "FT" not in note
    r4 = next(line for line in ablation_claims(out).splitlines() if line.startswith("| method.reduction_factor=4"))
    assert "+0.50, +1.00, +0.20" in r4 and r4.endswith("| descriptive |")  # the longer runs, no longer open
    # a longer run that is itself still improving keeps its cell open
    out, _ = with_longer(abl, longer.assign(still_improving=True), "ablation")
    r4 = next(line for line in ablation_claims(out).splitlines() if line.startswith("| method.reduction_factor=4"))
    assert r4.endswith("| no verdict (still improving) |")
    assert with_longer(abl, None, "ablation") == (abl, "") and with_longer(abl, longer, "cache")[1] == ""
    # a cell run longer twice keeps its longest runs and says the shorter ones were still improving too
    twice = pd.concat([longer, longer[longer.replaces == "glue"].assign(epochs=12, value=88.0)], ignore_index=True)
    glue = pd.DataFrame(rows("", [86.0] * 3, True)).assign(method="full_ft")
    out, note = with_longer(glue, twice, "glue")
    assert list(out.value) == [88.0] * 3 and "FT on stsb at 12 epochs (at 6 still improving too)" in note


@pytest.mark.parametrize("experiment,shorter,source,cells", [
    ("lst_ft_long", "calibration", "common/calibration", {("stsb", "full_ft", "")}),
    ("lst_ft_longer", "lst_ft_long", "common/calibration", {("stsb", "full_ft", "")}),
    ("lst_ablation_long", "lst_ablation", "ladder_side/ablation", {("stsb", "lst", "method.reduction_factor=4")}),
    ("lst_ablation_sst2_long", "lst_ablation_sst2", "ladder_side/ablation_sst2",
     {("sst2", "lst", "method.init=random"), ("sst2", "lst", "method.reduction_factor=16")})])
def test_the_longer_runs_double_the_epochs_at_the_shorter_sweeps_lr(tmp_path, experiment, shorter, source, cells):
    from common.sweep import Sweep, setting_label
    from ladder_side.experiments import Plan

    assert Plan.LONGER[experiment] in ("glue", "ablation")
    sw = Sweep(experiment, records_dir=tmp_path, out_dir=tmp_path)
    assert {(c.task, c.method, setting_label(c.setting)) for c in sw.cells} == cells and sw.seeds == [2, 3, 4]
    short = Sweep(shorter)
    cell = next(c for c in short.cells if c.task == sw.cells[0].task and c.method == sw.cells[0].method)
    assert sw.base["trainer"]["epochs"] == 2 * short.cfg(cell, 2, 1e-3)["trainer"]["epochs"]
    with pytest.raises(Exception, match=f"{source}_lr_choice.csv not found"):
        sw.borrowed_choice()  # never tuned here: the shorter sweep's dev choice, or a clear error
    (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{"task": t, "method": m, "setting": "", "lr": 3e-4, "dev": 1.0, "grid": "", "extended": 0,
                   "at_edge": ""} for t, m, _ in cells]).to_csv(tmp_path / f"{source}_lr_choice.csv", index=False)
    assert set(sw.borrowed_choice().lr) == {3e-4}


def test_the_driver_runs_only_steps_that_have_a_method():
    from common import sweep

    calls = []

    class Two(sweep.Steps):
        paper = "x"
        experiments = {"a": "exp_a", "b_second_task": "exp_b", "c": "exp_c"}  # b: an experiment step a runs

        def a(self):
            calls.append("a")

        def c(self):
            calls.append("c")

    assert Two.steps() == ["a", "c"]
    assert sweep.driver_main(Two, ["all", "--jobs", "1"], "test") == 0 and calls == ["a", "c"]
    with pytest.raises(SystemExit):
        sweep.driver_main(Two, ["b_second_task"], "test")
    from ladder_side.experiments import Plan

    assert "ablation_sst2" not in Plan.steps() and Plan.steps()[-1] == "longer"
