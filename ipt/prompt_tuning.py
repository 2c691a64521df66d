"""IPT stage 1 (Qin et al. §3.1): tune one soft prompt per task on a frozen model.

    python -m ipt.prompt_tuning +split=random [workers=2] [tasks=[glue-sst2]] [scale=smoke]

Every training and test task of the split: few-shot sample ``few_shot_seed`` (100) for train / dev,
the prompt chosen on dev, then scored on the task's test file (at most ``data.max_test`` examples).
Each task writes its prompt (safetensors, the only trained tensor) and its run record to
``results/records/ipt/prompt_tuning/``; the record also holds the zero-shot floor (no prompt). Tasks with
a completed record are skipped, so an interrupted run resumes.
"""
from __future__ import annotations

import logging
import time

from torch import nn

from common.multitask import StageConfig, fit_multitask, save_tensors
from common.trainer import set_seed
from ipt import workbench as W

log = logging.getLogger("ipt.prompt_tuning")
STAGE = "prompt_tuning"


def tune_task(cfg: dict, task_name: str) -> dict:
    rid = W.run_id(cfg, STAGE, task_name)
    path, done = W.existing(cfg, STAGE, rid)
    if done:
        return done
    t0, started = time.time(), W._now()
    scorer, _ = W.build(cfg)
    task = W.load_task(cfg, scorer, task_name, cfg["few_shot_seed"])
    set_seed(cfg["seed"])
    prompt = nn.Parameter(W.init_prompt(scorer, cfg["prompt"]["len"], cfg["prompt"]["init"], cfg["seed"]))
    zero = {"zero_shot_dev": W.scores(scorer, task, task.dev, None), "zero_shot_test": W.scores(scorer, task, task.test, None)}
    out = fit_multitask(scorer, {"prompt": prompt}, [task], lambda t, b: scorer.loss(t, b, prompt),
                        lambda t, items: W.scores(scorer, t, items, prompt), StageConfig.of(cfg["pt"]), cfg["seed"])
    test = W.scores(scorer, task, task.test, prompt.detach())
    save_tensors({"prompt": prompt}, path.with_suffix(".safetensors"))  # before the record: a record implies its prompt
    body = {"task": task_name, "task_type": "multiple_choice" if scorer.needs_options else "text_to_text",
            "method": "prompt_tuning", "seed": cfg["seed"], "primary_metric": task.primary_metric,
            "data_sizes": {"train": len(task.train), "dev": len(task.dev), "test": len(task.test)},
            "trainable_params": prompt.numel(), "total_params": prompt.numel() + W.param_count(scorer),
            "steps": out["steps"], "best": {"step": out["best"]["step"]}, "still_improving": out["still_improving"],
            "stopped_early": out["stopped_early"], "history": out["history"],
            "final": {"dev": out["best"]["dev"][task_name], "test": test, **zero}}
    rec = W.write_record(cfg, STAGE, rid, body, started, t0)
    log.info("%s: dev %.1f test %.1f (zero-shot test %.1f)", task_name, out["best"]["dev"][task_name][task.primary_metric],
             test[task.primary_metric], zero["zero_shot_test"][task.primary_metric])
    return rec


def stage(cfg: dict) -> None:
    from common.data import resolve_data_dir
    from ipt.scorer import ScorerConfig
    from ipt.splits import resolve_split

    needs_options = ScorerConfig(**cfg["scorer"]).kind == "cosine"
    split = resolve_split(cfg["split"], resolve_data_dir(cfg["data"]["dir"]), needs_options)
    tasks = W.select_tasks(cfg, split.train + split.test)
    log.info("split %s: %d training + %d test tasks (%d dropped); tuning %d prompts", split.name, len(split.train),
             len(split.test), len(split.dropped), len(tasks))
    W.build(cfg)  # fail on a bad model / length before any worker starts
    W.run_parallel(tune_task, cfg, tasks)


main = W.entry(stage, "ipt.prompt_tuning")

if __name__ == "__main__":
    main()
