"""Structured config schemas: an unknown key or a wrong type fails when Hydra composes the config.

Scientific hyperparameters live in ``method`` (its own schema per method, registered from
:data:`common.methods.METHODS`); nuisance ones (learning rate, epochs, batch) in ``method.lr`` and
``trainer``; budgets (subsampling, lengths) in ``data`` and are set by the ``scale`` group.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    name: str = "minilm"
    hub_id: Optional[str] = None  # override the registry's hub id (e.g. a local checkpoint folder)
    dropout: float = 0.1  # dropout before the task head
    pooling: Optional[str] = None  # cls | mean | last | eos; null = by architecture (each model file sets its own)


@dataclass
class TaskConfig:
    name: str = MISSING
    few_shot_seed: int = 13  # CrossFit split seed: 13, 21, 42, 87 or 100


@dataclass
class DataConfig:
    dir: Optional[str] = None  # mirror root; null = ../shared/data, else $PEFT_DATA_DIR, else "hub"
    max_train: Optional[int] = None  # deterministic subsample sizes (null = all)
    max_dev: Optional[int] = None  # model-selection split (evaluated many times per run)
    max_test: Optional[int] = None  # reported split; null = all of it
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
    eval_every_steps: Optional[int] = None  # null = evaluate evals_per_epoch times per epoch
    # evaluate this many times over the whole run, evenly spaced (null = per epoch); for tiny training sets,
    # where one epoch is one or a few steps and per-epoch evaluation would let patience stop after a few steps
    evals_per_run: Optional[int] = None
    evals_per_epoch: int = 1  # dev evaluations per epoch (evenly spaced; the last at the epoch's end)
    patience: Optional[int] = None  # stop after this many dev evaluations without a new best (null = never)
    head_lr: Optional[float] = None  # the task head's learning rate; null = the method's lr (method.lr)
    eval_test: bool = True  # evaluate the best checkpoint on the test split at the end
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = True  # autocast to bfloat16 on CUDA (ignored on CPU)
    # fp32 on CUDA whatever bf16 says: the run then computes what a CPU run of the same config computes, so it
    # is an execution detail like the device (out of the run identity); `small` sweeps on a lent GPU use it.
    force_fp32: bool = False
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
class SweepConfig:
    """What an experiment file's driver runs (``python -m common.sweep experiment=<name>``; the papers'
    drivers call the same code). Not part of a run's identity: one run never reads it.

    Cells are task x method x setting; a setting is a dict of overrides (the scientific value, e.g.
    ``{method.layers: 1-3}``). ``method.lr`` (nuisance) is chosen on dev with ``tune_seed`` from
    ``lr_grid[method]``, extended past an edge when dev picks one; ``seeds`` are the reported seeds.
    """

    tasks: List[str] = field(default_factory=list)
    methods: List[str] = field(default_factory=list)  # empty = the experiment's own method
    task_methods: Dict[str, List[str]] = field(default_factory=dict)  # task -> the methods run on it (default: all)
    settings: List[Dict[str, Any]] = field(default_factory=list)  # empty = one setting, no overrides
    seeds: List[int] = field(default_factory=lambda: [2, 3, 4])  # reported
    tune_seed: int = 1  # chooses the lr; never reported
    lr_grid: Dict[str, List[float]] = field(default_factory=dict)  # per method, >= 4 log-spaced points
    # [{match: {key: value, ...}, grid: [...]}]: the first item whose match the tuning cell's setting contains
    # replaces lr_grid[method] for it (a scientific value that moves the lr range, e.g. P-Tuning v2's MLP reparam)
    setting_lr_grid: List[Dict[str, Any]] = field(default_factory=list)
    tune_at: Optional[Dict[str, Any]] = None  # null: tune at every setting; else these keys' values are where the lr is tuned
    lr_from: Dict[str, str] = field(default_factory=dict)  # method -> "<paper>/<experiment>": reuse its chosen lr
    fixed_lr: Dict[str, float] = field(default_factory=dict)  # method -> lr used untuned (the file says why)
    method_overrides: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # method -> overrides for its runs
    max_extend: int = 3  # grid extensions past an edge, per cell
    smoke_tasks: List[str] = field(default_factory=list)  # --smoke runs these tasks (default: the first)


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
    sweep: SweepConfig = field(default_factory=SweepConfig)  # the experiment's sweep (drivers read it)
    # multi-task drivers' settings (adapters.mta: tasks, steps, eval_every, patience, train_backbone); empty
    # for single-task runs, so it stays out of their identity
    multitask: Dict[str, Any] = field(default_factory=dict)


def register_configs() -> None:
    """Register the run schema and one schema per method (``/schema/method/<name>``)."""
    from .budgets import register_resolver
    from .methods import METHODS, load_plugins

    load_plugins()
    register_resolver()
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    for name, spec in METHODS.items():
        cs.store(group="schema/method", name=name, node=spec.config_cls)
