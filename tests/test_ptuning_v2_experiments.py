"""The P-Tuning v2 experiment driver end to end at smoke scale, and the plots on its CSVs."""
import subprocess
import sys

import pandas as pd

from common.paths import REPO_ROOT


def test_driver_writes_the_issue_csvs_and_plots(tmp_path):
    out = tmp_path / "res"
    p = subprocess.run([sys.executable, "-m", "ptuning_v2.experiments", "all", "--smoke", "--out", str(out)],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    d = out / "ptuning_v2"
    main = pd.read_csv(d / "main.csv")
    assert set(main.method) == {"ft", "pt", "pt2"} and main.selected.any() and "method.lr" in main
    chosen = pd.read_csv(d / "lr_choice.csv")
    assert len(chosen) == main.task.nunique() * 3
    # seeds 2 and 3 ran only at the chosen learning rate
    later = main[main.seed > 1]
    assert later.selected.all() and set(later.seed) == {2, 3}
    depth = pd.read_csv(d / "depth.csv")
    assert {"order", "n_layers"} <= set(depth.columns)
    for order in ("ascending", "descending"):
        assert sorted(depth[depth.order == order].n_layers.unique()) == [1, 2, 3, 4, 5, 6]
    reparam = pd.read_csv(d / "reparam.csv")
    assert set(reparam.reparam) == {"embedding", "mlp"} and sorted(reparam.prompt_len.unique()) == [1, 4, 8, 16, 32, 64]
    # the MLP has its own dev-chosen lr; every (length, reparam, seed) point ran at the chosen one
    choice = pd.read_csv(d / "reparam_lr_choice.csv")
    assert set(choice.reparam) == {"embedding", "mlp"}
    sel = reparam[reparam.selected & (reparam.split == "test") & (reparam.metric == "entity_f1")]
    assert len(sel) == 6 * 2 * 3 and sel.groupby("reparam")["method.lr"].nunique().eq(1).all()
    p = subprocess.run([sys.executable, "-m", "ptuning_v2.plots", str(d)], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (d / "depth.png").stat().st_size > 0 and (d / "reparam.png").stat().st_size > 0
    table = (d / "main_table.md").read_text()
    assert "78.3" in table and "| rte (accuracy) |" in table  # the paper's PT-2 RTE number beside ours


def test_depth_before_main_is_a_clear_error(tmp_path):
    p = subprocess.run([sys.executable, "-m", "ptuning_v2.experiments", "depth", "--smoke", "--out", str(tmp_path)],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "run `python -m ptuning_v2.experiments main` first" in p.stderr
