"""Several tasks, one trainable set: interleaved task batches, per-stage trainable sets, frozen parts.

The single-task loop is :func:`common.trainer.fit`; this one trains whatever the caller names in
``trainable`` on a list of :class:`TaskData`, with the caller's ``loss_fn(task, batch)`` and
``evaluate_fn(task, items) -> metrics``. Every batch holds one task's examples (tasks differ in their
options, prompts or heads); consecutive batches mix the tasks (see :func:`interleaved_batches`).
Model selection: the mean of the tasks' primary dev metrics. Used by IPT (prompt tuning per task, MSF
over the training tasks, IST per task) and by AdapterFusion (MT-A, fusion).

    stage = StageConfig(lr=1e-3, steps=500, batch_size=8, eval_every=25)
    out = fit_multitask(model, {"prompt": prompt}, tasks, loss_fn, evaluate_fn, stage, seed=2)
"""
from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from .errors import UserError
from .records import atomic_target
from .trainer import optimizer_step

log = logging.getLogger(__name__)


@dataclass
class StageConfig:
    """Budget and optimiser of one training stage (nuisance values; ``lr`` is tuned on dev)."""

    lr: float = 1e-3
    steps: int = 500  # optimiser steps (few-shot sets are tiny: steps, not epochs, are the budget)
    batch_size: int = 8
    eval_every: int = 25  # dev evaluation every this many steps (and after the last)
    patience: Optional[int] = None  # stop after this many dev evaluations without a new best (null = never)
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0  # prompts and intrinsic vectors are not decayed towards zero
    max_grad_norm: float = 1.0
    eval_batch_size: int = 64
    # epochs per task per round of interleaved batches (null = one each: shares of steps proportional to size)
    task_epochs: Optional[dict] = None

    @classmethod
    def of(cls, section: dict) -> "StageConfig":
        """The budget part of a stage's config section (its own extras, e.g. MSF's alpha, are left out)."""
        return cls(**{k: v for k, v in section.items() if k in cls.__dataclass_fields__})


@dataclass
class TaskData:
    """One task's tokenised splits (``test`` may be empty) and whatever its scorer caches (``extra``)."""

    name: str
    primary_metric: str
    train: list[dict]
    dev: list[dict]
    test: list[dict] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def interleaved_batches(sizes: dict[str, int], batch_size: int, seed: int,
                        epochs: Optional[dict[str, int]] = None) -> Iterator[tuple[str, list[int]]]:
    """Endless (task, example indices) batches. Each round shuffles every task's examples into batches
    of one task (``epochs[task]`` times; default once), then shuffles all tasks' batches together: each
    example once per round and epoch, tasks mixed step to step, each task's share of steps proportional to
    its size (times its epochs: with each task's single-task epochs, one round is every task's own budget)."""
    rng = random.Random(seed)
    while True:
        batches = []
        for name, n in sizes.items():
            for _ in range((epochs or {}).get(name, 1)):
                idx = list(range(n))
                rng.shuffle(idx)
                batches += [(name, idx[s:s + batch_size]) for s in range(0, n, batch_size)]
        rng.shuffle(batches)
        yield from batches


def mean_primary(scores: dict[str, dict[str, float]], tasks: list[TaskData]) -> float:
    return sum(scores[t.name][t.primary_metric] for t in tasks) / len(tasks)


def fit_multitask(model: nn.Module, trainable: dict[str, nn.Parameter], tasks: list[TaskData],
                  loss_fn: Callable[[TaskData, list[dict]], torch.Tensor],
                  evaluate_fn: Callable[[TaskData, list[dict]], dict[str, float]],
                  cfg: StageConfig, seed: int, resume: Optional[Path] = None,
                  lrs: Optional[dict[str, float]] = None) -> dict:
    """Train ``trainable`` (and nothing else) for ``cfg.steps``; keep the best mean-dev checkpoint.

    Returns ``{"history", "best", "steps", "still_improving", "stopped_early", "resumed_at_step",
    "resumed_elapsed_s"}`` (the last two 0 unless it resumed);
    ``best["dev"]`` holds each task's dev metrics at the chosen step, and the chosen values are loaded back
    into ``trainable``. With ``resume`` (a file path), the whole training state is written there after every
    dev evaluation, and a run that finds the file continues from it exactly as if it had never stopped
    (same batches, dropout masks and optimiser state); the caller deletes the file once its record is written.
    ``lrs`` gives some of ``trainable`` (by name) their own lr; the rest train at ``cfg.lr``.
    """
    if not tasks:
        raise UserError("no tasks to train on")
    params = list(trainable.values())
    others = [n for n, p in model.named_parameters() if p.requires_grad and all(p is not q for q in params)]
    if others:
        raise ValueError(f"parameters outside the stage's trainable set require grad: {others[:5]}")
    own = {n for n in (lrs or {}) if n in trainable}  # parameters with their own lr (MT-A's backbone)
    rest = [p for n, p in trainable.items() if n not in own]
    groups = [{"params": [p for p in rest if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in rest if p.ndim < 2], "weight_decay": 0.0}]
    for lr in sorted({lrs[n] for n in own}):
        ps = [p for n, p in trainable.items() if n in own and lrs[n] == lr]  # trainable's order: resume maps by index
        groups += [{"params": [p for p in ps if p.ndim >= 2], "weight_decay": cfg.weight_decay, "lr": lr},
                   {"params": [p for p in ps if p.ndim < 2], "weight_decay": 0.0, "lr": lr}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    total, warmup = cfg.steps, math.ceil(cfg.warmup_ratio * cfg.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    by_name = {t.name: t for t in tasks}
    stream = interleaved_batches({t.name: len(t.train) for t in tasks}, cfg.batch_size, seed, cfg.task_epochs)
    best = {"score": -math.inf, "step": 0, "dev": {}}
    best_state = {n: p.detach().clone() for n, p in trainable.items()}
    history, running, t0 = [], [], time.time()
    step, resumed_at, resumed_s = 0, 0, 0.0
    if resume is not None and resume.is_file():
        state = torch.load(resume, weights_only=False)  # our own file, written below
        if set(state["trainable"]) != set(trainable) or state["total"] != total or state["seed"] != seed:
            raise UserError(f"{resume} belongs to another run (its steps / seed / trainable set differ); delete it to start over")
        with torch.no_grad():
            for n, p in trainable.items():
                p.copy_(state["trainable"][n])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        best, best_state, history = state["best"], state["best_state"], state["history"]
        step = resumed_at = state["step"]
        for _ in range(step):  # the batch stream is a pure function of the seed: replay it to where it stopped
            next(stream)
        torch.set_rng_state(state["rng"])  # dropout masks continue as in an uninterrupted run
        resumed_s = history[-1]["elapsed_s"] if history else 0.0
        t0 -= resumed_s
        log.info("resumed from %s at step %d", resume, step)

    def save_state() -> None:
        state = {"step": step, "total": total, "seed": seed, "trainable": {n: p.detach() for n, p in trainable.items()},
                 "opt": opt.state_dict(), "sched": sched.state_dict(), "best": best, "best_state": best_state,
                 "history": history, "rng": torch.get_rng_state()}
        with atomic_target(resume) as tmp:  # a kill mid-write leaves the previous checkpoint whole
            torch.save(state, tmp)

    def run_eval(step: int) -> None:
        nonlocal best_state, running
        model.eval()
        with torch.no_grad():
            dev = {t.name: evaluate_fn(t, t.dev) for t in tasks}
        score = mean_primary(dev, tasks)
        history.append({"step": step, "train_loss": sum(running) / max(1, len(running)), "dev_mean": score,
                        "elapsed_s": round(time.time() - t0, 2)})
        log.info("step %d: train loss %.4f, mean dev %.2f", step, history[-1]["train_loss"], score)
        running = []
        if score > best["score"]:
            best.update(score=score, step=step, dev=dev)
            best_state = {n: p.detach().clone() for n, p in trainable.items()}

    def stalled() -> bool:
        i_best = next(i for i, h in enumerate(history) if h["step"] == best["step"])
        return bool(cfg.patience) and len(history) - 1 - i_best >= cfg.patience

    while step < total:
        model.train()
        name, idx = next(stream)
        task = by_name[name]
        loss = loss_fn(task, [task.train[i] for i in idx])
        optimizer_step(loss, params, opt, sched, cfg.max_grad_norm)
        step += 1
        running.append(loss.item())
        if step % cfg.eval_every == 0 or step == total:
            run_eval(step)
            if resume is not None:
                save_state()
            if stalled():
                break
    with torch.no_grad():
        for n, p in trainable.items():
            p.copy_(best_state[n])
    still_improving = len(history) > 1 and best["step"] == history[-1]["step"]
    return {"history": history, "best": best, "steps": step, "still_improving": still_improving,
            "stopped_early": step < total, "resumed_at_step": resumed_at,
            "resumed_elapsed_s": resumed_s}


# ----------------------------------------------------------------------------- trainable sets, frozen parts
def freeze(*modules: nn.Module) -> None:
    """No gradients for these modules' parameters (a stage's frozen parts)."""
    for m in modules:
        m.requires_grad_(False)


def state_fingerprint(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer: compare before / after a stage to prove it stayed frozen."""
    return {n: t.detach().clone() for n, t in module.state_dict().items()}


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    """Safetensors, written beside ``path`` then renamed (a crash never leaves half a file)."""
    from safetensors.torch import save_file

    with atomic_target(path) as tmp:
        save_file({n: t.detach().contiguous().cpu() for n, t in tensors.items()}, str(tmp))
    return path


def load_frozen(module: nn.Module, path: Path, what: str) -> nn.Module:
    """Load ``module``'s state from safetensors at ``path`` (exact key match) and freeze it."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    state = load_file(str(path))
    own = module.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        raise UserError(f"{what} at {path} does not fit: it has {sorted((k, tuple(v.shape)) for k, v in state.items())}, "
                        f"expected {sorted((k, tuple(v.shape)) for k, v in own.items())}")
    module.load_state_dict(state)
    freeze(module)
    return module
