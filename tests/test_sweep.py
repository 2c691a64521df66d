"""The sweep engine (lr grid with honest edges, tuning seed never reported), experiment files that say what
their drivers run, and the cost plan."""
import math

import pandas as pd
import pytest
import yaml

from common.errors import UserError
from common.paths import REPO_ROOT
from common.records import record_path, write_record
from common.sweep import Sweep, compose, extend, pick, setting_label

EXPERIMENTS = sorted(p.stem for p in (REPO_ROOT / "conf" / "experiment").glob("*.yaml"))


def test_pick_and_extend():
    assert pick({1e-4: 50.0, 2e-4: 60.0, 4e-4: 55.0}) == (2e-4, None)
    assert pick({1e-4: 70.0, 2e-4: 60.0}) == (1e-4, "low")
    assert pick({1e-4: 60.0, 2e-4: 60.0, 4e-4: 61.0}) == (4e-4, "high")
    assert pick({1e-4: 60.0, 2e-4: 60.0}) == (1e-4, "low")  # ties go to the smaller lr
    assert extend([1e-3, 2e-3, 4e-3], "high") == pytest.approx(8e-3)
    assert extend([2.5e-5, 5e-5, 1e-4], "low") == pytest.approx(1.25e-5)


def fake_records(sw: Sweep, dev_of_lr, seeds=None):
    """Write completed records for the sweep's tuning runs (dev score = dev_of_lr(lr)), as run() would."""
    def fake_run_all(cfgs, jobs):
        for cfg in cfgs:
            path = record_path(cfg)
            if path.is_file():
                continue
            lr = cfg["method"]["lr"]
            score = dev_of_lr(lr) + (0.0 if cfg["seed"] == sw.spec["tune_seed"] else 1.0)
            write_record(path, {"run_id": path.stem, "status": "completed", "task": cfg["task"]["name"],
                                "method": cfg["method"]["name"], "seed": cfg["seed"], "primary_metric": "pearson",
                                "config": cfg, "git": {"commit": "x"}, "trainable_params": 1, "total_params": 2,
                                "model": "minilm", "scale": "small", "still_improving": False, "wall_time_s": 1.0,
                                "final": {"dev": {"pearson": score}, "test": {"pearson": score}}})
    return fake_run_all


def test_grid_is_extended_past_the_edge_dev_picks_and_the_tuning_seed_is_not_reported(tmp_path, monkeypatch):
    import common.sweep as S

    sw = Sweep("calibration", records_dir=tmp_path / "rec", out_dir=tmp_path / "res", only_tasks=["stsb"])
    sw.writes = True  # write the CSVs (a subset normally never does)
    # dev improves with lr up to 8e-4: the grid 2.5e-5 .. 2e-4 must grow upwards twice (4e-4, 8e-4) and stop
    # once the best point is inside it (1.6e-3 scores lower)
    peak = 8e-4
    monkeypatch.setattr(S, "run_all", fake_records(sw, lambda lr: -abs(math.log(lr / peak))))
    df = sw.run()
    choice = pd.read_csv(tmp_path / "res" / "common" / "calibration_lr_choice.csv", keep_default_na=False)
    row = choice.iloc[0]
    assert row.lr == pytest.approx(peak) and row.extended == 3 and row.at_edge == ""
    assert row.grid.split() == ["2.5e-05", "5e-05", "0.0001", "0.0002", "0.0004", "0.0008", "0.0016"]
    tune, report = df[df.role == "tune"], df[df.role == "report"]
    assert set(tune.seed) == {1} and set(report.seed) == {2, 3, 4}
    assert report.selected.all() and report.lr.tolist() == pytest.approx([peak] * len(report))
    assert tune.selected.sum() == 2  # the chosen lr's dev and test rows; tuning runs are never "report"


def test_extension_stops_at_max_extend_and_says_the_choice_is_still_at_an_edge(tmp_path, monkeypatch):
    import common.sweep as S

    sw = Sweep("calibration", records_dir=tmp_path / "rec", out_dir=tmp_path / "res", only_tasks=["rte"])
    monkeypatch.setattr(S, "run_all", fake_records(sw, lambda lr: -lr))  # smaller is always better
    choice = sw.tune()
    row = choice.iloc[0]
    assert row.extended == sw.spec["max_extend"] and row.at_edge == "low"
    assert row.lr == pytest.approx(2.5e-5 / 2 ** sw.spec["max_extend"], rel=0.01)


def test_a_fixed_lr_method_has_no_tuning_runs_and_reports_at_that_lr(tmp_path, monkeypatch):
    import common.sweep as S

    sw = Sweep("adapters_src", records_dir=tmp_path / "rec", out_dir=tmp_path / "res", only_tasks=["pool/sick"],
               extra=("sweep.fixed_lr.adapter=0.0005",))
    assert sw.tune_cells() == []
    monkeypatch.setattr(S, "run_all", fake_records(sw, lambda lr: 1.0))
    df = sw.run()
    assert set(df.role) == {"report"} and df.lr.tolist() == pytest.approx([5e-4] * len(df))
    assert [r["cfg"]["method"]["lr"] for r in sw.planned()] == [5e-4]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_file_and_driver_agree(experiment):
    """One definition per sweep: a file with a `sweep:` block has no Hydra sweeper params (the driver runs
    exactly the block), and the driver's runs are the block's tasks x methods x settings x seeds (+ the tuning
    grid at the tuning seed). A file without one is a single-run preset or a plain Hydra multirun."""
    raw = yaml.safe_load((REPO_ROOT / "conf" / "experiment" / f"{experiment}.yaml").read_text())
    # the composed block: a file may inherit another experiment's (its `sweep:` included) and hold only its deltas
    block = compose([f"experiment={experiment}"])["sweep"]
    block = block if block.get("tasks") else None
    params = raw.get("hydra", {}).get("sweeper", {}).get("params")
    if not block:
        with pytest.raises(UserError, match="single-run preset"):
            Sweep(experiment)
        return
    assert params is None, f"{experiment}: sweep defined twice (sweep: and hydra.sweeper.params)"
    try:
        sw = Sweep(experiment)
    except UserError as e:  # a sweep that reuses another's lr choice before that exists
        assert "not found" in str(e)
        return
    runs = sw.planned()
    report = [r for r in runs if r["phase"] == "report"]
    methods = block.get("methods") or [sw.base["method"]["name"]]
    settings = block.get("settings") or [{}]
    per_task = block.get("task_methods", {})
    want = {(t, m, setting_label(st), s) for t in block["tasks"] for m in per_task.get(t, methods)
            for st in settings for s in block.get("seeds", [2, 3, 4])}
    got = {(r["cfg"]["task"]["name"], r["cfg"]["method"]["name"], setting_label(r["cell"].setting), r["cfg"]["seed"])
           for r in report}
    assert got == want
    for r in report:  # each setting's values reach the run's config
        flat = {**{f"{k}.{kk}": vv for k, v in r["cfg"].items() if isinstance(v, dict) for kk, vv in v.items()}}
        for k, v in r["cell"].setting.items():
            assert flat[k] == v, (k, flat[k], v)
    tuned = [m for m in methods if m not in block.get("lr_from", {}) and m not in block.get("fixed_lr", {})]
    for m in tuned:
        assert len(block["lr_grid"][m]) >= 4  # at least 4 log-spaced points per (task, method)
        assert all(r["cfg"]["seed"] == block.get("tune_seed", 1) for r in runs
                   if r["phase"] == "tune" and r["cfg"]["method"]["name"] == m)
    assert block.get("tune_seed", 1) not in block.get("seeds", [2, 3, 4])


def test_task_methods_limits_a_tasks_cells_and_rejects_names_outside_the_sweep():
    sw = Sweep("ptv2_main", extra=("++sweep.task_methods={stsb: [deep_prompt]}",))
    cells = {(c.task, c.method) for c in sw.cells}
    assert ("stsb", "prompt_tuning") not in cells and ("stsb", "deep_prompt") in cells
    assert {("conll2003", "prompt_tuning"), ("conll2003", "deep_prompt")} <= cells
    with pytest.raises(UserError, match="task_methods"):
        Sweep("ptv2_main", extra=("++sweep.task_methods={rte: [deep_prompt]}",))
    with pytest.raises(UserError, match="task_methods"):
        Sweep("ptv2_main", extra=("++sweep.task_methods={stsb: [lora]}",))


def test_unknown_or_missing_experiment_is_a_clear_error(tmp_path, capsys):
    from common.plan import main as plan_main
    from common.sweep import main as sweep_main

    assert plan_main(["task=rte"]) == 2
    with pytest.raises(Exception):
        compose(["experiment=nope"])
    for cli in (plan_main, sweep_main):  # one error line naming the valid experiments, no traceback, exit 2
        args = ["experiment=nope"] + (["--out", str(tmp_path)] if cli is sweep_main else [])
        assert cli(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "ptv2_main" in err and "Config search path" not in err
    assert sweep_main(["experiment=ptv2_main", "trainer.epoch=3", "--out", str(tmp_path)]) == 2
    assert "trainer.epoch" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_a_sweep_gathered_by_a_paper_step_of_its_name_runs_through_that_step(tmp_path, monkeypatch):
    """`common.sweep experiment=ptv2_main` and `ptuning_v2.experiments main` both name results/ptuning_v2/main.csv;
    the step's version has FT rows the bare sweep lacks, so the bare command runs the step (one writer)."""
    import common.sweep as S
    import ladder_side.experiments as lst
    import ptuning_v2.experiments as ptv2

    assert S.owning_step("ptv2_main") == (ptv2.Plan, "main")
    assert S.owning_step("lst_cache") == (lst.Plan, "cache")
    assert S.owning_step("lst_ft_long") is None  # LST's `longer` step gathers it, but writes longer.csv
    assert S.owning_step("adapters_st") is None  # its step writes st.csv, the sweep adapters_st.csv
    assert S.owning_step("calibration") is None  # common has no steps

    calls = []
    monkeypatch.setattr(ptv2.Plan, "main", lambda self: calls.append((self.smoke, self.results_root, self.jobs)))
    monkeypatch.setattr(S.Sweep, "run", lambda self: pytest.fail("the bare sweep ran beside its step"))
    assert S.main(["experiment=ptv2_main", "--smoke", "--out", str(tmp_path), "--jobs", "1"]) == 0
    assert calls == [(True, tmp_path, 1)]


def test_a_sweep_with_overrides_records_its_runs_but_writes_no_csv(tmp_path, monkeypatch):
    import common.sweep as S

    over = ("sweep.tasks=[rte]",)
    sw = Sweep("calibration", records_dir=tmp_path / "records", out_dir=tmp_path, smoke=True, extra=over)
    ran = []
    fake = fake_records(sw, lambda lr: -abs(math.log(lr / 1e-4)))
    monkeypatch.setattr(S, "run_all", lambda cfgs, jobs: (ran.extend(cfgs), fake(cfgs, jobs)))
    assert S.main(["experiment=calibration", *over, "--out", str(tmp_path), "--smoke"]) == 0
    assert ran and all(record_path(c).is_file() for c in ran)
    assert not list(tmp_path.glob("common/*.csv"))  # neither calibration.csv nor its lr choice
    sw.run()  # the class's default writes (the driver's own sweeps)
    assert {p.name for p in tmp_path.glob("common/*.csv")} == {"calibration.csv", "calibration_lr_choice.csv"}


def test_plan_predicts_from_lengths_and_throughput_and_marks_done_runs(tmp_path, monkeypatch, capsys):
    from common import plan as P

    base = ["experiment=calibration", f"records_dir={tmp_path}", "sweep.tasks=[rte,cola]"]
    df3, _ = P.plan_frame(base + ["trainer.epochs=3"])
    df6, _ = P.plan_frame(base + ["trainer.epochs=6"])
    assert len(df3) == 2 * (4 + 3)  # 2 tasks x (4 grid points + 3 reported seeds)
    assert (df3.predicted_s > 0).all() and df3.throughput_measured.all()
    m3 = df3.groupby("task").predicted_s.sum()
    m6 = df6.groupby("task").predicted_s.sum()
    assert ((m6 > 1.5 * m3) & (m6 < 2.1 * m3)).all()  # training time scales with epochs (+ evals, start-up)
    assert (df6.train_examples == 2 * df3.train_examples).all()
    # RTE's pairs are longer than CoLA's sentences: more seconds per training example
    per = df3.groupby("task").apply(lambda d: (d.predicted_s / d.train_examples).mean(), include_groups=False)
    assert per["rte"] > per["cola"]
    assert set(df3.status) == {"todo"}
    # a completed record turns its row into "done" with the measured time
    sw = Sweep("calibration", extra=(f"records_dir={tmp_path}", "sweep.tasks=[rte,cola]"))
    cfg = sw.planned()[0]["cfg"]
    write_record(record_path(cfg), {"status": "completed", "wall_time_s": 123.0, "primary_metric": "accuracy",
                                    "final": {"dev": {"accuracy": 50.0}}})
    df, title = P.plan_frame(base)
    assert (df.status == "done").sum() == 1 and df[df.status == "done"].measured_s.iloc[0] == 123.0
    assert "measured CPU-h" in P.summary(df, title, 2)
    # a run done on a lent GPU is done, but its wall time is no CPU time: reported apart
    write_record(record_path(sw.planned()[1]["cfg"]), {"status": "completed", "wall_time_s": 30.0, "device": "cuda:0",
                                                       "primary_metric": "accuracy", "final": {"dev": {"accuracy": 50.0}}})
    df, title = P.plan_frame(base)
    done = df[df.status == "done"]
    assert len(done) == 2 and done.measured_s.sum() == 123.0 and done.gpu_s.sum() == 30.0
    assert "1 of the runs done ran on a lent GPU" in P.summary(df, title, 2)


def test_throughput_update_replaces_only_the_measured_methods_rows(tmp_path):
    import subprocess
    import sys

    import pandas as pd

    from common.paths import REPO_ROOT

    out = tmp_path / "t.csv"
    old = pd.DataFrame([{"bench": "train_step", "method": m, "seq_len": 16, "threads": 1, "batch_size": 4,
                         "metric": "examples_per_s", "value": -1.0, "commit": "old"} for m in ("full_ft", "head_only")])
    old.to_csv(out, index=False)
    p = subprocess.run([sys.executable, "-m", "common.throughput", "--methods", "head_only", "--lengths", "16",
                        "--threads", "1", "--batch-size", "4", "--steps", "1", "--warmup", "0", "--out", str(out),
                        "--update"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    df = pd.read_csv(out)
    assert len(df) == 2
    kept, new = df[df.method == "full_ft"].iloc[0], df[df.method == "head_only"].iloc[0]
    assert kept.value == -1.0 and kept.commit == "old"
    assert new.value > 0 and new.commit != "old" and new.loadavg_1m >= 0


def test_plan_overview_sums_every_committed_plan(tmp_path):
    import pandas as pd

    from common.plan import overview

    (tmp_path / "lora").mkdir()
    (tmp_path / "ipt").mkdir()
    # one run done on CPU, one on a lent GPU (no CPU time), one to do
    pd.DataFrame({"predicted_s": [3600.0, 7200.0, 3600.0], "status": ["done", "todo", "done"],
                  "measured_s": [5400.0, None, None]}) \
        .to_csv(tmp_path / "lora" / "glue_plan.csv", index=False)
    # a driver's plan (IPT): invocation a done in full, b in part (its measured time not yet comparable)
    pd.DataFrame({"phase": ["a", "b"], "tasks": [4, 3], "predicted_cpu_h": [2.5, 1.0], "done_tasks": [4, 1],
                  "measured_cpu_h": [1.5, 0.2]}).to_csv(tmp_path / "ipt" / "plan.csv", index=False)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in overview(tmp_path).splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["lora/glue"] == ["3", "2", "1", "4.0", "1.0", "1.5"]
    assert rows["ipt/plan"] == ["2", "1", "0", "3.5", "2.5", "1.5"]
    assert rows["total"][3] == "7.5"


def test_setting_lr_grid_gives_a_matching_tuning_cell_its_own_grid():
    sw = Sweep("ptv2_reparam")
    grids = {c.setting["method.reparam"]: sw.grid(c) for c in sw.tune_cells()}
    assert grids[False] == [2.5e-3, 5e-3, 1e-2, 2e-2]
    assert grids[True] == [2.5e-4, 5e-4, 1e-3, 2e-3]
    with pytest.raises(UserError, match="setting_lr_grid"):
        Sweep("ptv2_reparam", extra=("++sweep.setting_lr_grid=[{match: {method.reparam: true}, grid: [1e-3, 2e-3]}]",))


def test_plan_prices_cached_lst_epochs_after_the_first_at_the_benchmarked_side_only_speed(tmp_path):
    import pandas as pd

    from common import plan as P
    from common.sweep import compose

    bench = tmp_path / "ladder_side.csv"
    pd.DataFrame([{"method": m, "metric": "epoch2_s", "value": v} for m, v in
                  (("lst", 30.0), ("lst", 30.0), ("lst_cached", 7.0), ("lst_cached", 8.0))]).to_csv(bench, index=False)
    assert P.cached_epoch_factor(bench) == 0.25 and P.cached_epoch_factor(tmp_path / "none.csv") == 1.0
    f, tp = P.cached_epoch_factor(), P.Throughput()
    assert f < 1  # the committed benchmark measured a saving

    def cost(cache: str, epochs: int) -> dict:
        return P.predict(compose(["task=rte", "method=lst", f"method.cache_backbone={cache}", f"trainer.epochs={epochs}",
                                  f"records_dir={tmp_path}"]), tp, 1)

    assert cost("true", 1)["predicted_s"] == cost("false", 1)["predicted_s"]  # the first epoch fills the cache
    plain, cached = cost("false", 4), cost("true", 4)
    assert plain["train_examples"] == cached["train_examples"]  # the same steps, cheaper ones
    saved = plain["predicted_s"] - cached["predicted_s"]
    assert 0 < saved < (1 - f) * 3 / 4 * plain["predicted_s"]  # at most 3 of 4 epochs' training, at (1 - f)


def test_ft_row_reports_a_calibration_cell_at_its_longest_complete_re_run(tmp_path, monkeypatch):
    import common.sweep as S
    from common.plots import ft_longer_note

    class Plan(S.Steps):
        paper = "lora"

    plan = Plan(False, tmp_path, 1)
    cal = plan.sweep("calibration", only_tasks=["stsb"])
    monkeypatch.setattr(S, "run_all", fake_records(cal, lambda lr: -abs(math.log(lr / 1e-4))))
    cal.writes = True
    cal.run()  # writes the lr choice the longer sweeps borrow (lr_from: common/calibration)
    ours = pd.DataFrame({"task": ["stsb"], "method": ["lora"]})

    def sources():
        df = plan.with_ft(ours, "x")
        return dict(df[(df.method == "full_ft")].groupby("role").source.unique().map(sorted))

    assert sources() == {"tune": ["common/calibration"], "report": ["common/calibration"]}

    def rerun(exp, seeds):  # the longer sweep's reported runs, at the calibration's lr, for some seeds only
        sw = plan.sweep(exp, only_tasks=["stsb"])
        fake_records(sw, lambda lr: 0.0)([cfg for _, cfg in sw.report_cfgs(sw.chosen(sw.tune(run=False)))
                                          if cfg["seed"] in seeds], 1)

    rerun("lst_ft_long", {2, 3})  # a cell re-run on 2 of its 3 seeds keeps the calibration's runs
    assert sources()["report"] == ["common/calibration"]
    rerun("lst_ft_long", {4})
    assert sources() == {"tune": ["common/calibration"], "report": ["ladder_side/ft_long"]}
    rerun("lst_ft_longer", {2, 3, 4})  # the longest complete re-run wins; the lr-tuning runs stay
    df = plan.with_ft(ours, "x")
    ft = df[df.method == "full_ft"]
    assert set(ft[ft.role == "report"].source) == {"ladder_side/ft_longer"} and set(ft[ft.role == "report"].seed) == {2, 3, 4}
    assert set(ft[ft.role == "tune"].source) == {"common/calibration"}
    assert "on stsb: the runs of ladder_side/ft_longer" in ft_longer_note(df)
    assert ft_longer_note(df[df.source == "common/calibration"]) == ""
    assert ft_longer_note(df.assign(source="adapters/adapters_ft_cb")) == ""  # FT's own sweep is not a re-run
    assert all(compose([f"experiment={e}"])["experiment"].endswith(("_long", "_longer")) for e in S.FT_LONGER)


def test_adapters_ft_on_mrpc_is_the_longer_re_run_once_all_its_seeds_are_done(tmp_path, monkeypatch):
    import common.sweep as S
    from adapters.experiments import Plan

    plan = Plan(False, tmp_path, 1)
    cal = plan.sweep("calibration", only_tasks=["mrpc"])
    monkeypatch.setattr(S, "run_all", fake_records(cal, lambda lr: -abs(math.log(lr / 1e-4))))
    cal.writes = True
    cal.run()
    long = plan.sweep("longer")
    cell = next(c for c in cal.cells if c.task == "mrpc")
    assert long.base["trainer"]["epochs"] == 2 * cal.cfg(cell, 2, 1e-4)["trainer"]["epochs"] and long.seeds == [2, 3, 4]
    assert set(plan.ft(["mrpc"]).source) == {"common/calibration"}  # STS-B's longer sweeps have no MRPC cell

    def rerun(seeds):
        fake_records(long, lambda lr: 0.0)([cfg for _, cfg in long.report_cfgs(long.chosen(long.tune(run=False)))
                                            if cfg["seed"] in seeds], 1)

    rerun({2, 3})
    assert set(plan.ft(["mrpc"]).source) == {"common/calibration"}  # half re-run: the calibration's runs stay
    rerun({4})
    ft = plan.ft(["mrpc"])
    assert set(ft[ft.role == "report"].source) == {"adapters/adapters_ft_long"}
    assert set(ft[ft.role == "report"].seed) == {2, 3, 4}
    assert set(ft[ft.role == "tune"].source) == {"common/calibration"}


def test_size_reports_a_top_k_cell_at_its_longer_re_run_and_keeps_the_other_cells(tmp_path, monkeypatch):
    import common.sweep as S
    from adapters.experiments import Plan
    from adapters.plots import longer_note, size_frame

    plan = Plan(False, tmp_path, 1)
    topk = plan.sweep("adapters_topk")
    monkeypatch.setattr(S, "run_all", fake_records(topk, lambda lr: -abs(math.log(lr / 1e-4))))
    df = topk.run().assign(source="adapters/adapters_topk")
    longer = Plan.SIZE_LONGER["adapters_topk"]
    assert set(plan.longest(df, longer).source) == {"adapters/adapters_topk"}  # not re-run yet: unchanged
    long = plan.sweep(longer[0])
    lrs = long.chosen(long.tune(run=False))
    (cell, cfg), = long.report_cfgs(lrs)
    short = next(c for _, c in topk.report_cfgs(topk.chosen(topk.tune(run=False)))
                 if c["method"]["k"] == cfg["method"]["k"] and c["seed"] == cfg["seed"])
    assert cfg["trainer"]["epochs"] == 2 * short["trainer"]["epochs"] and cfg["method"]["lr"] == short["method"]["lr"]
    monkeypatch.setattr(S, "run_all", fake_records(long, lambda lr: 0.0))
    long.run()
    rep = plan.longest(df, longer)
    rep = rep[rep.role == "report"]
    k3 = S.setting_label(cell.setting)
    assert len(rep) == len(df[df.role == "report"])  # one cell replaced, none added or lost
    assert {s: src for s, src in zip(rep.setting, rep.source)} == {
        s: ("adapters/adapters_topk_long" if s == k3 else "adapters/adapters_topk") for s in rep.setting}
    assert "adapters/adapters_topk_long" in longer_note(rep) and longer_note(df) == ""
    # the re-run's single setting has no column of its own: the label comes from its setting
    assert set(size_frame(plan.longest(df, longer).assign(metric="accuracy")).config) == {f"top-{k}" for k in (1, 2, 3, 6)}
