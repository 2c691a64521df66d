"""What IPT's three stages share: the entry-point wrapper, the scorer, task data, run identities, prompts
on disk and run records (the common record schema; one JSON per run under results/records/ipt/<stage>/).

Run identities: a stage's id hashes exactly the config values that change what it computes
(:data:`STAGE_KEYS`), so MSF finds each task's stage-1 prompt by recomputing that run's id, and
IST finds its MSF decoder the same way.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from common import arch, records
from common.data import load_examples, resolve_task
from common.errors import UserError
from common.multitask import TaskData
from common.paths import RECORDS_DIR, REPO_ROOT, SCRATCH_DIR
from common.tasks import CROSSFIT_PREFIX

log = logging.getLogger(__name__)
PAPER = "ipt"
# Config keys (prefixes) that define each stage's result; later stages include the earlier ones they read.
_PT_KEYS = ("model.", "scorer.", "prompt.", "pt.", "few_shot_seed", "data.max_seq_len", "data.target_len",
            "data.max_test", "data.subsample_seed", "scale")
STAGE_KEYS = {
    "prompt_tuning": _PT_KEYS + ("seed",),
    "msf": _PT_KEYS + ("msf.", "intrinsic_dim", "split.name", "split.train", "split.test", "tasks",
            "prompt_seed", "seed"),
}


# ----------------------------------------------------------------------------- entry points
def entry(stage: Callable[[dict], object], argv_name: str) -> Callable:
    """Hydra main for a stage: ``+split`` required (one line listing choices, exit 2 without it);
    a UserError prints one line and exits 2 before anything is written."""
    import hydra
    from omegaconf import OmegaConf

    from common.config import register_configs
    from ipt.config import register
    from ipt.splits import available_splits

    register_configs()
    register()

    @hydra.main(config_path=str(REPO_ROOT / "conf"), config_name="ipt", version_base="1.3")
    def main(cfg) -> None:
        if cfg.split is None:
            print(f"error: {argv_name} needs a split: +split=<name>; choices: {', '.join(available_splits())}",
                  file=sys.stderr)
            sys.exit(2)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
        try:
            stage(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return main


# ----------------------------------------------------------------------------- identities, records
def _flat_selected(cfg: dict, keys: tuple[str, ...]) -> dict:
    flat = records.flatten(cfg)
    return {k: v for k, v in flat.items() if any(k == p or (p.endswith(".") and k.startswith(p)) for p in keys)}


def run_id(cfg: dict, stage: str, task: str | None = None, extra: dict | None = None) -> str:
    """``<task or split>__<stage>__seed<seed>__<hash>``; the hash covers :data:`STAGE_KEYS` [stage] + ``extra``."""
    sel = {**_flat_selected(cfg, STAGE_KEYS.get(stage, ())), **(extra or {})}
    if task is not None:
        sel["task"] = task
    digest = hashlib.sha1(json.dumps(sel, sort_keys=True, default=str).encode()).hexdigest()[:10]
    who = (task or f"split-{cfg['split']['name']}").replace("/", "-")
    return f"{who}__{stage}__seed{sel.get('seed', cfg['seed'])}__{digest}"


def record_dir(cfg: dict, stage: str) -> Path:
    return Path(cfg.get("records_dir") or RECORDS_DIR) / PAPER / stage


def write_record(cfg: dict, stage: str, rid: str, body: dict, started: str, t0: float) -> dict:
    rec = {"run_id": rid, "status": "completed", "paper": PAPER, "experiment": stage, **body,
           "scale": cfg["scale"], "model": cfg["model"]["name"], "config": cfg, "git": records.git_state(),
           "environment": records.environment(), "device": "cpu", "wall_time_s": round(time.time() - t0, 2),
           "started_at": started, "finished_at": _now()}
    records.write_record(record_dir(cfg, stage) / f"{rid}.json", rec)
    return rec


def existing(cfg: dict, stage: str, rid: str) -> tuple[Path, dict | None]:
    """(record path, the completed record to reuse or None when the run must happen; ``force`` re-runs)."""
    path = record_dir(cfg, stage) / f"{rid}.json"
    done = load_completed(path)
    return path, (done if done and not cfg["force"] else None)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_completed(path: Path) -> dict | None:
    return json.loads(path.read_text()) if records.is_complete(path) else None


# ----------------------------------------------------------------------------- scorer, tasks
def build(cfg: dict):
    """(scorer, tokenizer) for the config's model; the backbone is frozen."""
    from common.models import load_backbone, load_tokenizer
    from ipt.scorer import ScorerConfig, build_scorer

    name = cfg["model"]["name"]
    tok = load_tokenizer(name, cfg["model"]["hub_id"])
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    backbone = load_backbone(name, cfg["model"]["hub_id"], tok)
    backbone.eval()
    scorer = build_scorer(backbone, tok, ScorerConfig(**cfg["scorer"]),
                          cfg["model"]["pooling"] or arch.default_pooling(backbone),
                          cfg["data"]["max_seq_len"], cfg["data"]["target_len"])
    limit = arch.max_positions(backbone)
    P = cfg["prompt"]["len"]
    if limit is not None and P + cfg["data"]["max_seq_len"] > limit:
        raise UserError(f"prompt.len={P} + data.max_seq_len={cfg['data']['max_seq_len']} exceeds the model's "
                        f"{limit} positions; shorten one of them")
    return scorer, tok


def load_task(cfg: dict, scorer, name: str, few_shot_seed: int, with_test: bool = True) -> TaskData:
    """A CrossFit task's few-shot train/dev (``few_shot_seed``) and test (at most ``data.max_test``), tokenised
    by the scorer, with its per-task caches (option embeddings) prepared."""
    spec, data_dir = resolve_task(name, cfg["data"]["dir"])
    d = cfg["data"]
    parts = {r: load_examples(spec, r, data_dir, few_shot_seed) for r in ("train", "dev")}
    if with_test:
        parts["test"] = load_examples(spec, "test", data_dir, few_shot_seed, d["max_test"], d["subsample_seed"])
    roles = list(parts)
    items, extra = scorer.tokenize([e for r in roles for e in parts[r]])  # one option table for all splits
    out, s = {}, 0
    for r in roles:
        out[r] = items[s:s + len(parts[r])]
        s += len(parts[r])
    task = TaskData(name, spec.primary_metric, out["train"], out["dev"], out.get("test", []), extra)
    task.extra["metrics"] = spec.metrics
    scorer.prepare(task)
    return task


def scores(scorer, task: TaskData, items: list[dict], prompt: torch.Tensor | None) -> dict[str, float]:
    """The task's metrics on ``items`` in eval mode (no dropout); the scorer's mode is restored after."""
    was = scorer.training
    scorer.eval()
    try:
        with torch.no_grad():
            return scorer.evaluate(task, items, prompt, task.extra["metrics"])
    finally:
        scorer.train(was)


def init_prompt(scorer, prompt_len: int, init: str, seed: int) -> torch.Tensor:
    """(P, H): embeddings of random vocabulary tokens (``vocab``) or U(-0.5, 0.5) (``random``)."""
    g = torch.Generator().manual_seed(seed)
    if init == "vocab":
        V = scorer.backbone.get_input_embeddings().weight.size(0)
        ids = torch.randint(0, V, (1, prompt_len), generator=g)
        with torch.no_grad():
            return arch.embed_tokens(scorer.backbone, ids)[0].clone()  # the model's own embedding scale (BART)
    if init == "random":
        return torch.rand(prompt_len, scorer.hidden, generator=g) - 0.5
    raise UserError(f"prompt.init={init!r}; valid: vocab, random")


def full_name(task: str) -> str:
    return task if task.startswith(CROSSFIT_PREFIX) else CROSSFIT_PREFIX + task


def select_tasks(cfg: dict, names: list[str]) -> list[str]:
    """``cfg.tasks`` (if set) as a subset of ``names``; an unknown one is an error listing the valid ones."""
    if not cfg.get("tasks"):
        return names
    want = [full_name(t) for t in cfg["tasks"]]
    bad = [t for t in want if t not in names]
    if bad:
        raise UserError(f"tasks={bad} are not among this stage's tasks of split {cfg['split']['name']!r}; "
                        f"valid: {', '.join(n[len(CROSSFIT_PREFIX):] for n in names)}")
    return want


# ----------------------------------------------------------------------------- prompts on disk
def prompt_path(cfg: dict, task: str) -> Path:
    """Where stage 1 (run with ``seed`` = ``prompt_seed``) saved ``task``'s prompt."""
    pt = {**cfg, "seed": cfg["prompt_seed"]}
    return record_dir(cfg, "prompt_tuning") / f"{run_id(pt, 'prompt_tuning', task)}.safetensors"


def load_prompts(cfg: dict, tasks: list[str]) -> dict[str, torch.Tensor]:
    """Stage 1's prompt of each task; a missing one is an error naming the task (never replaced by noise)."""
    from safetensors.torch import load_file

    out, missing = {}, []
    for t in tasks:
        p = prompt_path(cfg, t)
        rec = load_completed(p.with_suffix(".json"))
        if rec is None or not p.is_file():
            missing.append(t)
            continue
        out[t] = load_file(str(p))["prompt"]
    if missing:
        raise UserError(f"no stage-1 prompt for {len(missing)} task(s): {', '.join(missing[:10])}"
                        f"{' ...' if len(missing) > 10 else ''} (looked for {prompt_path(cfg, missing[0])}); run "
                        f"`python -m ipt.prompt_tuning +split={cfg['split']['name']} seed={cfg['prompt_seed']}` "
                        f"with the same settings first")
    return out


def run_parallel(fn: Callable[[dict, str], object], cfg: dict, tasks: list[str]) -> None:
    """``fn(cfg, task)`` for every task, ``cfg.workers`` at a time (one thread each when parallel)."""
    if cfg["workers"] <= 1 or len(tasks) <= 1:
        for t in tasks:
            fn(cfg, t)
        return
    from joblib import Parallel, delayed

    Parallel(n_jobs=cfg["workers"], backend="loky", verbose=5)(delayed(_one_thread)(fn, cfg, t) for t in tasks)


def _one_thread(fn, cfg, task):
    torch.set_num_threads(1)  # two 1-thread workers beat one 2-thread run on 2 cores
    logging.basicConfig(level=logging.WARNING)
    return fn(cfg, task)


def scratch(stage: str) -> Path:
    return SCRATCH_DIR / PAPER / stage


def param_count(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())
