"""One run, start to finish: data, model, method, training, evaluation, run record.

``run(cfg)`` takes the resolved config as a plain dict (what Hydra composes from ``conf/``) and
returns the record it wrote (or the existing one, when a completed record exists and
``force`` is false). All checks of the user's input happen before any training and before
anything is written.
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from . import records
from .data import DataArgs, load_examples, resolve_task, tokenize
from .methods import attach_method, prepare_inference, save_trainable, to_config
from .models import build_task_model
from .paths import SCRATCH_DIR
from .trainer import evaluate, fit, peak_memory_mb, pick_device, set_seed

log = logging.getLogger(__name__)


def prepare(cfg: dict):
    """Everything up to training: (spec, model, tokenizer, splits, param counts). Raises UserError early."""
    method_cfg = to_config(cfg["method"])
    spec, splits = load_splits(cfg)
    set_seed(cfg["seed"])  # before the head and the method's parameters are initialised
    model, tok = build_task_model(cfg["model"]["name"], spec.task_type, spec.num_labels, cfg["model"]["hub_id"],
                                  dropout=cfg["model"]["dropout"], pooling=cfg["model"]["pooling"])
    if spec.task_type == "regression":
        model.set_target_stats([e["label"] for e in splits["train"]])
    params = attach_method(model, method_cfg, cfg["data"]["max_seq_len"])
    return spec, model, tok, tokenize_splits(cfg, spec, splits, tok, model.kind), params, method_cfg


def checkpoint_dir(run_id: str) -> Path:
    return SCRATCH_DIR / "checkpoints" / run_id


def write_run_info(folder: Path, cfg: dict, run_id: str, spec, dev: dict) -> None:
    """``run.json`` beside a checkpoint: what it is, so later stages find it by task and seed (AdapterFusion)."""
    records.write_atomic(folder / "run.json", json.dumps(
        {"run_id": run_id, "paper": cfg["paper"], "experiment": cfg["experiment"], "task": spec.name,
         "seed": cfg["seed"], "primary_metric": spec.primary_metric, "dev": dev.get(spec.primary_metric)}, indent=1))


def load_splits(cfg: dict):
    """(spec, {role: examples}) of the config's task at its data budget (test only when evaluated)."""
    spec, data_dir = resolve_task(cfg["task"]["name"], cfg["data"]["dir"])
    d = cfg["data"]
    splits = {}
    for role in ("train", "dev", "test"):
        if role == "test" and (role not in spec.splits or not cfg["trainer"]["eval_test"]):
            continue
        n = {"train": d["max_train"], "dev": d["max_dev"], "test": d["max_test"]}[role]
        splits[role] = load_examples(spec, role, data_dir, cfg["task"]["few_shot_seed"], n, d["subsample_seed"])
    return spec, splits


def tokenize_splits(cfg: dict, spec, splits: dict, tok, kind: str) -> dict:
    d = cfg["data"]
    args = DataArgs(max_seq_len=d["max_seq_len"], target_len=d["target_len"])
    items = {}
    for role, examples in splits.items():
        key = f"{spec.name}/{role}/{cfg['task']['few_shot_seed']}" if d["cache"] else None
        items[role] = tokenize(examples, spec, tok, kind, args, cache_key=key)
    return items


def method_stats(model: torch.nn.Module) -> dict:
    """Facts a method's modules report about a finished run (``record_stats()``, e.g. LST's backbone cache size),
    merged; empty for methods that report none."""
    out: dict = {}
    for m in model.modules():
        if hasattr(m, "record_stats"):
            out.update(m.record_stats())
    return out


def run(cfg: dict) -> dict:
    path = records.record_path(cfg)
    if not cfg.get("force") and records.is_complete(path):
        log.info("skipping %s: completed record exists (force=true to re-run)", path)
        return json.loads(path.read_text())
    t0 = time.time()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tc = cfg["trainer"]
    if tc["num_threads"]:
        torch.set_num_threads(tc["num_threads"])
    spec, model, tok, items, params, method_cfg = prepare(cfg)
    from .config import TrainerConfig

    tcfg = TrainerConfig(**tc)
    out = fit(model, items["train"], items["dev"], spec, tok, tcfg, method_cfg.lr, cfg["seed"], cfg["data"]["bucket"])
    device = pick_device(tcfg.device)
    final = {"dev": out["best"]["dev"]}
    if "test" in items:
        prepare_inference(model, method_cfg)  # test metrics come from the deployable form (LoRA: merged)
        final["test"] = evaluate(model, items["test"], spec, tok, tcfg, device)
    if tc["save_checkpoint"]:
        folder = save_trainable(model, checkpoint_dir(path.stem), method_cfg).parent
        write_run_info(folder, cfg, path.stem, spec, out["best"]["dev"])
    record = {
        "run_id": path.stem,
        "status": "completed",
        "paper": cfg["paper"],
        "experiment": cfg["experiment"],
        "task": spec.name,
        "task_type": spec.task_type,
        "method": method_cfg.name,
        "model": cfg["model"]["name"],
        "seed": cfg["seed"],
        "scale": cfg["scale"],
        "primary_metric": spec.primary_metric,
        "config": {k: v for k, v in cfg.items() if k != "sweep"},  # the sweep is the driver's, not the run's
        "git": records.git_state(),
        "environment": records.environment(),
        "device": out["device"],
        "precision": ("bf16-autocast" if out["device"].startswith("cuda") and tc["bf16"] and not tc["force_fp32"]
                      else "fp32"),
        "data_sizes": {role: len(v) for role, v in items.items()},
        **params,
        "steps": out["steps"],
        "best": {k: out["best"][k] for k in ("epoch", "step")},
        "still_improving": out["still_improving"],  # best dev evaluation = the last one
        "stopped_early": out["stopped_early"],  # trainer.patience ran out before the last step
        "head_lr": tc["head_lr"] if tc["head_lr"] is not None else method_cfg.lr,
        "pooling": model.pooling,
        "history": out["history"],
        "final": final,
        "wall_time_s": round(time.time() - t0, 2),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "started_at": started,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "notes": spec.note,
        "method_stats": method_stats(model),
    }
    records.write_record(path, record)
    log.info("wrote %s: dev %s test %s", path, final["dev"], final.get("test"))
    return record
