"""Where things live: repository root, the data mirror, scratch output and committed results."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "results"
RECORDS_DIR = RESULTS_DIR / "records"
# Everything that must never be committed (Hydra run dirs, checkpoints, caches, the demo) goes here.
SCRATCH_DIR = Path(os.environ.get("PEFT_SCRATCH_DIR", REPO_ROOT / "outputs"))
DATA_ENV_VAR = "PEFT_DATA_DIR"
DEFAULT_MIRROR = REPO_ROOT.parent / "shared" / "data"
HUB = "hub"


def resolve_data_dir(configured: str | None) -> Path | str:
    """The local mirror to read, or the string ``"hub"``.

    Order (``data.dir`` unset): ``../shared/data`` beside the repository when it exists, else
    ``$PEFT_DATA_DIR``, else the hub. An explicit ``data.dir`` must exist (or be ``hub``).
    """
    if configured is not None and str(configured) != "":
        if str(configured) == HUB:
            return HUB
        path = Path(configured).expanduser()
        if not path.is_absolute():
            path = (Path.cwd() / path).resolve()
        if not path.is_dir():
            raise UserError(
                f"data directory not found: {path} (from data.dir={configured!r}). Point data.dir at the "
                f"local mirror (e.g. data.dir={DEFAULT_MIRROR}), set ${DATA_ENV_VAR}, or use data.dir=hub "
                f"to download from the Hugging Face hub."
            )
        return path
    if DEFAULT_MIRROR.is_dir():
        return DEFAULT_MIRROR
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        if not Path(env).is_dir():
            raise UserError(
                f"data directory not found: {env} (from ${DATA_ENV_VAR}); looked first at {DEFAULT_MIRROR}. "
                f"Fix ${DATA_ENV_VAR} or pass data.dir=/path/to/mirror."
            )
        return Path(env)
    return HUB
