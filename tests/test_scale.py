"""The recalibrated `small` scale: pooling, standardised regression targets, the head's own lr, dev
evaluation schedule and convergence flag, batch orders that differ across seeds, budgets, the tokenised
cache keyed by content."""
import copy
import itertools
import random

import pytest
import torch

from common import arch
from common.config import TrainerConfig
from common.data import DataArgs, LengthBucketSampler, load_examples, tokenize
from common.errors import UserError
from common.methods import attach_method
from common.models import build_task_model
from common.trainer import eval_schedule, param_groups


def encode(tok, texts, pad_to=None):
    enc = tok(texts, padding="max_length" if pad_to else True, max_length=pad_to, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@pytest.mark.parametrize("family,pooling", [(f, p) for f in ("tiny-bert", "tiny-roberta", "tiny-gpt2", "tiny-bart")
                                            for p in ("cls", "mean", "last")] + [("tiny-t5", "eos"), ("tiny-bart", "eos")])
def test_pooled_vector_ignores_padding(family, pooling):
    torch.manual_seed(0)
    model, tok = build_task_model(family, "classification", 2, pooling=pooling)
    model.eval()
    texts = ["a tiny test sentence here", "short"]
    a, b = encode(tok, texts), encode(tok, texts, pad_to=24)
    assert b["input_ids"].shape[1] > a["input_ids"].shape[1]
    with torch.no_grad():
        pa = arch.pooled_state(model.backbone, arch.embed_tokens(model.backbone, a["input_ids"]), a["attention_mask"],
                               pooling=pooling)
        pb = arch.pooled_state(model.backbone, arch.embed_tokens(model.backbone, b["input_ids"]), b["attention_mask"],
                               pooling=pooling)
    assert torch.allclose(pa, pb, atol=1e-5)


def test_mean_pooling_is_the_masked_mean_of_input_tokens_without_prompt_positions():
    torch.manual_seed(0)
    model, tok = build_task_model("tiny-bert", "classification", 2, pooling="mean")
    attach_method(model, {"name": "prompt_tuning", "prompt_len": 3}, max_seq_len=32)
    model.eval()
    x = encode(tok, ["a tiny test sentence here", "short"])
    with torch.no_grad():
        embeds, mask, P = model.embed(x["input_ids"], x["attention_mask"])
        h = arch.token_states(model.backbone, embeds, mask)  # (B, 3+L, H)
        pooled = arch.pooled_state(model.backbone, embeds, mask, pooling="mean", n_prompt=P)
    assert P == 3
    for i in range(2):
        n = int(x["attention_mask"][i].sum())
        assert torch.allclose(pooled[i], h[i, P:P + n].mean(0), atol=1e-6)  # input tokens only
        assert not torch.allclose(pooled[i], h[i, :P + n].mean(0), atol=1e-4)  # prompt positions would change it


def test_minilm_defaults_to_mean_pooling_and_others_by_architecture():
    from common.sweep import compose

    assert compose(["model=minilm"])["model"]["pooling"] == "mean"
    assert compose(["model=tiny-gpt2"])["model"]["pooling"] == "last"
    assert compose(["model=bert-base-uncased"])["model"]["pooling"] == "cls"
    model, _ = build_task_model("tiny-bert", "classification", 2)
    assert model.pooling == "cls"


def test_bad_pooling_is_a_clear_error():
    with pytest.raises(UserError, match="valid: cls, mean, last, eos"):
        build_task_model("tiny-bert", "classification", 2, pooling="max")
    with pytest.raises(UserError, match="needs BART or T5"):
        build_task_model("tiny-bert", "classification", 2, pooling="eos")


def test_regression_targets_are_standardised_and_outputs_on_the_original_scale():
    torch.manual_seed(0)
    model, tok = build_task_model("tiny-bert", "regression", 1)
    targets = [0.0, 1.0, 4.0, 5.0]
    model.set_target_stats(targets)
    mean, std = 2.5, (sum((t - 2.5) ** 2 for t in targets) / 4) ** 0.5
    assert model.target_mean.item() == pytest.approx(mean) and model.target_std.item() == pytest.approx(std)
    model.eval()
    b = {**encode(tok, ["one", "two words"]), "labels": torch.tensor([1.0, 4.0])}
    with torch.no_grad():
        out = model(b)
        z = model.head(model.dropout(arch.pooled_state(model.backbone, arch.embed_tokens(model.backbone, b["input_ids"]),
                                                        b["attention_mask"], pooling=model.pooling))).squeeze(-1)
    assert torch.allclose(out["logits"], z * std + mean, atol=1e-6)
    assert out["loss"].item() == pytest.approx(((z - (b["labels"] - mean) / std) ** 2).mean().item(), rel=1e-5)


def test_a_run_standardises_with_its_own_training_labels(tmp_path, mirror):
    from common.run import prepare
    from common.sweep import compose

    cfg = compose(["scale=smoke", "model=tiny-bert", "task=stsb", f"records_dir={tmp_path}"])
    spec, model, *_ = prepare(cfg)
    labels = [e["label"] for e in load_examples(spec, "train", mirror, max_n=32)]
    assert model.target_mean.item() == pytest.approx(sum(labels) / len(labels), rel=1e-5)


def test_head_gets_its_own_lr_when_set():
    torch.manual_seed(0)
    model, _ = build_task_model("tiny-bert", "classification", 2)
    attach_method(model, {"name": "bitfit"})
    head = {id(p) for p in model.head.parameters()}
    for head_lr, want in ((None, 1e-3), (5e-2, 5e-2)):
        groups = param_groups(model, 1e-3, TrainerConfig(head_lr=head_lr, weight_decay=0.1))
        for g in groups:
            is_head = {id(p) for p in g["params"]} <= head
            assert g["lr"] == (want if is_head else 1e-3)
            assert g["weight_decay"] == (0.1 if g["params"][0].ndim >= 2 else 0.0)
        seen = [id(p) for g in groups for p in g["params"]]
        assert sorted(seen) == sorted(id(p) for p in model.parameters() if p.requires_grad)


def test_eval_schedule_spreads_evaluations_and_always_ends_with_the_last_step():
    assert eval_schedule(10, 30, TrainerConfig(epochs=3, evals_per_epoch=1)) == {10, 20, 30}
    assert eval_schedule(10, 20, TrainerConfig(epochs=2, evals_per_epoch=2)) == {5, 10, 15, 20}
    assert eval_schedule(10, 25, TrainerConfig(epochs=3, eval_every_steps=7)) == {7, 14, 21, 25}
    # tiny sets: one step per epoch, evaluated 10 times over the run, not after every step
    assert eval_schedule(1, 200, TrainerConfig(epochs=200, evals_per_run=10)) == set(range(20, 201, 20))
    assert eval_schedule(11, 110, TrainerConfig(epochs=10, evals_per_run=4)) == {28, 56, 84, 110}


def test_record_says_whether_the_last_evaluation_was_the_best(tmp_path):
    from common.run import run
    from common.sweep import compose

    rec = run(compose(["scale=smoke", "model=tiny-bert", "method=bitfit", "trainer.epochs=3", f"records_dir={tmp_path}"]))
    scores = [h["dev"][rec["primary_metric"]] for h in rec["history"]]
    assert len(scores) == 3
    assert rec["still_improving"] == (max(scores) == scores[-1] and scores.index(max(scores)) == len(scores) - 1)


def _pairs(batches):
    return {frozenset(p) for b in batches for p in itertools.combinations(b, 2)}


@pytest.mark.parametrize("n", [500, 2500])
def test_seeds_and_epochs_see_different_batches(n):
    """With a pool larger than the training set, bucketing sorted all of it and ~84 % of in-batch pairs
    repeated across seeds; now few do (random batches share ~1-6 %)."""
    rng = random.Random(0)
    lengths = [rng.randint(8, 128) for _ in range(n)]
    a = list(LengthBucketSampler(lengths, 32, shuffle=True, seed=1))
    b = list(LengthBucketSampler(lengths, 32, shuffle=True, seed=2))
    s = LengthBucketSampler(lengths, 32, shuffle=True, seed=1)
    s.set_epoch(2)
    c = list(s)
    pa = _pairs(a)
    assert len(pa & _pairs(b)) / len(pa) < 0.15 and len(pa & _pairs(c)) / len(pa) < 0.15
    old = LengthBucketSampler(lengths, 32, shuffle=True, seed=1)  # the former behaviour: one pool
    old2 = LengthBucketSampler(lengths, 32, shuffle=True, seed=2)
    old.pool = old2.pool = 10 ** 6
    assert len(_pairs(old) & _pairs(old2)) / len(_pairs(old)) > 0.15  # the test can tell the two apart


def test_small_budgets_resolve_per_task_and_method():
    from common.budgets import budget
    from common.sweep import compose

    ft = compose(["task=stsb", "method=full_ft"])
    lora = compose(["task=stsb", "method=lora"])
    assert ft["data"]["max_train"] is None and ft["data"]["max_test"] is None  # full train, full validation
    assert lora["trainer"]["epochs"] == 2 * ft["trainer"]["epochs"] == 2 * budget("epochs", "stsb", "full_ft")
    assert compose(["task=sst2"])["data"]["max_train"] == budget("max_train", "sst2", "full_ft")
    for c in (ft, lora):
        assert c["trainer"]["epochs"] * c["trainer"]["evals_per_epoch"] >= 10  # enough points to see a curve
    smoke = compose(["task=stsb", "scale=smoke"])
    assert smoke["data"]["max_train"] == 32 and smoke["trainer"]["epochs"] == 1


@pytest.mark.parametrize("task", ["cb", "pool/sick"])
def test_tiny_training_sets_get_a_step_floor_and_evaluations_spread_over_the_run(task):
    """CB (32 examples = 1 step per epoch) once trained 6 steps with patience counted per step; now >= 100 steps
    for FT, twice that for frozen-backbone methods, and patience (in evaluations) spans a good part of the run."""
    import math

    from common.run import load_splits
    from common.sweep import compose, task_overrides

    for method, floor in (("full_ft", 100), ("adapter", 200), ("head_only", 200)):
        cfg = compose([*task_overrides(task), f"method={method}"])
        _, splits = load_splits(cfg)
        t = cfg["trainer"]
        steps = t["epochs"] * math.ceil(len(splits["train"]) / t["batch_size"])
        assert steps >= floor, (task, method, steps)
        evals = eval_schedule(math.ceil(len(splits["train"]) / t["batch_size"]), steps, TrainerConfig(**t))
        assert 8 <= len(evals) <= 12
        if t["patience"] is not None:
            assert t["patience"] * steps / len(evals) >= 0.3 * steps


def test_budget_keys_added_later_leave_other_tasks_run_ids_unchanged():
    """``trainer.evals_per_run`` is null outside the tiny sets; a null must not change the committed run ids."""
    from common.records import run_id
    from common.sweep import compose

    for task, method in (("stsb", "lora"), ("mrpc", "adapter"), ("rte", "full_ft")):
        cfg = compose([f"task={task}", f"method={method}"])
        assert cfg["trainer"]["evals_per_run"] is None
        before = copy.deepcopy(cfg)
        del before["trainer"]["evals_per_run"]
        assert run_id(cfg) == run_id(before)
    cb = compose(["task=cb", "method=adapter"])
    assert run_id(cb) != run_id({**cb, "trainer": {**cb["trainer"], "evals_per_run": None}})


def test_evals_per_run_sets_when_a_run_is_evaluated(tmp_path):
    from common.run import run
    from common.sweep import compose

    # 32 examples at batch 8 = 4 steps per epoch, 24 steps: evaluated after steps 8, 16, 24
    rec = run(compose(["scale=smoke", "model=tiny-bert", "method=bitfit", "trainer.epochs=6",
                       "trainer.evals_per_run=3", f"records_dir={tmp_path}"]))
    assert [h["step"] for h in rec["history"]] == [8, 16, 24]


def test_token_cache_is_keyed_by_file_content(tmp_path, tokenizer):
    from common.tasks import get_task

    spec = get_task("rte")
    for text in ("The cat sat.", "A completely different premise."):
        d = tmp_path / "glue" / "rte"
        d.mkdir(parents=True, exist_ok=True)
        row = '{"sentence1": "%s", "sentence2": "It sat.", "label": 0, "idx": 0}\n' % text
        (d / "train.jsonl").write_text(row * 20)
        (d / "validation.jsonl").write_text(row)
        ex = load_examples(spec, "test", tmp_path)
        items = tokenize(ex, spec, tokenizer, "encoder", DataArgs(32), cache_key="rte/test/13")  # same key both times
        assert items[0]["input_ids"] == tokenizer(text, "It sat.")["input_ids"]


def test_calibration_table_puts_the_reference_beside_ours_and_judges_the_3_point_target():
    import pandas as pd

    from common.plots import calibration_table

    def rows(task, metric, vals, role="report"):
        return [{"task": task, "method": "full_ft", "seed": i + 2, "split": "test", "metric": metric, "value": v,
                 "selected": True, "role": role, "still_improving": i == 0 and task == "stsb"}
                for i, v in enumerate(vals)]

    cal = pd.DataFrame(rows("rte", "accuracy", [57, 58, 59]) + rows("stsb", "pearson", [85, 86, 84])
                       + rows("rte", "accuracy", [99], role="tune"))  # the tuning seed never counts
    t = calibration_table(cal, pd.DataFrame(rows("stsb", "pearson", [86.5])))
    assert "| rte (accuracy) | — | 58.0 [57.0, 59.0] | 68.8 | — | +10.8 | no |" in t  # published MiniLM-L6xH384
    assert "| stsb (pearson) | — | 85.0 [84.0, 86.0]† | — | 86.5 | +1.5 | yes |" in t  # our full-data run


def test_pooling_report_joins_cls_runs_with_the_mean_sweeps_reported_runs(tmp_path):
    import pandas as pd

    from common.report import main

    def rows(method, vals, role="report", task="stsb"):
        return [{"task": task, "method": method, "seed": i + 2, "split": "test", "metric": "pearson", "value": v,
                 "lr": 1e-4, "selected": True, "role": role, "still_improving": False, "run_id": f"{method}{i}{role}"}
                for i, v in enumerate(vals)]

    for d in ("common", "lora", "ptuning_v2"):
        (tmp_path / d).mkdir()
    pd.DataFrame(rows("full_ft", [80, 81, 82]) + rows("lora", [70, 71, 72])
                 + rows("deep_prompt", [60, 61, 62])).to_csv(tmp_path / "common/pooling_cls.csv", index=False)
    # the P-Tuning v2 table names its methods as the paper does: PT-2's mean rows are `pt2` there
    pd.DataFrame(rows("pt2", [75, 76, 77]) + rows("pt", [1, 1, 1])).to_csv(tmp_path / "ptuning_v2/main.csv", index=False)
    pd.DataFrame(rows("full_ft", [85, 86, 87]) + rows("full_ft", [99], role="tune")
                 + rows("full_ft", [50], task="rte")).to_csv(tmp_path / "common/calibration.csv", index=False)
    pd.DataFrame(rows("lora", [84, 84, 84]) + rows("bitfit", [1, 1, 1])).to_csv(tmp_path / "lora/glue.csv", index=False)
    assert main(tmp_path) == 0
    pool = pd.read_csv(tmp_path / "common/pooling.csv")
    assert sorted(pool.groupby(["method", "pooling"]).size().items()) == [
        (("deep_prompt", "cls"), 3), (("deep_prompt", "mean"), 3), (("full_ft", "cls"), 3), (("full_ft", "mean"), 3),
        (("lora", "cls"), 3), (("lora", "mean"), 3)]
    table = (tmp_path / "common/pooling_table.md").read_text()
    assert "| stsb | full_ft | 81.0 [80.0, 82.0] | 86.0 [85.0, 87.0] | +5.0 |" in table
    assert "| stsb | lora | 71.0 [70.0, 72.0] | 84.0 [84.0, 84.0] | +13.0 |" in table
    assert "| stsb | deep_prompt | 61.0 [60.0, 62.0] | 76.0 [75.0, 77.0] | +15.0 |" in table


def test_calibration_table_does_not_judge_a_whole_train_set_task_against_itself():
    import pandas as pd

    from common.plots import calibration_table

    rows = [{"task": t, "method": "full_ft", "seed": 2, "split": "test", "metric": m, "value": 80.0,
             "selected": True, "role": "report", "still_improving": False, "data.max_train": mt}
            for t, m, mt in (("stsb", "pearson", None), ("conll2003", "entity_f1", 5000))]
    t = calibration_table(pd.DataFrame(rows))
    assert "| stsb (pearson) | — | 80.0 [80.0, 80.0] | — | these runs | — | — (whole train set) |" in t
    assert "| conll2003 (entity_f1) | — | 80.0 [80.0, 80.0] | — | — | — | — |" in t  # subsampled, no full run yet


def test_calibration_table_judges_a_task_with_both_references_against_each():
    import pandas as pd

    from common.plots import calibration_table

    row = {"task": "sst2", "method": "full_ft", "split": "test", "metric": "accuracy", "selected": True,
           "role": "report", "still_improving": False}
    cal = pd.DataFrame([{**row, "seed": s, "value": 87.0} for s in (2, 3, 4)])
    t = calibration_table(cal, pd.DataFrame([{**row, "seed": 2, "value": 89.0}]))
    assert "| 91.5 | 89.0 | +4.5 | no (published), yes (full data) |" in t  # published MiniLM-L6xH384 SST-2: 91.5
