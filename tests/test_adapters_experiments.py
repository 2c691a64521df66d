"""The adapter experiment driver end to end at smoke scale (stage 1 -> fusion by task name -> attention; MT-A;
the size trade-off), and the plots on its CSVs."""
import os
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
    size = pd.read_csv(d / "size.csv")
    assert {"adapter", "top_k", "layernorm", "full_ft"} == set(size.method)
    p = subprocess.run([sys.executable, "-m", "adapters.plots", str(d)], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    for f in ("table1.md", "attention.png", "size.png", "claims.md"):
        assert (d / f).stat().st_size > 0
    table = (d / "table1.md").read_text()
    assert "(76.82)" in table and "+5.8" in table  # the paper's RTE Fusion number and gain beside ours


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
