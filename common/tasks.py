"""Task registry: one :class:`TaskSpec` per task, the single source of truth for how to read it.

Every task maps its raw rows (hub schema == mirror schema) to one of five example shapes:

- ``classification`` / ``regression``: ``{"text_a", "text_b" (or None), "label"}``
- ``token_classification``: ``{"tokens", "tags"}``
- ``multiple_choice`` (option scoring): ``{"context", "options", "label"}`` (label = option index)
- ``generation``: ``{"source", "target", "references"}``

Split roles are ``train`` / ``dev`` (model selection, hyperparameter tuning) / ``test`` (reported).
GLUE's test labels are hidden, so GLUE ``test`` is the official validation set and ``dev`` is a
fixed held-out part of train (the papers report GLUE dev numbers). FewGLUE: train / dev32 /
official validation. CrossFit: ``<task>_16_<seed>_{train,dev}`` / ``<task>_test``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

from .errors import UserError

TASK_TYPES = ("classification", "regression", "token_classification", "multiple_choice", "generation")
CROSSFIT_PREFIX = "crossfit/"
POOL_PREFIX = "pool/"  # a CrossFit task's labelled test file used as a pool: split into train / dev / test
CROSSFIT_SEEDS = (13, 21, 42, 87, 100)
CONLL_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


@dataclass(frozen=True)
class Split:
    """Where one split role comes from.

    ``carve`` derives two disjoint parts of one file: ``"rest"`` keeps all rows but the held-out
    ones, ``"holdout"`` keeps only them (see :func:`common.data.carve`).
    """

    file: str | None  # file name in the task's mirror folder; None = not in the mirror
    hub_split: str | None
    carve: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    name: str
    family: str
    task_type: str
    folder: str  # relative to the data directory
    hub_id: str | None
    hub_config: str | None
    splits: dict[str, Split]
    format: Callable[[dict], dict]
    labels: tuple[str, ...] | None = None  # class names (classification / token tags); None otherwise
    metrics: tuple[str, ...] = ("accuracy",)  # first = the one best checkpoints are chosen on
    hub_splits: dict[str, Split] | None = None  # when the hub's splits differ from the mirror's
    group_key: str | None = None  # example field that groups rows (MultiRC question, E2E meaning repr.)
    text_fields: tuple[str, ...] = ()  # raw fields the formatter reads (label field aside)
    note: str = ""

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def num_labels(self) -> int:
        if self.task_type == "regression":
            return 1
        return len(self.labels) if self.labels else 0


# ----------------------------------------------------------------------------- formatters
def _single(field_a: str):
    return lambda r: {"text_a": r[field_a], "text_b": None, "label": r["label"]}


def _pair(field_a: str, field_b: str):
    return lambda r: {"text_a": r[field_a], "text_b": r[field_b], "label": r["label"]}


def _copa(r: dict) -> dict:
    # The connective turns COPA's cause/effect question into a sentence the option completes.
    joiner = {"cause": "because", "effect": "so"}[r["question"]]
    return {"context": f"{r['premise']} {joiner}", "options": [r["choice1"], r["choice2"]], "label": r["label"]}


def _wic(r: dict) -> dict:
    return {"text_a": f"{r['word']}: {r['sentence1']}", "text_b": r["sentence2"], "label": r["label"]}


def _wsc(r: dict) -> dict:
    query = f'Does "{r["span2_text"]}" refer to "{r["span1_text"]}"?'
    return {"text_a": r["text"], "text_b": query, "label": r["label"]}


def _multirc(r: dict) -> dict:
    idx = r["idx"]
    return {"text_a": r["paragraph"], "text_b": f"{r['question']} {r['answer']}", "label": r["label"],
            "group": f"{idx['paragraph']}-{idx['question']}"}


def _conll(r: dict) -> dict:
    return {"tokens": list(r["tokens"]), "tags": list(r["ner_tags"])}


def _e2e(r: dict) -> dict:
    return {"source": r["meaning_representation"], "target": r["human_reference"],
            "group": r["meaning_representation"]}


def _crossfit_mc(r: dict) -> dict:
    if r["output"] not in r["options"]:
        raise ValueError(f"output {r['output']!r} is not one of its options {r['options']}")
    return {"context": r["input"], "options": list(r["options"]), "label": r["options"].index(r["output"])}


def _crossfit_gen(r: dict) -> dict:
    return {"source": r["input"], "target": r["output"]}


# ----------------------------------------------------------------------------- registry
def _glue(name, task_type, fields, labels, metrics, note=""):
    # GLUE test labels are hidden: report on validation ("test"), select on a held-out part of train.
    splits = {"train": Split("train.jsonl", "train", "rest"), "dev": Split("train.jsonl", "train", "holdout"),
              "test": Split("validation.jsonl", "validation")}
    fmt = _single(*fields) if len(fields) == 1 else _pair(*fields)
    return TaskSpec(name, "glue", task_type, f"glue/{name}", "nyu-mll/glue", name, splits, fmt, labels, metrics,
                    text_fields=fields, note=note)


def _super_glue(name, task_type, fields, fmt, labels, metrics, folder=None, group_key=None):
    folder = folder or name
    splits = {"train": Split("train.jsonl", "train"), "dev": Split("dev32.jsonl", None),
              "test": Split("validation.jsonl", "validation")}
    # The hub has the full train set and no dev32: hold out part of train instead.
    hub = {"train": Split(None, "train", "rest"), "dev": Split(None, "train", "holdout"),
           "test": Split(None, "validation")}
    fmt = fmt or _pair(*fields)
    return TaskSpec(name, "super_glue", task_type, f"super_glue/{folder}", "aps/super_glue", folder, splits, fmt,
                    labels, metrics, hub_splits=hub, group_key=group_key, text_fields=fields)


_ENT = ("entailment", "not_entailment")
_FIXED: dict[str, TaskSpec] = {t.name: t for t in [
    _glue("sst2", "classification", ("sentence",), ("negative", "positive"), ("accuracy",)),
    _glue("cola", "classification", ("sentence",), ("unacceptable", "acceptable"), ("mcc", "accuracy")),
    _glue("rte", "classification", ("sentence1", "sentence2"), _ENT, ("accuracy",)),
    _glue("mrpc", "classification", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
          ("accuracy", "f1")),
    _glue("stsb", "regression", ("sentence1", "sentence2"), None, ("pearson", "spearman")),
    _glue("wnli", "classification", ("sentence1", "sentence2"), ("not_entailment", "entailment"),
          ("accuracy",)),
    _super_glue("boolq", "classification", ("question", "passage"), None, ("False", "True"), ("accuracy",)),
    _super_glue("cb", "classification", ("premise", "hypothesis"), None, ("entailment", "contradiction", "neutral"),
                ("accuracy", "macro_f1")),
    _super_glue("copa", "multiple_choice", ("premise", "question", "choice1", "choice2"), _copa, None, ("accuracy",)),
    _super_glue("superglue_rte", "classification", ("premise", "hypothesis"), None, _ENT, ("accuracy",),
                folder="rte"),
    _super_glue("wic", "classification", ("word", "sentence1", "sentence2"), _wic, ("False", "True"), ("accuracy",)),
    _super_glue("wsc", "classification", ("text", "span1_text", "span2_text"), _wsc, ("False", "True"), ("accuracy",)),
    _super_glue("multirc", "classification", ("paragraph", "question", "answer"), _multirc, ("False", "True"), ("f1a", "em"), group_key="group"),
    TaskSpec("conll2003", "conll", "token_classification", "conll2003", "eriktks/conll2003", None,
             {r: Split(f"{f}.jsonl", f) for r, f in [("train", "train"), ("dev", "validation"), ("test", "test")]},
             _conll, CONLL_TAGS, ("entity_f1",), text_fields=("tokens",)),
    TaskSpec("e2e_nlg", "e2e", "generation", "e2e_nlg", "tuetschek/e2e_nlg", None,
             {"train": Split("validation.jsonl", "train", "rest"), "dev": Split("validation.jsonl", "train", "holdout"),
              "test": Split("test.jsonl", "test")},
             _e2e, None, ("bleu", "nist", "meteor", "rougeL_e2e", "cider"), group_key="group",
             text_fields=("meaning_representation", "human_reference"),
             hub_splits={"train": Split(None, "train"), "dev": Split(None, "validation"), "test": Split(None, "test")},
             note="The mirror has no E2E train split: train/dev are disjoint meaning representations of the "
                  "official validation set."),
]}

# CrossFit metric names (IPT paper's tasks_120.tsv) -> ours.
_CROSSFIT_METRIC = {"ACC": "accuracy", "Classification-F1": "macro_f1", "EM": "em", "QA-F1": "token_f1",
                    "Rouge-L": "rougeL", "Matthew-Correlation": "mcc"}


@lru_cache(maxsize=None)
def _crossfit_metric_table() -> dict[str, str]:
    return json.loads((Path(__file__).with_name("crossfit_metrics.json")).read_text())


def crossfit_spec(task: str, folder: Path) -> TaskSpec:
    """Spec of a CrossFit task discovered in ``folder`` (the type comes from its first training row)."""
    first = folder / f"{task}_16_{CROSSFIT_SEEDS[0]}_train.jsonl"
    if not first.is_file():
        raise UserError(f"CrossFit task folder {folder} has no {first.name}")
    with first.open() as fh:
        row = json.loads(fh.readline())
    has_options = bool(row.get("options"))
    listed = _crossfit_metric_table().get(task)
    if has_options:
        # Not in IPT's list: a fixed label set is classification (macro-F1), else multiple choice (accuracy).
        primary = _CROSSFIT_METRIC[listed] if listed else "macro_f1"
        metrics = tuple(dict.fromkeys((primary, "accuracy", "macro_f1")))
    else:
        primary = _CROSSFIT_METRIC[listed] if listed else "em"
        metrics = tuple(dict.fromkeys((primary, "em", "token_f1", "rougeL")))
    splits = {"train": Split("{task}_16_{seed}_train.jsonl", None), "dev": Split("{task}_16_{seed}_dev.jsonl", None)}
    if (folder / f"{task}_test.jsonl").is_file():
        splits["test"] = Split("{task}_test.jsonl", None)
    return TaskSpec(CROSSFIT_PREFIX + task, "crossfit", "multiple_choice" if has_options else "generation",
                    f"crossfit/{task}", None, None, splits, _crossfit_mc if has_options else _crossfit_gen,
                    None, metrics, text_fields=("input", "options") if has_options else ("input",),
                    note="" if listed else "metric chosen by rule (task not in IPT's list)")


def pool_spec(task: str, folder: Path) -> TaskSpec:
    """``pool/<task>``: a CrossFit task's test file as a labelled pool, split once into train / dev / test
    (:func:`common.data.carve`). A fixed option set (NLI, yes/no) is classification over those labels, else
    multiple choice (option scoring)."""
    test = folder / f"{task}_test.jsonl"
    if not test.is_file():
        raise UserError(f"pool/{task}: no labelled pool {test.name} in {folder}")
    option_sets = set()
    with test.open() as fh:
        for line in fh:
            if line.strip():
                option_sets.add(tuple(json.loads(line).get("options") or ()))
    if option_sets == {()}:
        raise UserError(f"pool/{task}: the rows have no options; pools take classification / multiple-choice tasks")
    splits = {r: Split(f"{task}_test.jsonl", None, f"pool_{r}") for r in ("train", "dev", "test")}
    if len(option_sets) == 1:
        labels = next(iter(option_sets))
        fmt = lambda r: {"text_a": r["input"], "text_b": None, "label": labels.index(r["output"])}  # noqa: E731
        return TaskSpec(POOL_PREFIX + task, "pool", "classification", f"crossfit/{task}", None, None, splits, fmt,
                        labels, ("accuracy", "macro_f1"), text_fields=("input",))
    return TaskSpec(POOL_PREFIX + task, "pool", "multiple_choice", f"crossfit/{task}", None, None, splits,
                    _crossfit_mc, None, ("accuracy",), text_fields=("input", "options"))


def crossfit_tasks(data_dir: Path | str) -> list[str]:
    """CrossFit tasks found in the mirror (discovered, not hard-coded)."""
    root = Path(data_dir) / "crossfit" if not isinstance(data_dir, str) or data_dir != "hub" else None
    if root is None or not root.is_dir():
        return []
    return sorted(CROSSFIT_PREFIX + p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))


def task_names(data_dir: Path | str | None = None) -> list[str]:
    names = list(_FIXED)
    if data_dir is not None:
        names += crossfit_tasks(data_dir)
    return names


def _unknown_task(name: str, data_dir) -> UserError:
    cf = crossfit_tasks(data_dir) if data_dir is not None else []
    msg = f"unknown task {name!r}; valid tasks: {', '.join(_FIXED)}"
    if cf:
        msg += (f"; and {len(cf)} CrossFit tasks in the mirror, named crossfit/<task> "
                f"(e.g. {', '.join(cf[:5])}, ...; list them all with `python -m common.tasks`)")
    return UserError(msg)


def get_task(name: str, data_dir: Path | str | None = None) -> TaskSpec:
    if name in _FIXED:
        return _FIXED[name]
    if name.startswith(CROSSFIT_PREFIX):
        task = name[len(CROSSFIT_PREFIX):]
        if data_dir is None or data_dir == "hub":
            raise UserError(f"CrossFit task {name!r} is read only from a local mirror (data.dir); "
                            f"there is no hub id for CrossFit's few-shot splits")
        folder = Path(data_dir) / "crossfit" / task
        if not folder.is_dir():
            raise _unknown_task(name, data_dir)
        return crossfit_spec(task, folder)
    if name.startswith(POOL_PREFIX):
        task = name[len(POOL_PREFIX):]
        folder = Path(data_dir) / "crossfit" / task if data_dir not in (None, "hub") else None
        if folder is None or not folder.is_dir():
            raise UserError(f"unknown pool {name!r}: pools are CrossFit tasks' test files in a local mirror, "
                            f"named pool/<crossfit task> (e.g. pool/glue-mnli, pool/scitail)")
        return pool_spec(task, folder)
    raise _unknown_task(name, data_dir)


if __name__ == "__main__":  # python -m common.tasks: list every task with its type and metrics
    from .paths import resolve_data_dir

    d = resolve_data_dir(None)
    for n in task_names(d):
        t = get_task(n, d)
        print(f"{n:45s} {t.task_type:22s} {','.join(t.metrics)}")
