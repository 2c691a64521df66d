"""One training loop for every method and task: AdamW, linear warm-up and decay, gradient clipping,
evaluation every epoch (or every N steps), the best checkpoint chosen on the dev split."""
from __future__ import annotations

import contextlib
import logging
import math
import random
import resource
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import metrics as M
from .config import TrainerConfig
from .data import Collator, LengthBucketSampler, seq_len
from .models import TaskModel
from .tasks import TaskSpec

log = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; whole-process peak


def _autocast(device: torch.device, bf16: bool):
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def loader(items: list[dict], spec: TaskSpec, pad_id: int, batch_size: int, shuffle: bool, seed: int = 0,
           bucket: bool = True) -> DataLoader:
    sampler = LengthBucketSampler([seq_len(i) for i in items], batch_size, shuffle, seed, bucket=bucket)
    return DataLoader(items, batch_sampler=sampler, collate_fn=Collator(pad_id, spec.task_type))


@torch.no_grad()
def evaluate(model: TaskModel, items: list[dict], spec: TaskSpec, tok, cfg: TrainerConfig,
             device: torch.device) -> dict[str, float]:
    """Metrics of ``model`` on tokenised ``items`` (predictions put back in the items' order)."""
    model.eval()
    t = spec.task_type
    preds: list = [None] * len(items)
    if t == "generation":
        gen_kwargs = {"max_new_tokens": cfg.max_new_tokens, "num_beams": cfg.num_beams, "do_sample": False}
        if cfg.num_beams > 1:
            gen_kwargs.update(length_penalty=cfg.length_penalty, no_repeat_ngram_size=cfg.no_repeat_ngram_size)
        order = sorted(range(len(items)), key=lambda i: len(items[i]["prompt_ids"]))
        for s in range(0, len(order), cfg.eval_batch_size):
            chunk = order[s:s + cfg.eval_batch_size]
            with _autocast(device, cfg.bf16 and not cfg.force_fp32):
                out = model.generate([items[i]["prompt_ids"] for i in chunk], tok.pad_token_id, **gen_kwargs)
            for i, ids in zip(chunk, out):
                preds[i] = tok.decode(ids, skip_special_tokens=True).strip()
        return M.compute(spec.metrics, t, preds, [it["references"] for it in items])
    for batch in loader(items, spec, tok.pad_token_id, cfg.eval_batch_size, shuffle=False):
        batch = _to(batch, device)
        with _autocast(device, cfg.bf16 and not cfg.force_fp32):
            logits = model(batch)["logits"].float()
        if t == "regression":
            out = logits.tolist()
        elif t == "token_classification":
            tags = logits.argmax(-1)  # (B, L)
            out = [[spec.labels[p] for p, g in zip(pr.tolist(), gl.tolist()) if g != -100]
                   for pr, gl in zip(tags, batch["labels"])]
        else:
            out = logits.argmax(-1).tolist()
        for i, o in zip(batch["index"].tolist(), out):
            preds[i] = o
    if t == "token_classification":
        gold = [[spec.labels[g] for g in it["labels"] if g != -100] for it in items]
    else:
        gold = [it["label"] for it in items]
    groups = [it["group"] for it in items] if "group" in items[0] else None
    return M.compute(spec.metrics, t, preds, gold, groups)


def fit(model: TaskModel, train: list[dict], dev: list[dict], spec: TaskSpec, tok, cfg: TrainerConfig, lr: float,
        seed: int, bucket: bool = True) -> dict:
    """Train; returns ``{"history", "best"}`` and leaves the best dev checkpoint loaded in ``model``."""
    device = pick_device(cfg.device)
    model.to(device)
    model.label_smoothing = cfg.label_smoothing
    for hook in model.before_training:  # data-dependent initialisation (LST's Fisher-pruned side network)
        hook(train, spec, tok)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(param_groups(model, lr, cfg), lr=lr)
    train_loader = loader(train, spec, tok.pad_token_id, cfg.batch_size, shuffle=True, seed=seed, bucket=bucket)
    per_epoch = len(train_loader)
    total = per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    warmup = math.ceil(cfg.warmup_ratio * total)
    eval_steps = eval_schedule(per_epoch, total, cfg)

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to 0
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    primary = spec.primary_metric
    best = {"score": -math.inf, "step": 0, "epoch": 0, "dev": {}}
    best_state: dict | None = None
    history, step, t0 = [], 0, time.time()
    running, n_running = 0.0, 0

    def run_eval(epoch: int) -> None:
        nonlocal best_state, running, n_running
        dev_metrics = evaluate(model, dev, spec, tok, cfg, device)
        entry = {"epoch": epoch, "step": step, "train_loss": running / max(1, n_running), "dev": dev_metrics,
                 "elapsed_s": round(time.time() - t0, 2)}
        history.append(entry)
        log.info("epoch %d step %d: train loss %.4f, dev %s", epoch, step, entry["train_loss"],
                 {k: round(v, 2) for k, v in dev_metrics.items()})
        running, n_running = 0.0, 0
        if dev_metrics[primary] > best["score"]:
            best.update(score=dev_metrics[primary], step=step, epoch=epoch, dev=dev_metrics)
            best_state = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
        model.train()

    def stalled() -> bool:  # early stopping: `patience` dev evaluations in a row without a new best
        return bool(cfg.patience) and len(history) - 1 - _best_index(history, best["step"]) >= cfg.patience

    bar = tqdm(total=total, desc=f"{spec.name}", disable=(not cfg.progress) or None, leave=False)
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        train_loader.batch_sampler.set_epoch(epoch)
        for batch in train_loader:
            batch = _to(batch, device)
            with _autocast(device, cfg.bf16 and not cfg.force_fp32):
                loss = model(batch)["loss"]
            optimizer_step(loss, params, opt, sched, cfg.max_grad_norm)
            step += 1
            running, n_running = running + loss.item(), n_running + 1
            bar.update(1)
            if step % cfg.log_every == 0:
                bar.set_postfix(loss=f"{running / n_running:.4f}")
            if step in eval_steps:
                run_eval(epoch)
            if step >= total or stalled():
                break
        if step >= total or stalled():
            break
    bar.close()
    if best_state is not None:
        params_by_name = dict(model.named_parameters())
        with torch.no_grad():
            for n, t in best_state.items():
                params_by_name[n].copy_(t)
    # Convergence flag: the best dev evaluation was the last one, so the curve may still be rising.
    still_improving = len(history) > 1 and best["step"] == history[-1]["step"]
    return {"history": history, "best": best, "steps": step, "device": str(device),
            "still_improving": still_improving, "stopped_early": step < total}


def optimizer_step(loss: torch.Tensor, params: list, opt, sched, max_grad_norm: float) -> None:
    """Backward, clip the gradient norm, step the optimiser and the schedule, clear the gradients."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)


def _best_index(history: list[dict], best_step: int) -> int:
    return next(i for i, h in enumerate(history) if h["step"] == best_step) if history else 0


def param_groups(model: TaskModel, lr: float, cfg: TrainerConfig) -> list[dict]:
    """AdamW groups: no weight decay on biases and norms (standard for BERT-style fine-tuning); the task
    head at ``trainer.head_lr`` when set (a fresh head under a PEFT method's tiny or huge lr is a known
    failure mode), else at ``lr``."""
    head = {id(p) for p in model.head.parameters()} if model.head is not None else set()
    head_lr = cfg.head_lr if cfg.head_lr is not None else lr
    groups = []
    for is_head, group_lr in ((False, lr), (True, head_lr)):
        ps = [p for p in model.parameters() if p.requires_grad and (id(p) in head) == is_head]
        for decayed in (True, False):
            sel = [p for p in ps if (p.ndim >= 2) == decayed]
            if sel:
                groups.append({"params": sel, "lr": group_lr, "weight_decay": cfg.weight_decay if decayed else 0.0,
                               "name": ("head" if is_head else "body") + ("" if decayed else "_no_decay")})
    return groups


def eval_schedule(per_epoch: int, total: int, cfg: TrainerConfig) -> set[int]:
    """Optimiser steps after which dev is evaluated: every ``eval_every_steps``, ``evals_per_run`` evenly
    spaced points over the run, or ``evals_per_epoch`` evenly spaced points per epoch (the last at the epoch's
    end); always after the final step."""
    every = cfg.eval_every_steps or (math.ceil(total / cfg.evals_per_run) if cfg.evals_per_run else None)
    if every:
        steps = set(range(every, total + 1, every))
    else:
        k = max(1, cfg.evals_per_epoch)
        steps = {e * per_epoch + math.ceil(per_epoch * j / k) for e in range(cfg.epochs) for j in range(1, k + 1)}
    return {s for s in steps if 0 < s <= total} | {total}
