"""Hydra entry point: ``python -m common.train task=rte method=bitfit`` (``-m`` sweeps).

Bad input (unknown names, missing data, impossible lengths) prints one line and exits with status 2
before anything is written.
"""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from .config import register_configs
from .errors import UserError

register_configs()
log = logging.getLogger("common.train")


def config_to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def main_guarded(cfg: DictConfig) -> dict | None:
    from .run import run  # heavy imports after Hydra has parsed the command line

    try:
        return run(config_to_dict(cfg))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    main_guarded(cfg)


if __name__ == "__main__":
    main()
