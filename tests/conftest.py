"""Shared fixtures. Tests never touch the network or committed results: the hub is forced offline and
scratch output (token cache, checkpoints) goes to a temporary folder."""
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# one scratch folder per test process: xdist workers inherit the controller's environment, and two workers
# writing the same checkpoint folder (same config -> same run id) would race
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker or "PEFT_SCRATCH_DIR" not in os.environ:
    os.environ["PEFT_SCRATCH_DIR"] = tempfile.mkdtemp(prefix=f"peft-tests-{_worker or 'main'}-")
if _worker:  # `make test` runs one worker per core: one thread each (also for the subprocesses tests start)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

import pytest  # noqa: E402

from common.paths import DEFAULT_MIRROR  # noqa: E402

TINY = ["tiny-bert", "tiny-roberta", "tiny-bart", "tiny-t5", "tiny-gpt2"]


@pytest.fixture(scope="session")
def mirror():
    if not DEFAULT_MIRROR.is_dir():
        pytest.skip(f"local data mirror not found at {DEFAULT_MIRROR}")
    return DEFAULT_MIRROR


@pytest.fixture(scope="session")
def tokenizer():
    from common.models import load_tokenizer

    return load_tokenizer("tiny-bert")
