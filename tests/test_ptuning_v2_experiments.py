"""The P-Tuning v2 experiment driver end to end at smoke scale, and the plots on its CSVs."""
import subprocess
import sys

import pandas as pd
from omegaconf import OmegaConf

from common.paths import REPO_ROOT


def test_driver_writes_the_issue_csvs_and_plots(tmp_path):
    out = tmp_path / "res"
    p = subprocess.run([sys.executable, "-m", "ptuning_v2.experiments", "all", "--smoke", "--out", str(out)],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    d = out / "ptuning_v2"
    main = pd.read_csv(d / "main.csv")
    block = OmegaConf.load(REPO_ROOT / "conf" / "experiment" / "ptv2_main.yaml").sweep
    label = {"prompt_tuning": "pt", "deep_prompt": "pt2"}
    want = {t: {label[m] for m in block.get("task_methods", {}).get(t, block.methods)} for t in main.task.unique()}
    for t, g in main.groupby("task"):  # FT beside the methods the file runs on that task, nothing else
        assert set(g.method) == want[t] | {"ft"}, t
    assert main.selected.any() and "lr" in main
    assert set(main[main.method == "ft"].source) == {"common/calibration"}  # FT: the calibration sweep's runs
    chosen = pd.read_csv(d / "main_lr_choice.csv")
    assert len(chosen) == sum(len(v) for v in want.values())  # PT and PT-2 tuned here, per task they run on
    # the tuning seed is never reported; reported seeds ran only at the chosen lr
    report = main[main.role == "report"]
    assert report.selected.all() and 1 not in set(report.seed) and set(main[main.role == "tune"].seed) == {1}
    # the experiment files define the sweeps (the drivers read them)
    depth_cfg, reparam_cfg = (OmegaConf.load(REPO_ROOT / "conf" / "experiment" / f"ptv2_{e}.yaml").sweep.settings
                              for e in ("depth", "reparam"))
    spans = [tuple(int(x) for x in s["method.layers"].split("-")) for s in depth_cfg]
    depth = pd.read_csv(d / "depth.csv")
    assert {"order", "n_layers", "still_improving"} <= set(depth.columns)
    asc = sorted({b - a + 1 for a, b in spans if a == 1})
    desc = sorted({b - a + 1 for a, b in spans if b == 6})
    assert sorted(depth[depth.order == "ascending"].n_layers.unique()) == asc and len(asc) >= 3
    assert sorted(depth[depth.order == "descending"].n_layers.unique()) == desc and len(desc) >= 3
    reparam = pd.read_csv(d / "reparam.csv")
    lengths = sorted({s["method.prefix_len"] for s in reparam_cfg})
    assert set(reparam.reparam) == {"embedding", "mlp"} and sorted(reparam.prompt_len.unique()) == lengths
    assert 16 in lengths and len(lengths) >= 3
    # one lr per parameterisation, chosen at length 16 and shared by every length
    choice = pd.read_csv(d / "reparam_lr_choice.csv", keep_default_na=False)
    assert len(choice) == 2 and all("method.prefix_len=16" in s for s in choice.setting)
    sel = reparam[(reparam.role == "report") & (reparam.split == "test")]
    assert sel.selected.all() and sel.groupby("reparam")["lr"].nunique().eq(1).all()
    p = subprocess.run([sys.executable, "-m", "ptuning_v2.plots", str(d)], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (d / "depth.png").stat().st_size > 0 and (d / "reparam.png").stat().st_size > 0
    table = (d / "main_table.md").read_text()
    assert "| conll2003 (entity_f1) |" not in table or "90.2" in table  # the paper's number beside ours


def test_unknown_step_is_a_clear_error(tmp_path):
    p = subprocess.run([sys.executable, "-m", "ptuning_v2.experiments", "width", "--smoke", "--out", str(tmp_path)],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "invalid choice: 'width'" in p.stderr


def test_depth_claim_puts_each_difference_under_its_own_k_and_dashes_the_rest():
    import pandas as pd

    from ptuning_v2.plots import claim_evidence

    def run(order, k, v, open_=False):
        return {"task": "stsb", "order": order, "n_layers": k, "seed": 2, "split": "test", "metric": "pearson",
                "value": v, "still_improving": open_}

    depth = pd.DataFrame([run("ascending", 1, 70), run("descending", 1, 60), run("ascending", 3, 80, True),
                          run("descending", 3, 82)])  # k = 2, 4, 5 not run
    text = claim_evidence(None, depth, None)
    assert "| stsb | -10.0 | — | +2.0† | — | — | 1 of 2 |" in text
