"""The LoRA experiment driver end to end at smoke scale, the plots on its CSVs, and the E2E path."""
import subprocess
import sys

import pandas as pd
from omegaconf import OmegaConf

from common.paths import REPO_ROOT
from common.run import run
from common.sweep import compose


def test_driver_writes_the_issue_csvs_and_plots(tmp_path):
    out = tmp_path / "res"
    env = {"PEFT_SCRATCH_DIR": str(tmp_path / "scratch")}
    p = subprocess.run([sys.executable, "-m", "lora.experiments", "all", "--smoke", "--jobs", "1", "--out", str(out)],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
                       env={**__import__("os").environ, **env})
    assert p.returncode == 0, p.stderr[-3000:]
    d = out / "lora"
    glue = pd.read_csv(d / "glue.csv")
    assert set(glue.method) == {"ft", "bitfit", "lora"} and glue.selected.any()
    assert set(glue[glue.method == "ft"].source) == {"common/calibration"}  # FT: the calibration sweep's runs
    assert len(pd.read_csv(d / "glue_lr_choice.csv")) == glue.task.nunique() * 2  # BitFit and LoRA tuned here
    report = glue[glue.role == "report"]
    assert report.selected.all() and 1 not in set(report.seed)  # the tuning seed is never reported
    abl = pd.read_csv(d / "ablation.csv")
    assert {"weights", "r", "in_budget", "in_rank_sweep", "still_improving"} <= set(abl.columns)
    block = OmegaConf.load(REPO_ROOT / "conf" / "experiment" / "lora_ablation.yaml").sweep
    assert {(",".join(s["method.weights"]), s["method.r"]) for s in block.settings} == set(zip(abl.weights, abl.r))
    assert {"Wq", "Wq,Wv", "Wq,Wk,Wv,Wo"} <= set(abl.weights) and {1, 4, 8, 64} <= set(abl.r)
    # one lr for every setting: the GLUE table's dev choice for LoRA ({Wq, Wv} r 8) on the same task
    ch = pd.read_csv(d / "glue_lr_choice.csv", keep_default_na=False)
    lr = ch[(ch.task == "stsb") & (ch.method == "lora")].lr
    assert len(lr) == 1 and (abl[abl.role == "report"]["lr"] == lr.iloc[0]).all()
    sub = pd.read_csv(d / "subspace.csv")
    assert list(sub.columns[:4]) == ["matrix", "factor", "layer", "comparison"]
    assert sub.phi.between(-1e-9, 1 + 1e-9).all()
    assert set(sub.comparison) == {"r8_vs_r64", "two_seeds_r64"}
    amp = pd.read_csv(d / "amplification.csv")
    assert set(amp.r) == {4, 64} and set(amp.directions) == {"delta_w", "w", "random"}
    p = subprocess.run([sys.executable, "-m", "lora.plots", str(d)], cwd=REPO_ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    for png in ("ablation.png", "subspace_rank.png", "subspace_seed.png"):
        assert (d / png).stat().st_size > 0
    table = (d / "glue_table.md").read_text()
    assert "(91.5)" in table and "| LoRA |" in table  # the paper's LoRA STS-B number beside ours
    assert "| Adapter (Pfeiffer) |" in table and "| Adapter (Houlsby) |" in table and "(89.7)" in table
    claims = (d / "claims.md").read_text()
    assert "| paper (GPT-3, WikiSQL) | 70.4 | 73.7 | 73.7 | +3.3 |" in claims  # Table 5 beside our budget row
    assert "| paper (GPT-3, WikiSQL) | {Wq,Wv} | 73.4 |" in claims  # Table 6 beside our rank sweep


def test_analysis_before_ablation_is_a_clear_error(tmp_path):
    p = subprocess.run([sys.executable, "-m", "lora.experiments", "analysis", "--smoke", "--out", str(tmp_path)],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "run `python -m lora.experiments ablation` first" in p.stderr


def test_e2e_path_on_tiny_gpt2(tmp_path):
    """GPT-2 + LoRA, causal LM on the E2E format, beam search (beam 10, length penalty 0.8, no repeated
    4-grams) and the E2E metrics: the paper's Table 3 pipeline on a tiny random model."""
    cfg = compose(["experiment=lora_e2e", "scale=smoke", "model=tiny-gpt2", f"records_dir={tmp_path}",
                   "data.max_dev=8", "data.max_test=8"])
    assert cfg["trainer"]["num_beams"] == 10 and cfg["trainer"]["label_smoothing"] == 0.1
    rec = run(cfg)
    assert rec["method"] == "lora" and rec["task"] == "e2e_nlg"
    assert {"bleu", "nist", "rougeL_e2e", "cider"} <= set(rec["final"]["test"])
    assert rec["trainable_params"] == 2 * 2 * 4 * 2 * 32  # layers x {Wq, Wv} x r x (d_in + d_out), no head


def test_readme_e2e_command_composes_the_papers_setup():
    import shlex

    line = next(l for l in (REPO_ROOT / "README.md").read_text().splitlines()
                if "common.train experiment=lora_e2e scale=paper" in l)
    overrides = shlex.split(line)[3:]  # after `.venv/bin/python -m common.train`
    cfg = compose(overrides)
    t, m = cfg["trainer"], cfg["method"]
    assert cfg["model"]["name"] == "gpt2-medium" and cfg["task"]["name"] == "e2e_nlg" and cfg["data"]["dir"] == "hub"
    assert (t["epochs"], t["batch_size"], t["num_beams"], t["length_penalty"], t["no_repeat_ngram_size"],
            t["label_smoothing"]) == (5, 8, 10, 0.8, 4, 0.1)
    assert (m["name"], m["r"], m["alpha"], m["lr"], m["dropout"], m["weights"]) == ("lora", 4, 32, 2e-4, 0.1,
                                                                                   ["Wq", "Wv"])
    assert cfg["data"]["max_train"] is None  # the full data


def test_rank_and_budget_claims_dash_the_settings_not_run():
    import pandas as pd

    from lora.plots import claim_evidence

    def run(w, r, v, open_=False):
        return {"task": "stsb", "weights": w, "r": r, "seed": 2, "split": "test", "metric": "pearson", "value": v,
                "still_improving": open_}

    abl = pd.DataFrame([run("Wq,Wv", 1, 80), run("Wq,Wv", 8, 82, True), run("Wq,Wv", 64, 83), run("Wq", 8, 77),
                        run("Wq,Wv", 4, 81)])  # {Wq,Wk,Wv,Wo} r 2 and r 2 / 4 / 64 of {Wq} not run
    text = claim_evidence(None, abl, None)
    assert "| stsb | {Wq,Wv} | 80.0 | — | 81.0 | 82.0† | 83.0 | -3.0 |" in text
    assert "| stsb | {Wq} | — | — | — | 77.0 | — | — |" in text
    assert "| stsb | 77.0 | 81.0 | — | +4.0 |" in text
    assert "nan" not in text
