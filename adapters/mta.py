"""MT-A: multi-task adapters (AdapterFusion, Pfeiffer et al. 2021, §2.2, https://arxiv.org/abs/2005.00247).

One Pfeiffer adapter and one head per task, all trained jointly in one run on batches that mix the tasks
(each batch holds one task's examples and runs that task's adapter; each task gets its own single-task step
budget, epochs x batches per epoch, interleaved by :func:`common.multitask.interleaved_batches`).
``multitask.train_backbone`` decides whether the shared backbone is updated as well (recorded; default false:
the backbone stays frozen, as in ST-A, so the per-task adapters can be fused afterwards exactly like ST-A ones).
Model selection: the tasks' mean primary dev score. Each task gets a run record (experiment ``adapters_mt``)
and, with a frozen backbone, a checkpoint in ST-A's format that ``method=adapter_fusion
method.adapters_from=[adapters_mt]`` finds by name.

    python -m adapters.mta experiment=adapters_mt seed=2                  # the experiment's task list
    python -m adapters.mta experiment=adapters_mt "multitask.tasks=[rte,mrpc]" scale=smoke model=tiny-bert
    python -m adapters.mta experiment=adapters_mt --plan [--save]     # predicted CPU-h of seeds 2-4
"""
from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone

import torch
from torch import nn

from common import records
from common.data import Collator
from common.errors import UserError
from common.methods import count_params, to_config, trainable_state
from common.models import TaskModel, load_backbone, load_tokenizer
from common.multitask import StageConfig, TaskData, fit_multitask, save_tensors
from common.run import checkpoint_dir, load_splits, tokenize_splits, write_run_info
from common.trainer import TrainerConfig, _to, evaluate, pick_device, set_seed

from .methods import Adapter, AdapterConfig, add_adapters

log = logging.getLogger(__name__)


class TaskSwitch(nn.Module):
    """One adapter per task at one place in the backbone; ``active`` (a task index) picks whose runs."""

    def __init__(self, adapters: list[Adapter]):
        super().__init__()
        self.adapters = nn.ModuleList(adapters)
        self.active = 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.adapters[self.active](h)


def _st_a_name(name: str, i: int) -> str | None:
    """Task ``i``'s tensor under its ST-A name (``...adapter.adapters.<i>.down.weight`` -> ``...adapter.down.weight``);
    None for another task's tensor."""
    m = re.fullmatch(r"(.*\.adapter)\.adapters\.(\d+)\.(.*)", name)
    if m is None:
        return name
    return f"{m.group(1)}.{m.group(3)}" if int(m.group(2)) == i else None


def task_configs(cfg: dict, overrides: list[str]) -> dict[str, dict]:
    """Each task's own composed config (its data budget, its metric) with the run's overrides."""
    from common.sweep import compose, task_overrides

    tasks = cfg["multitask"].get("tasks") or []
    if len(tasks) < 2:
        raise UserError(f"MT-A needs at least two tasks in multitask.tasks, got {tasks}")
    rest = [o for o in overrides if not o.startswith(("task=", "task.name="))]
    return {t: compose([*rest, *task_overrides(t)]) for t in tasks}


def step_budget(cfgs: dict[str, dict], sizes: dict[str, int], batch_size: int) -> tuple[int, dict[str, int]]:
    """(total steps, epochs per task): each task trains as many steps as its own single-task budget (its epochs
    x batches per epoch), so the joint run is the sum of them. Shares by size alone would give CB (32 examples,
    one batch beside MRPC's 104) ~1 % of the steps, a handful in all."""
    epochs = {t: c["trainer"]["epochs"] for t, c in cfgs.items()}
    return sum(math.ceil(sizes[t] / batch_size) * epochs[t] for t in cfgs), epochs


def run_mta(cfg: dict, cfgs: dict[str, dict]) -> list[dict]:
    """Train the tasks' adapters jointly; write one record (and, backbone frozen, one checkpoint) per task."""
    t0, started = time.time(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    mt = cfg["multitask"]
    method = to_config(cfg["method"])
    if not isinstance(method, AdapterConfig) or method.config != "pfeiffer":
        raise UserError("MT-A trains Pfeiffer adapters: use method=adapter method.config=pfeiffer")
    paths = {t: records.record_path(c) for t, c in cfgs.items()}
    if not cfg.get("force") and all(records.is_complete(p) for p in paths.values()):
        log.info("MT-A: every task's record exists (force=true to re-run)")
        return [json.loads(p.read_text()) for p in paths.values()]
    if cfg["trainer"]["num_threads"]:
        torch.set_num_threads(cfg["trainer"]["num_threads"])
    names = list(cfgs)
    loaded = {t: load_splits(c) for t, c in cfgs.items()}  # fails early on a bad task name or data dir
    set_seed(cfg["seed"])
    tok = load_tokenizer(cfg["model"]["name"], cfg["model"]["hub_id"])
    backbone = load_backbone(cfg["model"]["name"], cfg["model"]["hub_id"], tok)
    if mt.get("train_backbone") and mt.get("backbone_lr") is None:
        raise UserError("MT-A with multitask.train_backbone=true needs multitask.backbone_lr (the pretrained weights' "
                        "lr, e.g. full fine-tuning's 5e-5): the adapters' lr (method.lr) would wreck the backbone")
    for p in backbone.parameters():
        p.requires_grad_(bool(mt.get("train_backbone")))
    pretrained = {id(p) for p in backbone.parameters()}  # before the adapters are added
    switches = add_adapters(backbone, method, make=lambda d, m: TaskSwitch(
        [Adapter(d, m, method.non_linearity, method.init) for _ in names]))
    models, data = {}, []
    for t in names:
        spec, splits = loaded[t]
        m = TaskModel(backbone, spec.task_type, spec.num_labels, cfg["model"]["dropout"], cfg["model"]["pooling"])
        if spec.task_type == "regression":
            m.set_target_stats([e["label"] for e in splits["train"]])
        items = tokenize_splits(cfgs[t], spec, splits, tok, m.kind)
        models[t] = m
        data.append(TaskData(t, spec.primary_metric, items["train"], items["dev"], items.get("test", []),
                             extra={"spec": spec, "collate": Collator(tok.pad_token_id, spec.task_type)}))
    tcfg = TrainerConfig(**cfg["trainer"])
    device = pick_device(tcfg.device)
    backbone.to(device)
    for m in models.values():
        m.to(device)
    joint = _Joint(models)
    unique = {n: p for n, p in joint.named_parameters() if p.requires_grad}  # shared tensors once each

    def activate(task: str) -> TaskModel:
        for s in switches:
            s.active = names.index(task)
        return models[task]

    def loss_fn(task: TaskData, batch: list[dict]) -> torch.Tensor:
        model = activate(task.name)
        model.label_smoothing = tcfg.label_smoothing
        return model(_to(task.extra["collate"](batch), device))["loss"]

    def evaluate_fn(task: TaskData, items: list[dict]) -> dict[str, float]:
        return evaluate(activate(task.name), items, task.extra["spec"], tok, tcfg, device)

    steps, epochs = step_budget(cfgs, {d.name: len(d.train) for d in data}, tcfg.batch_size)
    steps = mt.get("steps") or steps
    stage = StageConfig(lr=method.lr, steps=steps, batch_size=tcfg.batch_size, eval_every=mt["eval_every"],
                        patience=mt.get("patience"), warmup_ratio=tcfg.warmup_ratio, weight_decay=tcfg.weight_decay,
                        max_grad_norm=tcfg.max_grad_norm, eval_batch_size=tcfg.eval_batch_size, task_epochs=epochs)
    lrs = {n: mt["backbone_lr"] for n, p in unique.items() if id(p) in pretrained} if mt.get("train_backbone") else None
    out = fit_multitask(joint, unique, data, loss_fn, evaluate_fn, stage, cfg["seed"], lrs=lrs)
    n_train, n_total = count_params(joint)
    recs = []
    for i, task in enumerate(data):
        model = activate(task.name)
        final = {"dev": out["best"]["dev"][task.name]}
        if task.test:
            final["test"] = evaluate_fn(task, task.test)
        rid = paths[task.name].stem
        if not mt.get("train_backbone"):  # ST-A's format: fusion loads these like single-task adapters
            state = {k2: v for k, v in trainable_state(model).items() if (k2 := _st_a_name(k, i)) is not None}
            folder = checkpoint_dir(rid)
            save_tensors(state, folder / "trainable.safetensors")
            (folder / "method.json").write_text(json.dumps(asdict(method), indent=1))
            write_run_info(folder, cfgs[task.name], rid, task.extra["spec"], final["dev"])
        rec = {"run_id": rid, "status": "completed", "paper": cfg["paper"], "experiment": cfg["experiment"],
               "task": task.name, "task_type": task.extra["spec"].task_type, "method": "adapter_mta",
               "model": cfg["model"]["name"], "seed": cfg["seed"], "scale": cfg["scale"],
               "primary_metric": task.primary_metric, "config": {k: v for k, v in cfgs[task.name].items() if k != "sweep"},
               "git": records.git_state(), "environment": records.environment(), "device": str(device),
               "data_sizes": {"train": len(task.train), "dev": len(task.dev), "test": len(task.test)},
               "trainable_params": n_train, "total_params": n_total,
               "multitask": {"tasks": names, "train_backbone": bool(mt.get("train_backbone")),
                             "backbone_lr": mt.get("backbone_lr") if mt.get("train_backbone") else None,
                             "steps": out["steps"], "best_step": out["best"]["step"], "mean_dev": out["best"]["score"]},
               "steps": out["steps"], "best": {"step": out["best"]["step"]},
               "still_improving": out["still_improving"], "stopped_early": out["stopped_early"],
               "history": out["history"], "final": final, "pooling": model.pooling,
               "wall_time_s": round(time.time() - t0, 2), "started_at": started,
               "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        records.write_record(paths[task.name], rec)
        recs.append(rec)
    return recs


class _Joint(nn.Module):
    """The task models as one module (shared backbone counted once), for fit_multitask's checks and counts."""

    def __init__(self, models: dict[str, TaskModel]):
        super().__init__()
        self.models = nn.ModuleList(models.values())


REPORT_SEEDS = (2, 3, 4)


def shared_lr_override(overrides: list[str], results_root=None) -> list[str]:
    """``method.lr=<ST-A's shared lr>`` unless ``overrides`` sets ``method.lr``: the lr the ``mta`` step of
    ``adapters.experiments`` runs at (it is part of the run id, so a plan without it would miss finished runs).
    Empty, with a warning, while ST-A has no lr choice yet (the plan then prices the file's lr)."""
    if any(o.startswith("method.lr=") for o in overrides):
        return []
    from .experiments import Plan

    try:
        lr = Plan("scale=smoke" in overrides, results_root, 2).shared_st_lr()
    except UserError as e:
        log.warning("MT-A plan at the experiment file's lr: %s", e)
        return []
    return [f"method.lr={lr}"]


def plan_frame(overrides: list[str], seeds=REPORT_SEEDS, jobs: int = 2, results_root=None):
    """One row per joint run (seed) in common.plan's format, at the lr the ``mta`` step uses
    (:func:`shared_lr_override`; ``results_root`` holds the ST-A records it reads). The joint run's steps are the
    sum of the tasks' own single-task budgets, so it is priced as the sum of the tasks' single-task runs
    (:func:`common.plan.predict`; their dev evaluations stand in for the joint run's, which evaluate every
    task every ``multitask.eval_every`` steps) less the start-up cost counted once per extra task. Measured:
    the last task record's wall time (the records share one run)."""
    import pandas as pd

    from common.aggregate import load_record
    from common.plan import STARTUP_S, Throughput, predict
    from common.sweep import compose

    tp, threads, rows = Throughput(), 1 if jobs > 1 else 2, []
    overrides = [*overrides, *shared_lr_override(overrides, results_root)]
    for seed in seeds:
        ov = [*overrides, f"seed={seed}"]
        cfgs = task_configs(compose(ov), ov)
        parts = [predict(c, tp, threads) for c in cfgs.values()]
        recs = [load_record(records.record_path(c)) for c in cfgs.values()]
        done = all(r is not None for r in recs)
        device = str(recs[0].get("device") or "") if done else ""
        measured = max(r["wall_time_s"] for r in recs) if done else None
        gpu = done and device.startswith("cuda")
        first = next(iter(cfgs.values()))
        rows.append({"run_id": f"adapters_mt__seed{seed}", "phase": "report", "task": "+".join(cfgs),
                     "method": "adapter_mta", "setting": "", "seed": seed, "lr": first["method"]["lr"], "lr_known": True,
                     "n_train": sum(p["n_train"] for p in parts), "n_dev": sum(p["n_dev"] for p in parts),
                     "n_test": sum(p["n_test"] for p in parts), "epochs": max(p["epochs"] for p in parts),
                     "evals": max(p["evals"] for p in parts),
                     "train_examples": sum(p["train_examples"] for p in parts),
                     "eval_examples": sum(p["eval_examples"] for p in parts),
                     "predicted_s": round(sum(p["predicted_s"] for p in parts) - STARTUP_S * (len(parts) - 1), 1),
                     "throughput_measured": all(p["throughput_measured"] for p in parts),
                     "status": "done" if done else "todo", "measured_s": None if gpu else measured, "device": device,
                     "gpu_s": measured if gpu else None})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    from common.sweep import compose

    overrides = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if "--plan" in overrides:
        from common.paths import RESULTS_DIR
        from common.plan import summary
        from common.records import write_atomic
        from common.sweep import write_frame

        save = "--save" in overrides
        overrides = [o for o in overrides if o not in ("--plan", "--save")]
        try:
            df = plan_frame(overrides)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        text = summary(df, "adapters/adapters_mt (one joint run per seed)", 2)
        print(text)
        if save:
            write_frame(df, RESULTS_DIR / "adapters" / "adapters_mt_plan.csv")
            write_atomic(RESULTS_DIR / "adapters" / "adapters_mt_plan.md", text + "\n")
        return 0
    try:
        cfg = compose(overrides)
        recs = run_mta(cfg, task_configs(cfg, overrides))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in recs:
        print(f"{r['task']}: dev {r['final']['dev']} test {r['final'].get('test')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
