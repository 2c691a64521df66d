"""The command line: bad input -> one clear line, non-zero exit, nothing written; sweeps with joblib."""
import json
import os
import subprocess
import sys

import pytest

from common.paths import REPO_ROOT

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def train(*args, tmp_path, timeout=300, multirun=False):
    cmd = [sys.executable, "-m", "common.train", *(["-m"] if multirun else []), "scale=smoke", f"records_dir={tmp_path / 'records'}",
           f"hydra.run.dir={tmp_path / 'hydra'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *args]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def broken_mirror(tmp_path):
    d = tmp_path / "mirror" / "glue" / "rte"
    d.mkdir(parents=True)
    good = json.dumps({"sentence1": "a", "sentence2": "b", "label": 0, "idx": 0})
    (d / "train.jsonl").write_text(good + "\n" + good + "\n" + '{"sentence1": "a", "label": \n')
    (d / "validation.jsonl").write_text(good + "\n")
    return tmp_path / "mirror"


CASES = [
    (["task=nope"], ["Could not find 'task/nope'", "rte", "sst2"]),
    (["method=nope"], ["Could not find 'method/nope'", "bitfit"]),
    (["model=nope"], ["Could not find 'model/nope'", "minilm"]),
    (["task=crossfit", "task.name=crossfit/nope"], ["unknown task 'crossfit/nope'", "crossfit/ag_news"]),
    (["model=tiny-bert", "data.dir=/no/such/dir"], ["data directory not found: /no/such/dir", "data.dir="]),
    (["model=roberta-base"], ["'FacebookAI/roberta-base'", "model=minilm"]),
    (["model=tiny-bert", "method=prompt_tuning", "method.prompt_len=250"], ["250 prompt positions", "256"]),
    (["model=tiny-bert", "method=top_k", "method.k=7"], ["k=7 is out of range", "1..2"]),
    (["model=tiny-bert", "trainer.epochs=many"], ["trainer.epochs"]),
    (["model=tiny-bert", "method.rank=4"], ["rank"]),
    (["model=tiny-bert", "task=e2e_nlg"], ["seq2seq or causal"]),  # an encoder cannot generate
]


@pytest.mark.parametrize("args,needles", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_fails_cleanly(tmp_path, args, needles):
    p = train(*args, tmp_path=tmp_path)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    for n in needles:
        assert n in out, out
    assert "Traceback" not in out
    assert not (tmp_path / "records").exists()


def test_malformed_data_line_names_file_and_line(tmp_path):
    p = train("model=tiny-bert", f"data.dir={broken_mirror(tmp_path)}", tmp_path=tmp_path)
    assert p.returncode == 2 and "train.jsonl line 3" in p.stderr, p.stderr
    assert not (tmp_path / "records").exists()


def test_joblib_multirun_with_minilm(tmp_path):
    """The issue's acceptance command, on the real embedded model."""
    p = train("task=rte", "method=full_ft,bitfit", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
              tmp_path=tmp_path, timeout=600, multirun=True)
    assert p.returncode == 0, p.stdout + p.stderr
    recs = [json.loads(f.read_text()) for f in (tmp_path / "records" / "common" / "default").glob("*.json")]
    assert sorted(r["method"] for r in recs) == ["bitfit", "full_ft"]
    for r in recs:
        assert r["model"] == "minilm" and r["total_params"] > 22_000_000 and "accuracy" in r["final"]["test"]
    bitfit = next(r for r in recs if r["method"] == "bitfit")
    assert bitfit["trainable_params"] < 0.01 * bitfit["total_params"]
