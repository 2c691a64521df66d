"""IPT stage 2, multi-task subspace finding (Qin et al. §3.2).

    python -m ipt.msf +split=random intrinsic_dim=5 [msf.alpha=1.0] [seed=2]

An autoencoder (:class:`ipt.subspace.PromptAutoencoder`) over the training tasks' stage-1 prompts P*
is trained with loss = task loss with the reconstructed prompt + alpha * mean((P_rec - P*)^2); batches
come from one task each, the tasks interleaved step to step (:mod:`common.multitask`); only the
autoencoder trains (backbone and prompts frozen). The checkpoint is chosen on the training tasks' mean
dev score. Then, on each task's test file:

- T_train(MSF): training tasks with their reconstructed prompts;
- T_test(MSF): unseen test tasks with their own stage-1 prompts passed through the autoencoder.

The record (results/records/ipt/msf/) holds both per task; the autoencoder goes to the scratch folder
(outputs/ipt/msf/<run id>.safetensors), where IST finds its decoder. A run that is killed resumes from its
last dev evaluation when started again (``<run id>.partial.pt`` beside it), with the same result.
"""
from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from torch import nn

from common.data import resolve_data_dir
from common.errors import UserError
from common.multitask import StageConfig, fit_multitask, freeze, save_tensors
from common.trainer import set_seed
from ipt import workbench as W
from ipt.scorer import ScorerConfig
from ipt.splits import resolve_split
from ipt.subspace import PromptAutoencoder

log = logging.getLogger("ipt.msf")
STAGE = "msf"


def checkpoint_path(cfg: dict):
    return W.scratch(STAGE) / f"{W.run_id(cfg, STAGE)}.safetensors"


def partial_path(cfg: dict):
    """The training state after the last dev evaluation: a run killed mid-way (a 1-CPU-hour MSF run outlives
    many sessions' background jobs) resumes from it; deleted once the record is written."""
    return W.scratch(STAGE) / f"{W.run_id(cfg, STAGE)}.partial.pt"


def stage(cfg: dict) -> dict:
    if cfg["intrinsic_dim"] < 1:
        raise UserError(f"intrinsic_dim must be >= 1, got {cfg['intrinsic_dim']}")
    split = resolve_split(cfg["split"], resolve_data_dir(cfg["data"]["dir"]),
                          ScorerConfig(**cfg["scorer"]).kind == "cosine")
    keep = set(W.select_tasks(cfg, split.train + split.test))
    split.train, split.test = [t for t in split.train if t in keep], [t for t in split.test if t in keep]
    if not split.train or not split.test:
        raise UserError(f"MSF needs at least one training and one test task; tasks={cfg['tasks']} leaves "
                        f"{len(split.train)} and {len(split.test)}")
    rid = W.run_id(cfg, STAGE)
    path = W.record_dir(cfg, STAGE) / f"{rid}.json"
    done = W.load_completed(path)
    if done and not cfg["force"] and checkpoint_path(cfg).is_file():
        log.info("skipping: %s is complete", path)
        return done
    t0, started = time.time(), W._now()
    if cfg["force"]:
        partial_path(cfg).unlink(missing_ok=True)
    prompts = W.load_prompts(cfg, split.train + split.test)  # every missing prompt named before any training
    scorer, _ = W.build(cfg)
    train = [W.load_task(cfg, scorer, t, cfg["few_shot_seed"]) for t in split.train]
    set_seed(cfg["seed"])
    P, H = prompts[split.train[0]].shape
    if P != cfg["prompt"]["len"] or H != scorer.hidden:
        raise UserError(f"stage-1 prompts are {P} x {H}; this config expects {cfg['prompt']['len']} x {scorer.hidden}")
    ae = PromptAutoencoder(P, H, cfg["intrinsic_dim"])
    alpha = cfg["msf"]["alpha"]
    freeze(scorer)
    model = nn.ModuleDict({"scorer": scorer, "ae": ae})  # train / eval mode for both

    def loss_fn(task, batch):
        target = prompts[task.name]
        rec = ae(target)  # (P, H)
        return scorer.loss(task, batch, rec) + alpha * F.mse_loss(rec, target)

    stage_cfg = StageConfig.of(cfg["msf"])
    out = fit_multitask(model, dict(ae.named_parameters()), train, loss_fn,
                        lambda t, items: W.scores(scorer, t, items, ae(prompts[t.name])), stage_cfg, cfg["seed"],
                        resume=partial_path(cfg))
    model.eval()
    per_task = {}
    with torch.no_grad():
        for t in train:  # T_train(MSF)
            rec = ae(prompts[t.name])
            per_task[t.name] = {"role": "train", "metric": t.primary_metric, "dev": out["best"]["dev"][t.name], "test": W.scores(scorer, t, t.test, rec),
                                "reconstruction_mse": F.mse_loss(rec, prompts[t.name]).item(),
                                "prompt_mean_square": prompts[t.name].pow(2).mean().item()}
        for name in split.test:  # T_test(MSF)
            t = W.load_task(cfg, scorer, name, cfg["few_shot_seed"])
            rec = ae(prompts[name])
            per_task[name] = {"role": "test", "metric": t.primary_metric, "test": W.scores(scorer, t, t.test, rec),
                              "reconstruction_mse": F.mse_loss(rec, prompts[name]).item(),
                              "prompt_mean_square": prompts[name].pow(2).mean().item()}  # the error of a zero reconstruction
    save_tensors(ae.state_dict(), checkpoint_path(cfg))
    mean = {role: _mean(per_task, role) for role in ("train", "test")}
    body = {"task": f"split:{split.name}", "task_type": "multi_task", "method": "msf", "seed": cfg["seed"],
            "primary_metric": "mean_primary", "data_sizes": {"train_tasks": len(split.train), "test_tasks": len(split.test)},
            "dropped_tasks": split.dropped, "trainable_params": W.param_count(ae),
            "total_params": W.param_count(ae, scorer), "steps": out["steps"], "best": {"step": out["best"]["step"]},
            "still_improving": out["still_improving"], "stopped_early": out["stopped_early"],
            "history": out["history"], "checkpoint": str(checkpoint_path(cfg)), "resumed_at_step": out["resumed_at_step"],
            "final": {"dev": {"mean_primary": out["best"]["score"]}, "test": {"mean_primary_train_tasks": mean["train"],
                                                                              "mean_primary_test_tasks": mean["test"]}},
            "per_task": per_task}
    # wall time counts the interrupted part too (up to its last dev evaluation)
    rec = W.write_record(cfg, STAGE, rid, body, started, t0 - out["resumed_elapsed_s"])
    partial_path(cfg).unlink(missing_ok=True)
    log.info("MSF d_I=%d: mean dev %.1f; test: train tasks %.1f, unseen tasks %.1f", cfg["intrinsic_dim"],
             out["best"]["score"], mean["train"], mean["test"])
    return rec


def _mean(per_task: dict, role: str) -> float:
    """Mean primary test metric over the tasks of one role (train | test)."""
    vals = [v["test"][v["metric"]] for v in per_task.values() if v["role"] == role]
    return sum(vals) / len(vals) if vals else float("nan")


main = W.entry(stage, "ipt.msf")

if __name__ == "__main__":
    main()
