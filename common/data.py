"""Reading tasks (local mirror or hub), deterministic subsampling, cached tokenisation, collation.

The mirror is read with a small JSON Lines reader of our own so that a malformed line is reported
with its file and line number; the hub path goes through ``datasets.load_dataset`` and yields rows of
the same schema.
"""
from __future__ import annotations

import hashlib
import json
import logging
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from .errors import UserError
from .paths import HUB, SCRATCH_DIR, resolve_data_dir
from .records import atomic_target
from .tasks import CROSSFIT_SEEDS, TaskSpec, get_task

log = logging.getLogger(__name__)
HOLDOUT_FRACTION, HOLDOUT_MAX = 0.1, 1000  # dev carved from train: 10 %, at most 1000 rows
# A labelled pool (a CrossFit test file) split three ways: test 20 % (at most 1000), dev 10 % (at most 500),
# train the rest; test and dev stay the same size whatever the train budget.
POOL_TEST, POOL_DEV = (0.2, 1000), (0.1, 500)


# ----------------------------------------------------------------------------- raw rows
def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"malformed JSON in {path} line {lineno}: {e.msg} (column {e.colno})") from None
            if not isinstance(row, dict):
                raise UserError(f"malformed row in {path} line {lineno}: expected a JSON object")
            rows.append(row)
    return rows


def carve(rows: list, part: str | None) -> list:
    """Split ``rows`` into a fixed held-out part and the rest (same partition every time); ``pool_*``
    parts split a labelled pool three ways (:data:`POOL_TEST` / :data:`POOL_DEV`, the rest train)."""
    if part is None:
        return rows
    if part.startswith("pool_"):
        return _carve_pool(rows, part)
    n_hold = min(HOLDOUT_MAX, max(1, round(HOLDOUT_FRACTION * len(rows))))
    perm = list(range(len(rows)))
    random.Random(0).shuffle(perm)  # seed fixed on purpose: the partition is part of the task definition
    hold = set(perm[:n_hold])
    keep = (lambda i: i in hold) if part == "holdout" else (lambda i: i not in hold)
    return [r for i, r in enumerate(rows) if keep(i)]


def _carve_pool(rows: list, part: str) -> list:
    n_test = min(POOL_TEST[1], round(POOL_TEST[0] * len(rows)))
    n_dev = min(POOL_DEV[1], round(POOL_DEV[0] * len(rows)))
    perm = list(range(len(rows)))
    random.Random(0).shuffle(perm)  # fixed: the partition is part of the task definition
    take = {"pool_test": perm[:n_test], "pool_dev": perm[n_test:n_test + n_dev],
            "pool_train": perm[n_test + n_dev:]}[part]
    return [rows[i] for i in sorted(take)]


def _carve_grouped(examples: list[dict], part: str | None, key: str) -> list[dict]:
    """Like :func:`carve` but keeps every group (e.g. one E2E meaning representation) on one side."""
    if part is None:
        return examples
    groups = list(dict.fromkeys(e[key] for e in examples))
    chosen = set(carve(groups, part))
    return [e for e in examples if e[key] in chosen]


def splits_of(spec: TaskSpec, data_dir: Path | str) -> dict:
    """The split table that applies: the hub's when reading from the hub and it differs, else the mirror's."""
    return spec.hub_splits if (data_dir == HUB and spec.hub_splits) else spec.splits


def load_raw(spec: TaskSpec, role: str, data_dir: Path | str, few_shot_seed: int = 13) -> list[dict]:
    """Raw rows of one split role, before formatting, from the mirror or the hub."""
    use_hub = data_dir == HUB
    splits = splits_of(spec, data_dir)
    if role not in splits:
        raise UserError(f"task {spec.name!r} has no {role!r} split; it has: {', '.join(splits)}")
    src = splits[role]
    if use_hub:
        return _load_hub(spec, src.hub_split)
    folder = Path(data_dir) / spec.folder
    if not folder.is_dir():
        raise UserError(f"task folder not found: {folder} (data.dir={data_dir}). Is data.dir the mirror's root?")
    if spec.family == "crossfit" and few_shot_seed not in CROSSFIT_SEEDS:
        raise UserError(f"task.few_shot_seed={few_shot_seed} not available; CrossFit seeds: {CROSSFIT_SEEDS}")
    name = src.file.format(task=spec.folder.split("/")[-1], seed=few_shot_seed)
    return read_jsonl(folder / name)


def _load_hub(spec: TaskSpec, split: str | None) -> list[dict]:
    if spec.hub_id is None or split is None:
        raise UserError(f"task {spec.name!r} has no hub source for this split; use a local mirror (data.dir)")
    import datasets  # heavy import, only on the hub path

    try:
        ds = datasets.load_dataset(spec.hub_id, spec.hub_config, split=split)
    except Exception as e:  # network, auth, missing dataset: one clear message
        raise UserError(
            f"could not load dataset {spec.hub_id!r} (config {spec.hub_config!r}, split {split!r}) from the hub: "
            f"{type(e).__name__}: {str(e)[:200]}. Offline, point data.dir at the local mirror "
            f"(e.g. ../shared/data)."
        ) from None
    return [dict(r) for r in ds]


def subsample(items: list, n: int | None, seed: int = 0) -> list:
    """The first ``n`` of a fixed permutation: same subset for every training seed."""
    if n is None or n >= len(items):
        return items
    perm = list(range(len(items)))
    random.Random(seed).shuffle(perm)
    return [items[i] for i in sorted(perm[:n])]


def load_examples(spec: TaskSpec, role: str, data_dir: Path | str, few_shot_seed: int = 13,
                  max_n: int | None = None, subsample_seed: int = 0) -> list[dict]:
    """Formatted examples of a split role (see :mod:`common.tasks` for their shapes)."""
    src = splits_of(spec, data_dir)[role]
    raw = load_raw(spec, role, data_dir, few_shot_seed)
    examples = []
    for i, row in enumerate(raw):
        try:
            examples.append(spec.format(row))
        except (KeyError, ValueError, TypeError) as e:
            raise UserError(f"task {spec.name!r}, split {role!r}, row {i + 1}: cannot read it ({type(e).__name__}: "
                            f"{e}); keys present: {sorted(row)}") from None
    if spec.group_key:
        examples = _carve_grouped(examples, src.carve, spec.group_key)
    else:
        examples = carve(examples, src.carve)
    if spec.task_type == "generation" and role != "train" and spec.group_key:
        examples = _group_references(examples)  # E2E: one evaluation example per MR, all its references
    elif spec.task_type == "generation":
        for e in examples:
            e["references"] = [e["target"]]
    return subsample(examples, max_n, subsample_seed)


def _group_references(examples: list[dict]) -> list[dict]:
    """One evaluation example per source, with all its references (E2E has several per MR)."""
    merged: dict[str, dict] = {}
    for e in examples:
        m = merged.setdefault(e["source"], {**e, "references": []})
        m["references"].append(e["target"])
    return list(merged.values())


# ----------------------------------------------------------------------------- tokenisation
@dataclass
class DataArgs:
    max_seq_len: int = 128
    target_len: int = 64  # generation targets


def _fingerprint(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tokenize(examples: list[dict], spec: TaskSpec, tokenizer, lm_kind: str, args: DataArgs,
             cache_key: str | None = None) -> list[dict]:
    """Token ids for each example; ``lm_kind`` is ``encoder``, ``seq2seq`` or ``causal``.

    With ``cache_key`` the result is cached under the scratch folder (keyed by the key, the
    tokenizer, the lengths and the examples' own hash).
    """
    if cache_key is not None:
        key = _fingerprint(cache_key, tokenizer.name_or_path, len(tokenizer), lm_kind, args.__dict__,
                           hashlib.sha1(pickle.dumps(examples)).hexdigest())
        path = SCRATCH_DIR / "cache" / "tokens" / f"{key}.pkl"
        if path.is_file():
            with path.open("rb") as fh:
                return pickle.load(fh)
    out = [_tokenize_one(e, spec, tokenizer, lm_kind, args) for e in examples]
    for i, o in enumerate(out):
        o["index"] = i
    if cache_key is not None:
        with atomic_target(path) as tmp, tmp.open("wb") as fh:
            pickle.dump(out, fh)
    return out


def _tokenize_one(e: dict, spec: TaskSpec, tok, lm_kind: str, args: DataArgs) -> dict:
    L = args.max_seq_len
    t = spec.task_type
    if t in ("classification", "regression"):
        enc = tok(e["text_a"], e["text_b"], truncation="longest_first" if e["text_b"] else True, max_length=L)
        label = float(e["label"]) if t == "regression" else int(e["label"])
        return {"input_ids": enc["input_ids"], "label": label, **({"group": e["group"]} if "group" in e else {})}
    if t == "multiple_choice":
        encs = [tok(e["context"], o, truncation="longest_first", max_length=L)["input_ids"] for o in e["options"]]
        return {"choice_ids": encs, "label": int(e["label"])}
    if t == "token_classification":
        enc = tok(e["tokens"], is_split_into_words=True, truncation=True, max_length=L)
        labels, prev = [], None
        for w in enc.word_ids():  # label the first sub-token of each word, ignore the rest (-100)
            labels.append(-100 if w is None or w == prev else int(e["tags"][w]))
            prev = w
        return {"input_ids": enc["input_ids"], "labels": labels, "n_words": len(e["tokens"])}
    if t == "generation":
        src = tok(e["source"], truncation=True, max_length=L)["input_ids"]
        tgt = tok(e["target"], add_special_tokens=False, truncation=True, max_length=args.target_len)["input_ids"]
        eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        refs = {"references": e["references"]}
        if lm_kind == "seq2seq":
            return {"input_ids": src, "labels": tgt + [eos], "prompt_ids": src, **refs}
        if lm_kind == "causal":
            # source, separator (eos), target, eos; the loss covers the target and its eos only
            prompt = src + [eos]
            return {"input_ids": prompt + tgt + [eos], "labels": [-100] * len(prompt) + tgt + [eos],
                    "prompt_ids": prompt, **refs}
        raise UserError(f"task {spec.name!r} is a generation task and needs a seq2seq or causal LM; "
                        f"the model is an encoder (try model=tiny-bart, tiny-t5, tiny-gpt2 or a hub LM)")
    raise ValueError(t)


def seq_len(item: dict) -> int:
    if "choice_ids" in item:
        return max(len(c) for c in item["choice_ids"]) * len(item["choice_ids"])
    return len(item["input_ids"])


# ----------------------------------------------------------------------------- batching
class Collator:
    """Dynamic padding to the longest sequence in the batch; pads on the right."""

    def __init__(self, pad_token_id: int, task_type: str):
        self.pad, self.task_type = pad_token_id, task_type

    def _pad(self, seqs: Sequence[Sequence[int]], value: int) -> torch.Tensor:
        width = max(len(s) for s in seqs)
        return torch.tensor([list(s) + [value] * (width - len(s)) for s in seqs], dtype=torch.long)

    def __call__(self, items: list[dict]) -> dict:
        batch: dict = {"index": torch.tensor([it["index"] for it in items])}
        if self.task_type == "multiple_choice":
            flat = [c for it in items for c in it["choice_ids"]]  # (sum of options) sequences
            batch["input_ids"] = self._pad(flat, self.pad)
            batch["attention_mask"] = self._pad([[1] * len(c) for c in flat], 0)
            batch["n_choices"] = torch.tensor([len(it["choice_ids"]) for it in items])
            batch["labels"] = torch.tensor([it["label"] for it in items])
            return batch
        batch["input_ids"] = self._pad([it["input_ids"] for it in items], self.pad)  # (B, L)
        batch["attention_mask"] = self._pad([[1] * len(it["input_ids"]) for it in items], 0)
        if self.task_type in ("token_classification", "generation"):
            batch["labels"] = self._pad([it["labels"] for it in items], -100)
        else:
            dtype = torch.float if self.task_type == "regression" else torch.long
            batch["labels"] = torch.tensor([it["label"] for it in items], dtype=dtype)
        return batch


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar length: shuffle, sort within pools of ``pool_batches`` batches, shuffle batches.

    Cuts padding (see ``common.bench``) while keeping batches random; ``shuffle=False`` sorts the
    whole split by length (evaluation: predictions are put back in order by ``index``). The pool is
    small on purpose: a pool as large as the training set sorts all of it, and then every seed and
    epoch sees nearly the same batches (on RTE's train set, two seeds share 27.5 % of their in-batch
    pairs with a 50-batch pool, 7.5 % with 8 batches, 1.5 % with random batches; padding 2.3 / 9.1 / 48 %).
    Small sets get smaller pools (at least ``MIN_POOLS`` of them).
    """

    MIN_POOLS = 8

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int = 0,
                 pool_batches: int = 8, bucket: bool = True):
        self.lengths, self.batch_size, self.shuffle = list(lengths), batch_size, shuffle
        n_batches = max(1, len(self.lengths) // batch_size)
        # at least MIN_POOLS pools: with fewer, sorting fixes which examples share a batch whatever the seed
        pool_batches = max(1, min(pool_batches, n_batches // self.MIN_POOLS))
        self.seed, self.pool, self.bucket, self.epoch = seed, pool_batches * batch_size, bucket, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        idx = list(range(len(self.lengths)))
        rng = random.Random(self.seed * 100_003 + self.epoch)
        if self.shuffle:
            rng.shuffle(idx)
        if self.bucket:
            if self.shuffle:
                idx = [i for s in range(0, len(idx), self.pool)
                       for i in sorted(idx[s:s + self.pool], key=self.lengths.__getitem__)]
            else:
                idx.sort(key=self.lengths.__getitem__)
        batches = [idx[s:s + self.batch_size] for s in range(0, len(idx), self.batch_size)]
        if self.shuffle and self.bucket:
            rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


def padding_fraction(lengths: Sequence[int], batches: list[list[int]]) -> float:
    """Share of padded positions over all positions in ``batches``."""
    real = sum(lengths[i] for b in batches for i in b)
    total = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1.0 - real / total if total else 0.0


# ----------------------------------------------------------------------------- entry
def resolve_task(name: str, data_dir_cfg: str | None) -> tuple[TaskSpec, Path | str]:
    data_dir = resolve_data_dir(data_dir_cfg)
    return get_task(name, data_dir), data_dir
