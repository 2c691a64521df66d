"""Task registry and data: mirror sizes, deterministic splits, clear errors, collation and bucketing."""
import json
import random

import pytest

from common.data import (
    Collator,
    DataArgs,
    LengthBucketSampler,
    carve,
    load_examples,
    load_raw,
    padding_fraction,
    read_jsonl,
    subsample,
    tokenize,
)
from common.errors import UserError
from common.paths import resolve_data_dir
from common.tasks import (
    CROSSFIT_SEEDS,
    TASK_TYPES,
    crossfit_tasks,
    get_task,
    task_names,
)

FIXED = [n for n in task_names() if not n.startswith("crossfit/")]


def _counts(mirror):
    return json.loads((mirror / "counts.json").read_text())


@pytest.mark.parametrize("name", FIXED)
def test_fixed_task_loads_with_mirror_sizes(mirror, name):
    spec = get_task(name, mirror)
    assert spec.task_type in TASK_TYPES and spec.metrics
    counts = _counts(mirror)
    sizes = {role: len(load_raw(spec, role, mirror)) for role in spec.splits}
    assert spec.text_fields and set(spec.text_fields) <= set(load_raw(spec, "train", mirror)[0])
    for role, src in spec.splits.items():
        assert sizes[role] == counts[f"{spec.folder}/{src.file}"], role
    ex = {role: load_examples(spec, role, mirror) for role in spec.splits}
    carved = [r for r, s in spec.splits.items() if s.carve]
    if carved and not spec.group_key:  # held-out dev + rest = the whole file, disjoint
        assert len(ex["train"]) + len(ex["dev"]) == sizes["train"]
    if spec.labels and spec.task_type == "classification":
        assert {e["label"] for e in ex["train"]} <= set(range(len(spec.labels)))


def test_every_crossfit_task_is_discovered_and_loads(mirror):
    summary = json.loads((mirror / "crossfit" / "_summary.json").read_text())
    names = crossfit_tasks(mirror)
    assert {n.split("/", 1)[1] for n in names} == set(summary)
    for name in names:
        spec = get_task(name, mirror)
        task = name.split("/", 1)[1]
        assert set(spec.text_fields) <= set(load_raw(spec, "train", mirror)[0])
        for seed in CROSSFIT_SEEDS:
            assert len(load_examples(spec, "train", mirror, seed)) == summary[task][f"train_{seed}"]
            assert len(load_examples(spec, "dev", mirror, seed)) == summary[task][f"dev_{seed}"]
        if "test" in spec.splits:
            assert len(load_raw(spec, "test", mirror)) == summary[task]["test"]
        else:
            assert "test" not in summary[task]


def test_crossfit_types_follow_options(mirror):
    mc = get_task("crossfit/ai2_arc", mirror)
    gen = get_task("crossfit/squad-no_context", mirror)
    assert mc.task_type == "multiple_choice" and gen.task_type == "generation"
    raw = load_raw(mc, "train", mirror)
    ex = load_examples(mc, "train", mirror)
    # the label indexes the option that IS the gold output, and the options keep the file's order
    assert [e["options"][e["label"]] for e in ex] == [r["output"] for r in raw]
    assert [e["options"] for e in ex] == [r["options"] for r in raw]


def test_e2e_train_dev_share_no_meaning_representation(mirror):
    spec = get_task("e2e_nlg", mirror)
    train = {e["source"] for e in load_examples(spec, "train", mirror)}
    dev = load_examples(spec, "dev", mirror)
    assert train and dev and not train & {e["source"] for e in dev}
    assert max(len(e["references"]) for e in dev) > 1  # grouped multi-reference evaluation


def test_carve_and_subsample_are_deterministic_and_disjoint():
    rows = list(range(1000))
    hold, rest = carve(rows, "holdout"), carve(rows, "rest")
    assert len(hold) == 100 and set(hold).isdisjoint(rest) and sorted(hold + rest) == rows
    assert carve(rows, "holdout") == hold
    assert subsample(rows, 10, seed=0) == subsample(rows, 10, seed=0) != subsample(rows, 10, seed=1)


def test_malformed_line_names_file_and_line(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text('{"sentence": "ok", "label": 1}\n{"sentence": "broken", \n')
    with pytest.raises(UserError, match=r"train\.jsonl line 2"):
        read_jsonl(f)


def test_missing_data_dir_says_where_and_how(tmp_path):
    with pytest.raises(UserError) as e:
        resolve_data_dir(str(tmp_path / "nowhere"))
    assert "nowhere" in str(e.value) and "data.dir" in str(e.value)


def test_unknown_task_lists_valid_names(mirror):
    with pytest.raises(UserError) as e:
        get_task("sst3", mirror)
    assert "sst2" in str(e.value) and "crossfit/" in str(e.value)


def test_hub_without_network_names_the_dataset():
    with pytest.raises(UserError) as e:
        load_examples(get_task("rte"), "test", "hub")
    assert "nyu-mll/glue" in str(e.value) and "data.dir" in str(e.value)


def test_token_classification_labels_first_subtoken(mirror, tokenizer):
    spec = get_task("conll2003", mirror)
    ex = load_examples(spec, "train", mirror, max_n=20)
    items = tokenize(ex, spec, tokenizer, "encoder", DataArgs(max_seq_len=128))
    for e, it in zip(ex, items):
        kept = [l for l in it["labels"] if l != -100]
        assert kept == e["tags"][: len(kept)]


def test_collator_pads_dynamically(tokenizer):
    items = [{"input_ids": [101, 5, 102], "label": 0, "index": 0}, {"input_ids": [101, 102], "label": 1, "index": 1}]
    b = Collator(tokenizer.pad_token_id, "classification")(items)
    assert b["input_ids"].shape == (2, 3) and b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


def test_bucketing_covers_every_example_once_and_cuts_padding():
    rng = random.Random(0)
    lengths = [rng.randint(5, 128) for _ in range(2000)]
    plain = list(LengthBucketSampler(lengths, 32, shuffle=True, seed=1, bucket=False))
    bucketed = list(LengthBucketSampler(lengths, 32, shuffle=True, seed=1))
    assert sorted(i for b in bucketed for i in b) == list(range(2000))
    assert padding_fraction(lengths, bucketed) < 0.5 * padding_fraction(lengths, plain)
    s = LengthBucketSampler(lengths, 32, shuffle=True, seed=1)
    s.set_epoch(2)
    assert list(s) != bucketed  # a new order every epoch


def test_sst2_mirror_is_english_glue_and_mrpc_dev_is_glues(mirror, tokenizer):
    """The mirror's SST-2 is English GLUE SST-2 (an earlier Vietnamese translation was a data error) and
    MRPC's validation is GLUE's 408 dev pairs; fail if either stops holding."""
    import re

    spec = get_task("sst2", mirror)
    for role in ("train", "test"):
        ex = load_examples(spec, role, mirror, max_n=2000)
        non_ascii = sum(bool(re.search(r"[^\x00-\x7f]", e["text_a"])) for e in ex) / len(ex)
        words = [w for e in ex for w in e["text_a"].lower().split()]
        english = sum(w in {"the", "a", "and", "of", "is", "it", "to", "'s"} for w in words) / len(words)
        unk = sum(tokenizer(e["text_a"])["input_ids"].count(tokenizer.unk_token_id) for e in ex[:500])
        assert non_ascii < 0.01 and english > 0.15 and unk < 10, (role, non_ascii, english, unk)
    # GLUE's validation sentence 0, in the hub's order
    assert load_raw(spec, "test", mirror)[0]["sentence"].startswith("it 's a charming and often affecting journey")
    assert len(load_raw(get_task("mrpc", mirror), "test", mirror)) == 408


def test_pool_tasks_split_a_crossfit_test_file_three_ways_disjointly_and_the_same_every_time():
    from common.data import POOL_DEV, POOL_TEST, load_examples
    from common.paths import DEFAULT_MIRROR
    from common.tasks import get_task

    if not DEFAULT_MIRROR.is_dir():
        pytest.skip("no data mirror beside the repository")
    for name, kind in (("pool/sick", "classification"), ("pool/commonsense_qa", "multiple_choice")):
        spec = get_task(name, DEFAULT_MIRROR)
        assert spec.task_type == kind
        parts = {r: load_examples(spec, r, DEFAULT_MIRROR) for r in ("train", "dev", "test")}
        key = (lambda e: (e["text_a"], e["label"])) if kind == "classification" else (lambda e: (e["context"], tuple(e["options"])))
        keys = {r: [key(e) for e in ex] for r, ex in parts.items()}
        n = sum(map(len, keys.values()))
        assert len(keys["test"]) == min(POOL_TEST[1], round(POOL_TEST[0] * n))
        assert len(keys["dev"]) == min(POOL_DEV[1], round(POOL_DEV[0] * n))
        assert not set(keys["train"]) & set(keys["test"]) and not set(keys["dev"]) & set(keys["test"])
        assert keys["test"] == [key(e) for e in load_examples(spec, "test", DEFAULT_MIRROR)]
    with pytest.raises(UserError, match="unknown pool"):
        get_task("pool/no_such_task", DEFAULT_MIRROR)
