"""IPT stage 3, intrinsic subspace tuning (Qin et al. §3.3).

    python -m ipt.ist +split=random intrinsic_dim=5 [subspace=learned|random] [ist.seen_data=diff|same]

Only the MSF decoder is kept, frozen; per task one vector v in R^{d_I} (init N(0, 0.02)) is tuned and
the prompt is decoder(v). Seen (training) tasks use a different few-shot sample (``ist_seed``, 21) from
the one MSF saw (``seen_data=same`` reuses it: the paper's T_train-same), unseen tasks their usual
sample; everything is scored on the task's test file. ``subspace=random`` replaces the learned decoder
with an untrained one of the same shape (the paper's random-subspace baseline). One record per task
(results/records/ipt/ist/), with v saved beside it.
"""
from __future__ import annotations

import logging
import time
from functools import partial

import torch

from common.data import resolve_data_dir
from common.errors import UserError
from common.multitask import (
    StageConfig,
    fit_multitask,
    freeze,
    load_frozen,
    save_tensors,
)
from common.trainer import set_seed
from ipt import workbench as W
from ipt.msf import checkpoint_path
from ipt.scorer import ScorerConfig
from ipt.splits import resolve_split
from ipt.subspace import IntrinsicVector, PromptAutoencoder, PromptDecoder

log = logging.getLogger("ipt.ist")
STAGE = "ist"
SUBSPACES = ("learned", "random")
IST_KEYS = ("ist.lr", "ist.steps", "ist.batch_size", "ist.eval_every", "ist.patience", "ist.warmup_ratio",
            "ist.weight_decay", "ist.max_grad_norm", "ist.seen_data", "subspace", "ist_seed")


def msf_cfg(cfg: dict) -> dict:
    """The config of the MSF run whose decoder this IST run uses (seed = ``msf_seed`` or ``seed``)."""
    return {**cfg, "seed": cfg["msf_seed"] if cfg["msf_seed"] is not None else cfg["seed"]}


def decoder_for(cfg: dict, hidden: int) -> PromptDecoder:
    """The frozen decoder: MSF's (learned) or an untrained one seeded by the MSF seed (random)."""
    mcfg = msf_cfg(cfg)
    if cfg["subspace"] == "learned":
        path = checkpoint_path(mcfg)
        if not path.is_file():
            raise UserError(f"no MSF autoencoder at {path}; run `python -m ipt.msf +split={cfg['split']['name']} "
                            f"intrinsic_dim={cfg['intrinsic_dim']} seed={mcfg['seed']}` with the same settings first")
        ae = PromptAutoencoder(cfg["prompt"]["len"], hidden, cfg["intrinsic_dim"])
        return load_frozen(ae, path, "MSF autoencoder").decoder
    if cfg["subspace"] == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1_000_003 + mcfg["seed"])  # the same random subspace for every task of a seed
            dec = PromptDecoder(cfg["prompt"]["len"], hidden, cfg["intrinsic_dim"])
        freeze(dec)
        return dec
    raise UserError(f"subspace={cfg['subspace']!r}; valid: {', '.join(SUBSPACES)}")


def ist_run_id(cfg: dict, task: str, role: str) -> str:
    """Identity: the MSF run it reads (learned) or the decoder's shape and seed (random), plus IST's own keys."""
    base = W.run_id(msf_cfg(cfg), "msf") if cfg["subspace"] == "learned" else \
        f"random-{cfg['prompt']['len']}-{cfg['intrinsic_dim']}-{msf_cfg(cfg)['seed']}"
    extra = {"decoder": base, "role": role, **W._flat_selected(cfg, IST_KEYS), **W._flat_selected(cfg, W._PT_KEYS),
             "seed": cfg["seed"]}
    return W.run_id(cfg, STAGE, task, extra)


def tune_task(cfg: dict, job: str, run_tasks: dict[str, int] | None = None) -> dict:
    """IST on one ``role:task`` job; ``run_tasks`` (role -> tasks of that role in this invocation) goes into the
    record so that tables can tell a run still going from a complete one."""
    role, task_name = job.split(":", 1)
    rid = ist_run_id(cfg, task_name, role)
    path, done = W.existing(cfg, STAGE, rid)
    if done:
        return done
    t0, started = time.time(), W._now()
    scorer, _ = W.build(cfg)
    decoder = decoder_for(cfg, scorer.hidden)
    seen_diff = role == "train" and cfg["ist"]["seen_data"] == "diff"
    data_seed = cfg["ist_seed"] if seen_diff else cfg["few_shot_seed"]
    task = W.load_task(cfg, scorer, task_name, data_seed)
    set_seed(cfg["seed"])
    v = IntrinsicVector(cfg["intrinsic_dim"])
    stage_cfg = StageConfig.of(cfg["ist"])
    out = fit_multitask(torch.nn.ModuleDict({"scorer": scorer, "decoder": decoder, "v": v}), {"v": v.v}, [task],
                        lambda t, b: scorer.loss(t, b, decoder(v())),
                        lambda t, items: W.scores(scorer, t, items, decoder(v())), stage_cfg, cfg["seed"])
    with torch.no_grad():
        test = W.scores(scorer, task, task.test, decoder(v()))
    save_tensors({"v": v.v}, path.with_suffix(".safetensors"))
    body = {"task": task_name, "task_type": "multiple_choice" if scorer.needs_options else "text_to_text",
            "method": f"ist_{cfg['subspace']}", "seed": cfg["seed"], "primary_metric": task.primary_metric,
            "role": role, "run_tasks": (run_tasks or {}).get(role), "few_shot_seed": data_seed, "intrinsic_dim": cfg["intrinsic_dim"],
            "data_sizes": {"train": len(task.train), "dev": len(task.dev), "test": len(task.test)},
            "trainable_params": v.v.numel(), "total_params": v.v.numel() + W.param_count(decoder, scorer),
            "steps": out["steps"], "best": {"step": out["best"]["step"]}, "still_improving": out["still_improving"],
            "stopped_early": out["stopped_early"], "history": out["history"],
            "final": {"dev": out["best"]["dev"][task_name], "test": test}}
    rec = W.write_record(cfg, STAGE, rid, body, started, t0)
    log.info("%s (%s, %s): dev %.1f test %.1f", task_name, role, cfg["subspace"],
             out["best"]["dev"][task_name][task.primary_metric], test[task.primary_metric])
    return rec


def jobs(cfg: dict, train: list[str], test: list[str]) -> list[str]:
    """``role:task`` for the tasks IST runs on: ``ist.tasks`` = all | train | test, the first
    ``ist.max_train_tasks`` training tasks (budget), then ``tasks`` (if set) as a filter."""
    which = cfg["ist"]["tasks"]
    if which not in ("all", "train", "test"):
        raise UserError(f"ist.tasks={which!r}; valid: all, train, test")
    n = cfg["ist"]["max_train_tasks"]
    train = train[:n] if n is not None else train
    chosen = (train if which != "test" else []) + (test if which != "train" else [])
    keep = set(W.select_tasks(cfg, chosen))
    return [f"{'train' if t in train else 'test'}:{t}" for t in chosen if t in keep]


def stage(cfg: dict) -> None:
    if cfg["ist"]["seen_data"] not in ("diff", "same"):
        raise UserError(f"ist.seen_data={cfg['ist']['seen_data']!r}; valid: diff, same")
    split = resolve_split(cfg["split"], resolve_data_dir(cfg["data"]["dir"]),
                          ScorerConfig(**cfg["scorer"]).kind == "cosine")
    todo = jobs(cfg, split.train, split.test)
    if all(W.existing(cfg, STAGE, ist_run_id(cfg, task, role))[1] for role, task in (j.split(":", 1) for j in todo)):
        log.info("skipping: all %d IST runs are complete", len(todo))  # their decoder may be gone (scratch)
        return
    scorer, _ = W.build(cfg)
    decoder_for(cfg, scorer.hidden)  # a missing MSF run fails here, before any worker starts
    log.info("IST (%s subspace, d_I=%d): %d tasks", cfg["subspace"], cfg["intrinsic_dim"], len(todo))
    counts = {r: sum(j.startswith(f"{r}:") for j in todo) for r in ("train", "test")}
    W.run_parallel(partial(tune_task, run_tasks=counts), cfg, todo)


main = W.entry(stage, "ipt.ist")

if __name__ == "__main__":
    main()
