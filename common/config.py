"""Structured config schemas: an unknown key or a wrong type fails when Hydra composes the config.

Scientific hyperparameters live in ``method`` (its own schema per method, registered from
:data:`common.methods.METHODS`); nuisance ones (learning rate, epochs, batch) in ``method.lr`` and
``trainer``; budgets (subsampling, lengths) in ``data`` and are set by the ``scale`` group.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    name: str = "minilm"
    hub_id: Optional[str] = None  # override the registry's hub id (e.g. a local checkpoint folder)
    dropout: float = 0.1  # dropout before the task head


@dataclass
class TaskConfig:
    name: str = MISSING
    few_shot_seed: int = 13  # CrossFit split seed: 13, 21, 42, 87 or 100


@dataclass
class DataConfig:
    dir: Optional[str] = None  # mirror root; null = ../shared/data, else $PEFT_DATA_DIR, else "hub"
    max_train: Optional[int] = None  # deterministic subsample sizes (null = all)
    max_eval: Optional[int] = None  # applies to dev and test each
    max_seq_len: int = 128
    target_len: int = 64  # generation targets, in tokens
    bucket: bool = True  # length bucketing of training batches
    subsample_seed: int = 0  # fixed across training seeds: every seed sees the same subset
    cache: bool = True  # cache tokenised splits under outputs/cache


@dataclass
class TrainerConfig:
    epochs: int = 3
    max_steps: Optional[int] = None  # stop early after this many optimiser steps
    batch_size: int = 32
    eval_batch_size: int = 64
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06  # LoRA / RoBERTa's GLUE setting
    max_grad_norm: float = 1.0
    eval_every_steps: Optional[int] = None  # null = evaluate once per epoch
    eval_test: bool = True  # evaluate the best checkpoint on the test split at the end
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = True  # autocast to bfloat16 on CUDA (ignored on CPU)
    num_threads: Optional[int] = None
    progress: bool = True
    log_every: int = 50
    num_beams: int = 1  # generation tasks
    length_penalty: float = 1.0  # beam search: score / length**length_penalty (LoRA's E2E: 0.8)
    no_repeat_ngram_size: int = 0  # beam search: forbid repeated n-grams (LoRA's E2E: 4); 0 = off
    max_new_tokens: int = 64
    label_smoothing: float = 0.0  # cross-entropy losses (LoRA's E2E: 0.1)
    save_checkpoint: bool = False  # write the best trainable state to the run's scratch folder


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    method: Any = MISSING  # one of the method schemas below
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 42
    scale: str = "small"  # set by the scale group; recorded
    paper: str = "common"  # records go to <records_dir>/<paper>/<experiment>/
    experiment: str = "default"
    records_dir: Optional[str] = None  # null = results/records
    force: bool = False  # re-run even if a completed record exists


def register_configs() -> None:
    """Register the run schema and one schema per method (``/schema/method/<name>``)."""
    from .methods import METHODS, load_plugins

    load_plugins()
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    for name, spec in METHODS.items():
        cs.store(group="schema/method", name=name, node=spec.config_cls)
