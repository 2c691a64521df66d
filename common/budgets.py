"""The `small` scale's budgets per task and method: training-set size, epochs, dev evaluations.

``conf/config.yaml`` reads them through the ``budget`` resolver, so ``--cfg job`` and every run record
show the resolved numbers::

    data.max_train: ${budget:max_train,${task.name},${method.name}}

An experiment file may still override any of them (``data.max_train: 2000``); ``scale=smoke`` and
``scale=paper`` replace them. How the numbers were chosen: full training sets where affordable (RTE,
MRPC, STS-B, CoLA); SST-2 and CoNLL-2003 subsampled; epochs such that the dev curve has flattened
(``still_improving`` in every run record says whether the best dev evaluation was the last one), with
methods that freeze the backbone given more epochs than full fine-tuning; tiny training sets (CB, SICK's pool)
given a floor of optimiser steps and ``evals_per_run`` evaluations spread over the run. The calibration table
(``results/common/calibration.csv``) checks that full fine-tuning lands near MiniLM's known scores.
"""
from __future__ import annotations

EVALS_PER_RUN = 10  # dev evaluations per run (at least one per epoch): enough points to see the curve flatten

# Task -> data sizes (None = all) and full fine-tuning's epochs. Dev: GLUE's held-out part of train
# (<= 1000), CoNLL's validation capped (it is evaluated many times per run); test: always all of it.
TASKS: dict[str, dict] = {
    "rte": {"max_train": None, "max_dev": None, "epochs": 5},
    "mrpc": {"max_train": None, "max_dev": None, "epochs": 3},
    "stsb": {"max_train": None, "max_dev": None, "epochs": 3},
    # CoLA: at 3 epochs every FT run's dev MCC was still rising 2-6 points per quarter epoch at the end
    # (calibration records at commit 52b15b0, since removed); 8 epochs
    "cola": {"max_train": None, "max_dev": None, "epochs": 8},
    "sst2": {"max_train": 10000, "max_dev": None, "epochs": 3},
    "conll2003": {"max_train": 5000, "max_dev": 1000, "epochs": 3},
    # CosmosQA: four options over a long passage cost 4 sequences of ~128 tokens per example
    "pool/cosmos_qa": {"max_train": 1000, "max_dev": 300, "epochs": 3},
    # Tiny training sets: per epoch there are one (CB: FewGLUE's 32 examples at batch 32) or 11 (SICK's pool,
    # 346 examples) optimiser steps, so the default 3 epochs (6 for frozen-backbone methods) ended with the lr
    # decayed to 0 after 3-6 steps (CB) or patience stopping at step 28 (SICK) before anything had learnt
    # (records in results/records/adapters/superseded/). A floor of ~100 steps for FT (x2 for the others),
    # with dev evaluated `evals_per_run` times over the run so that patience spans 40 % of it, not 4 steps.
    "cb": {"max_train": None, "max_dev": None, "epochs": 100, "evals_per_run": EVALS_PER_RUN},
    "pool/sick": {"max_train": 2000, "max_dev": 500, "epochs": 10, "evals_per_run": EVALS_PER_RUN},
}
DEFAULT = {"max_train": 2000, "max_dev": 500, "epochs": 3}  # tasks without a calibrated entry
# Methods that train a small part of a frozen backbone move more slowly per step than full fine-tuning:
# they get this many times FT's epochs (prompt tuning, whose only input is the soft prompt, the most).
EPOCH_FACTOR = {"full_ft": 1, "top_k": 1, "prompt_tuning": 3}
PEFT_EPOCH_FACTOR = 2  # every other method (bitfit, lora, deep_prompt, adapters, lst, head_only, ...)
# Methods given extra epochs stop once `patience` dev evaluations in a row bring no new best (the extra epochs
# are an upper bound, not a cost paid when the curve is flat); full fine-tuning runs its epochs out.
PATIENCE = 4


def budget(key: str, task: str, method: str):
    """One budget number of the `small` scale for (task, method)."""
    t = TASKS.get(task, DEFAULT)
    epochs = t["epochs"] * EPOCH_FACTOR.get(method, PEFT_EPOCH_FACTOR)
    if key == "epochs":
        return epochs
    if key == "evals_per_epoch":
        return max(1, -(-EVALS_PER_RUN // epochs))  # ceil
    if key == "evals_per_run":  # null = evaluate per epoch (evals_per_epoch)
        return t.get("evals_per_run")
    if key == "patience":
        return None if EPOCH_FACTOR.get(method, PEFT_EPOCH_FACTOR) == 1 else PATIENCE
    if key in ("max_train", "max_dev"):
        return t[key]
    raise KeyError(f"no budget {key!r}; budgets: epochs, evals_per_epoch, evals_per_run, patience, "
                   "max_train, max_dev")


def register_resolver() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("budget"):
        OmegaConf.register_new_resolver("budget", budget)
