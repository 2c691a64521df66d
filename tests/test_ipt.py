"""IPT: autoencoder, scorers, the three stages' trainable sets, prompts on disk, splits, entry points."""
import itertools
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from common.errors import UserError
from common.multitask import (
    StageConfig,
    TaskData,
    fit_multitask,
    interleaved_batches,
    state_fingerprint,
)
from common.paths import REPO_ROOT
from ipt import workbench as W
from ipt.subspace import INIT_STD, IntrinsicVector, PromptAutoencoder, PromptDecoder

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
TRAIN_TASK, TEST_TASK = "glue-sst2", "rotten_tomatoes"  # both in the random split, both with options


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from common.config import register_configs
    from ipt.config import register

    register_configs()
    register()
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("ipt", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def smoke_cfg(tmp_path, *extra):
    return compose("+split=random", "scale=smoke", f"records_dir={tmp_path / 'records'}",
                   f"tasks=[{TRAIN_TASK},{TEST_TASK}]", *extra)


# ----------------------------------------------------------------------------- subspace modules
def test_autoencoder_shapes_and_init():
    torch.manual_seed(0)
    ae = PromptAutoencoder(prompt_len=6, hidden=16, d_intrinsic=3)
    assert ae.encoder.weight.shape == (3, 6 * 16)
    assert [m.weight.shape for m in ae.decoder.net if isinstance(m, torch.nn.Linear)] == [(16, 3), (6 * 16, 16)]
    assert isinstance(ae.decoder.net[1], torch.nn.Tanh)
    for name, p in ae.named_parameters():
        if name.endswith("bias"):
            assert torch.all(p == 0), name
        else:
            assert abs(p.std().item() - INIT_STD) < 0.35 * INIT_STD and abs(p.mean().item()) < 0.01, name
    x = torch.randn(2, 6, 16)
    assert ae.encode(x).shape == (2, 3) and ae(x).shape == (2, 6, 16) and ae(x[0]).shape == (6, 16)
    assert IntrinsicVector(3)().shape == (3,)


def test_interleaved_batches_cover_each_example_once_per_round_and_mix_tasks():
    stream = interleaved_batches({"a": 10, "b": 6}, batch_size=4, seed=0)
    rnd = [next(stream) for _ in range(3 + 2)]  # a: 3 batches, b: 2 batches per round
    seen = {t: sorted(i for n, b in rnd if n == t for i in b) for t in ("a", "b")}
    assert seen == {"a": list(range(10)), "b": list(range(6))}
    mixed = interleaved_batches({t: 20 for t in "abcd"}, batch_size=4, seed=0)
    order = [next(mixed)[0] for _ in range(20)]  # one round: 5 batches per task
    switches = sum(x != y for x, y in itertools.pairwise(order))
    assert switches > 3 * 2, order  # task after task would switch 3 times
    # epochs per round: b's examples three times in each round, a's once
    stream = interleaved_batches({"a": 10, "b": 6}, batch_size=4, seed=0, epochs={"b": 3})
    rnd = [next(stream) for _ in range(3 + 3 * 2)]
    assert sorted(i for n, b in rnd if n == "b" for i in b) == sorted(list(range(6)) * 3)
    assert sorted(i for n, b in rnd if n == "a" for i in b) == list(range(10))


# ----------------------------------------------------------------------------- scorers
@pytest.fixture(scope="module")
def minilm_scorer():
    cfg = compose("+split=random", "scale=smoke")
    scorer, tok = W.build(cfg)
    return cfg, scorer, tok


def test_cosine_scorer_without_prompt_is_minilm_zero_shot_similarity(minilm_scorer, mirror):
    """P = none: logits = cos(mean-pooled MiniLM(x), mean-pooled MiniLM(o)) / tau, computed independently."""
    from transformers import AutoModel, AutoTokenizer

    from common.models import minilm_path

    cfg, scorer, _ = minilm_scorer
    task = W.load_task(cfg, scorer, "crossfit/" + TRAIN_TASK, 100, with_test=False)
    items = task.dev[:5]
    scorer.eval()
    ours = scorer.logits(task, items, None)  # (5, 2)
    tok, model = AutoTokenizer.from_pretrained(minilm_path()), AutoModel.from_pretrained(minilm_path()).eval()

    def embed(texts):
        enc = tok(texts, padding=True, truncation=True, max_length=cfg["data"]["max_seq_len"], return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        return F.normalize((h * m).sum(1) / m.sum(1), dim=-1)

    rows = [json.loads(line) for line in (mirror / "crossfit" / TRAIN_TASK / f"{TRAIN_TASK}_16_100_dev.jsonl").open()][:5]
    x, o = embed([r["input"] for r in rows]), embed(rows[0]["options"])
    expected = x @ o.T / cfg["scorer"]["tau"]
    assert torch.allclose(ours, expected, atol=1e-4), (ours, expected)


def test_cosine_scorer_reports_em_of_an_option_task_as_choosing_the_gold_option(minilm_scorer):
    """Option tasks whose CrossFit metric is EM (superglue-multirc, numer_sense, ...): the chosen option's text
    matches the gold text exactly iff it is the gold option, so EM is the accuracy over options."""
    cfg, scorer, _ = minilm_scorer
    task = W.load_task(cfg, scorer, "crossfit/" + TRAIN_TASK, 100, with_test=False)
    got = scorer.evaluate(task, task.dev, None, ["em", "accuracy"])
    assert set(got) == {"em", "accuracy"} and got["em"] == got["accuracy"]
    assert scorer.evaluate(task, task.dev, None, ["em"]) == {"em": got["accuracy"]}


def test_option_loss_smooths_over_each_rows_own_options():
    """Rows with fewer options (-inf logits): finite loss, equal to the loss on the row cut to its options;
    with every option present it is F.cross_entropy with label smoothing."""
    from ipt.scorer import option_cross_entropy

    torch.manual_seed(0)
    z, y = torch.randn(3, 4), torch.tensor([0, 1, 3])
    assert torch.allclose(option_cross_entropy(z, y, 0.1), F.cross_entropy(z, y, label_smoothing=0.1))
    n_opts = [3, 2, 4]
    masked = z.clone()
    for i, n in enumerate(n_opts):
        masked[i, n:] = float("-inf")
    masked.requires_grad_(True)
    y = torch.tensor([0, 1, 2])
    loss = option_cross_entropy(masked, y, 0.1)
    rows = [F.cross_entropy(z[i:i + 1, :n], y[i:i + 1], label_smoothing=0.1) for i, n in enumerate(n_opts)]
    assert torch.isfinite(loss) and torch.allclose(loss, torch.stack(rows).mean())
    loss.backward()
    assert torch.isfinite(masked.grad).all()
    assert not torch.isfinite(F.cross_entropy(masked, y, label_smoothing=0.1))  # what it replaces


def test_prompt_changes_scores(minilm_scorer):
    cfg, scorer, _ = minilm_scorer
    task = W.load_task(cfg, scorer, "crossfit/" + TRAIN_TASK, 100, with_test=False)
    items = task.train[:3]
    prompt = torch.randn(4, scorer.hidden) * 0.5
    a, b = scorer.logits(task, items, None), scorer.logits(task, items, prompt)
    assert a.shape == b.shape == (3, 2) and not torch.allclose(a, b)


def test_seq2seq_scorer_nll_equals_the_model_loss_on_tiny_bart(tmp_path):
    cfg = compose("+split=random", "scale=smoke", "model=tiny-bart", "scorer.kind=seq2seq", "scorer.label_smoothing=0")
    scorer, tok = W.build(cfg)
    task = W.load_task(cfg, scorer, "crossfit/" + TRAIN_TASK, 100, with_test=False)
    items = [it for it in task.train if len(it["labels"]) == len(task.train[0]["labels"])][:3]  # equal target lengths
    ours = scorer.loss(task, items, None)
    from ipt.scorer import _ids_and_mask, _pad

    ids, mask = _ids_and_mask(items, tok.pad_token_id)
    ref = scorer.backbone(input_ids=ids, attention_mask=mask, labels=_pad([it["labels"] for it in items], -100)).loss
    assert torch.allclose(ours, ref, atol=1e-5)


# ----------------------------------------------------------------------------- trainable sets per stage
def _toy_task(cfg, scorer):
    return W.load_task(cfg, scorer, "crossfit/" + TRAIN_TASK, 100, with_test=False)


def test_msf_trains_only_the_autoencoder(tmp_path):
    cfg = compose("+split=random", "scale=smoke", "model=tiny-bert")
    scorer, _ = W.build(cfg)
    task = _toy_task(cfg, scorer)
    prompt = torch.randn(4, scorer.hidden)
    ae = PromptAutoencoder(4, scorer.hidden, 3)
    before_bb, before_p, before_ae = state_fingerprint(scorer), prompt.clone(), state_fingerprint(ae)
    model = torch.nn.ModuleDict({"s": scorer, "ae": ae})
    fit_multitask(model, dict(ae.named_parameters()), [task],
                  lambda t, b: scorer.loss(t, b, ae(prompt)) + F.mse_loss(ae(prompt), prompt),
                  lambda t, items: W.scores(scorer, t, items, ae(prompt)), StageConfig(lr=1e-2, steps=3, eval_every=3), 0)
    assert all(torch.equal(v, state_fingerprint(scorer)[k]) for k, v in before_bb.items())
    assert torch.equal(prompt, before_p)
    assert any(not torch.equal(v, ae.state_dict()[k]) for k, v in before_ae.items())


def test_ist_trains_only_v_and_decoded_prompt_survives_save_load(tmp_path):
    from safetensors.torch import load_file

    from common.multitask import save_tensors

    cfg = compose("+split=random", "scale=smoke", "model=tiny-bert")
    scorer, _ = W.build(cfg)
    task = _toy_task(cfg, scorer)
    dec = PromptDecoder(4, scorer.hidden, 3).requires_grad_(False)
    v = IntrinsicVector(3)
    frozen = {**{"s." + k: t for k, t in state_fingerprint(scorer).items()},
              **{"d." + k: t for k, t in state_fingerprint(dec).items()}}
    v0 = v.v.detach().clone()
    fit_multitask(torch.nn.ModuleDict({"s": scorer, "d": dec, "v": v}), {"v": v.v}, [task],
                  lambda t, b: scorer.loss(t, b, dec(v())), lambda t, items: W.scores(scorer, t, items, dec(v())),
                  StageConfig(lr=1e-1, steps=3, eval_every=3), 0)
    now = {**{"s." + k: t for k, t in state_fingerprint(scorer).items()}, **{"d." + k: t for k, t in state_fingerprint(dec).items()}}
    assert all(torch.equal(frozen[k], now[k]) for k in frozen)
    assert not torch.equal(v0, v.v)
    scorer.eval()
    with torch.no_grad():
        before = scorer.logits(task, task.dev, dec(v()))
    path = save_tensors({"v": v.v}, tmp_path / "v.safetensors")
    v2 = IntrinsicVector(3)
    with torch.no_grad():
        v2.v.copy_(load_file(str(path))["v"])
        assert torch.equal(scorer.logits(task, task.dev, dec(v2())), before)


def _toy_fit(resume, stop_at=None, steps=8):
    """A linear model behind dropout on one toy task; ``stop_at`` kills the run (an exception) at that step."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 1)
    model = torch.nn.Sequential(torch.nn.Dropout(0.5), lin)
    xs = [{"x": torch.randn(3), "y": float(i % 2)} for i in range(12)]
    task = TaskData("t", "neg_mse", xs, xs[:4])
    seen = []

    def loss_fn(t, batch):
        seen.append(len(seen) + 1)
        if stop_at is not None and len(seen) == stop_at:
            raise KeyboardInterrupt  # what a dying session does to a background run
        x, y = torch.stack([b["x"] for b in batch]), torch.tensor([b["y"] for b in batch])
        return ((model(x).squeeze(-1) - y) ** 2).mean()

    def evaluate_fn(t, items):
        x, y = torch.stack([b["x"] for b in items]), torch.tensor([b["y"] for b in items])
        return {"neg_mse": -((model(x).squeeze(-1) - y) ** 2).mean().item()}

    out = fit_multitask(model, dict(lin.named_parameters()), [task], loss_fn, evaluate_fn,
                        StageConfig(lr=0.05, steps=steps, batch_size=4, eval_every=2), seed=3, resume=resume)
    return out, {n: p.detach().clone() for n, p in lin.named_parameters()}


def test_fit_multitask_resumes_a_killed_run_exactly(tmp_path):
    plain, w_plain = _toy_fit(None)
    saved, w_saved = _toy_fit(tmp_path / "a.pt")  # writing the state changes nothing
    assert all(torch.equal(w_plain[n], w_saved[n]) for n in w_plain) and (tmp_path / "a.pt").is_file()
    with pytest.raises(KeyboardInterrupt):
        _toy_fit(tmp_path / "b.pt", stop_at=7)  # last state written at step 6
    resumed, w_resumed = _toy_fit(tmp_path / "b.pt")
    assert resumed["resumed_at_step"] == 6 and plain["resumed_at_step"] == 0
    # same batches, dropout masks and Adam moments: bit-identical weights, dev curve and choice
    assert all(torch.equal(w_plain[n], w_resumed[n]) for n in w_plain)
    strip = [[{k: v for k, v in h.items() if k != "elapsed_s"} for h in o["history"]] for o in (plain, resumed)]
    assert strip[0] == strip[1] and plain["best"]["step"] == resumed["best"]["step"]
    with pytest.raises(UserError, match="belongs to another run"):
        _toy_fit(tmp_path / "b.pt", steps=10)


def test_fit_multitask_gives_named_parameters_their_own_lr():
    """MT-A's backbone trains at its own lr: at lr 0 it stays bit-identical while the rest moves."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)
    model = torch.nn.Sequential(a, b)
    xs = [{"x": torch.randn(3), "y": float(i % 2)} for i in range(8)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def loss_fn(t, batch):
        x, y = torch.stack([e["x"] for e in batch]), torch.tensor([e["y"] for e in batch])
        return ((model(x).squeeze(-1) - y) ** 2).mean()

    fit_multitask(model, dict(model.named_parameters()), [TaskData("t", "neg_mse", xs, xs[:4])], loss_fn,
                  lambda t, items: {"neg_mse": 0.0}, StageConfig(lr=0.05, steps=4, batch_size=4, eval_every=2,
                                                                  weight_decay=0.1), seed=0,
                  lrs={"0.weight": 0.0, "0.bias": 0.0})
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in ("0.weight", "0.bias"))
    assert not any(torch.equal(before[n], after[n]) for n in ("1.weight", "1.bias"))


def test_fit_multitask_refuses_parameters_outside_the_trainable_set():
    lin = torch.nn.Linear(2, 2)
    other = torch.nn.Parameter(torch.zeros(2))
    task = TaskData("t", "accuracy", [{"x": 1}], [{"x": 1}])
    with pytest.raises(ValueError, match="outside the stage's trainable set"):
        fit_multitask(lin, {"x": other}, [task], lambda t, b: other.sum(), lambda t, i: {"accuracy": 0.0},
                      StageConfig(steps=1), 0)


# ----------------------------------------------------------------------------- splits and errors
def test_split_naming_a_task_the_mirror_lacks_is_an_error(mirror):
    from ipt.splits import resolve_split

    with pytest.raises(UserError, match="names task 'no_such_task'"):
        resolve_split({"name": "mine", "train": ["glue-sst2"], "test": ["no_such_task"]}, mirror, True)


def test_cosine_formulation_drops_generation_tasks_with_reason(mirror):
    from ipt.splits import resolve_split

    s = resolve_split({"name": "mine", "train": ["glue-sst2", "squad-no_context"], "test": ["rotten_tomatoes"]},
                      mirror, needs_options=True)
    assert s.train == ["crossfit/glue-sst2"] and "generation" in s.dropped["squad-no_context"]
    s2 = resolve_split({"name": "mine", "train": ["glue-sst2", "squad-no_context"], "test": ["rotten_tomatoes"]},
                       mirror, needs_options=False)
    assert "crossfit/squad-no_context" in s2.train


def test_split_files_match_the_papers_split_files(mirror):
    from ipt.splits import SOURCES, SPLIT_DIR, split_conf

    ref = REPO_ROOT.parent / "shared" / "reference" / "ipt_splits"
    if not ref.is_dir():
        pytest.skip("paper split files not found")
    for name in SOURCES:
        assert (SPLIT_DIR / f"{name}.yaml").read_text() == split_conf(name, ref, mirror), name


def test_missing_prompt_is_an_error_naming_the_task(tmp_path):
    cfg = smoke_cfg(tmp_path)
    with pytest.raises(UserError, match=f"crossfit/{TEST_TASK}"):
        W.load_prompts(cfg, [f"crossfit/{TEST_TASK}"])


def test_unknown_task_restriction_lists_valid_ones(tmp_path):
    cfg = smoke_cfg(tmp_path, "tasks=[nope]")
    with pytest.raises(UserError, match="valid: .*glue-sst2"):
        W.select_tasks(cfg, ["crossfit/glue-sst2"])


def ipt_cli(module, *args, tmp_path, timeout=600):
    cmd = [sys.executable, "-m", f"ipt.{module}", *args, f"hydra.run.dir={tmp_path / 'hydra'}"]
    return subprocess.run(cmd, check=False, cwd=REPO_ROOT, env={**ENV, "PEFT_SCRATCH_DIR": str(tmp_path / "scratch")},
                          capture_output=True, text=True, timeout=timeout)


def test_without_split_one_line_lists_choices_and_exits_2(tmp_path):
    p = ipt_cli("msf", "scale=smoke", tmp_path=tmp_path)
    assert p.returncode == 2 and "random_20" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


# ----------------------------------------------------------------------------- the three stages end to end
def test_three_stages_run_from_the_command_line_at_smoke(tmp_path):
    common = ["+split=random", "scale=smoke", f"records_dir={tmp_path / 'records'}", f"tasks=[{TRAIN_TASK},{TEST_TASK}]"]
    # MSF before stage 1: an error naming the missing prompts, nothing written
    p = ipt_cli("msf", *common, tmp_path=tmp_path)
    assert p.returncode == 2 and "no stage-1 prompt" in p.stderr and TRAIN_TASK in p.stderr, p.stderr
    assert not (tmp_path / "records" / "ipt" / "msf").exists()
    for module in ("prompt_tuning", "msf", "ist"):
        p = ipt_cli(module, *common, tmp_path=tmp_path)
        assert p.returncode == 0, p.stderr[-3000:]
    # the scratch decoder gone (a new machine): IST with every run complete skips, it does not fail
    decoders = list((tmp_path / "scratch").rglob("msf/*.safetensors"))
    assert len(decoders) == 1
    decoders[0].unlink()
    p = ipt_cli("ist", *common, tmp_path=tmp_path)
    assert p.returncode == 0 and "IST runs are complete" in p.stdout + p.stderr, p.stderr[-3000:]
    root = tmp_path / "records" / "ipt"
    pts = sorted((root / "prompt_tuning").glob("*.json"))
    assert len(pts) == 2 and len(list((root / "prompt_tuning").glob("*.safetensors"))) == 2
    pt = json.loads(pts[0].read_text())
    assert pt["trainable_params"] == 4 * 384 and {"test", "zero_shot_test"} <= set(pt["final"])
    msf = json.loads(next((root / "msf").glob("*.json")).read_text())
    assert {v["role"] for v in msf["per_task"].values()} == {"train", "test"}
    ist = [json.loads(p.read_text()) for p in (root / "ist").glob("*.json")]
    assert sorted((r["role"], r["few_shot_seed"]) for r in ist) == [("test", 100), ("train", 21)]
    assert all(r["trainable_params"] == 5 for r in ist)
    from ipt.plots import main as plots_main

    assert all(v["prompt_mean_square"] > 0 for v in msf["per_task"].values())
    # a tuning-seed copy of the MSF run: in the MSF table as tuning, never in a reported score
    (root / "msf" / "tuning_copy.json").write_text(json.dumps({**msf, "seed": 1, "run_id": "tuning_copy"}))
    from ipt.plots import msf_frame, score_frame

    assert sorted(msf_frame(root).role) == ["reported", "tuning"]
    assert set(score_frame(root).seed) == {msf["seed"]} != {1}
    assert plots_main(root, tmp_path / "out") == 0
    assert {"pt_floor.csv", "scores.csv", "settings.md", "dim.png", "tasks.png", "claims.md", "msf_runs.md"} <= \
        {p.name for p in (tmp_path / "out").iterdir()}
    # an MSF run at the d_I's reported budget replaces the shorter one: the old run stays in the MSF table
    # (marked), and neither it nor the IST runs on its decoder reach a score table
    from ipt.experiments import msf_steps

    d = msf["config"]["intrinsic_dim"]
    assert msf["config"]["msf"]["steps"] != msf_steps(d)
    assert set(score_frame(root).run_id) == {msf["run_id"], *(r["run_id"] for r in ist)}
    longer = {**msf["config"], "msf": {**msf["config"]["msf"], "steps": msf_steps(d)}}
    (root / "msf" / "longer.json").write_text(json.dumps({**msf, "config": longer, "run_id": "longer"}))
    assert set(score_frame(root).run_id) == {"longer"}
    # ... but a random-subspace IST run reads no decoder and stays
    rnd = {**ist[0], "config": {**ist[0]["config"], "subspace": "random"}, "run_id": "random_copy"}
    (root / "ist" / "random_copy.json").write_text(json.dumps(rnd))
    assert set(score_frame(root).run_id) == {"longer", "random_copy"}
    runs = msf_frame(root)
    assert sorted(zip(runs.role, runs.superseded)) == [("reported", False), ("reported", True), ("tuning", False)]


def test_relative_performance_and_its_chance_corrected_version():
    import pandas as pd

    from ipt.plots import floor_list, relative, run_means

    pt = pd.DataFrame({"task": ["a", "b", "c"], "seed": [2, 2, 2], "pt": [80.0, 50.0, 40.5], "zero_shot": [60.0, 55.0, 40.0]})
    scores = pd.DataFrame({"setting": ["T_test(IST)"] * 3, "task": ["a", "b", "c"], "split": ["random"] * 3,
                           "d_I": [5] * 3, "subspace": ["learned"] * 3, "seed": [2] * 3, "score": [70.0, 50.0, 35.0],
                           "still_improving": [False, True, False], "best_step": [20, 40, 100]})
    rel = relative(scores, pt).set_index("task")
    assert rel.loc["a", "rel"] == pytest.approx(87.5) and rel.loc["a", "rel_cc"] == pytest.approx(50.0)
    assert rel.loc["b", "rel"] == pytest.approx(100.0) and pd.isna(rel.loc["b", "rel_cc"])  # PT below zero-shot
    assert rel.loc["c", "rel_cc"] == pytest.approx(-1000.0)  # half a point of room: the per-task ratio explodes
    m = run_means(relative(scores, pt)).iloc[0]
    # the run's chance-corrected score is a ratio of sums over a and c: (10 - 5) / (20 + 0.5)
    assert m.rel_cc == pytest.approx(100 * 5 / 20.5) and m.rel == pytest.approx((87.5 + 100 + 100 * 35 / 40.5) / 3)
    assert m.pt_minus_zero_shot == pytest.approx((20 - 5 + 0.5) / 3) and m.tasks == 3 and m.still_improving
    # the prompt-free scorer on the paper's ratio: where ``rel`` would sit with no prompt at all
    assert m.rel_zs == pytest.approx((75.0 + 110.0 + 100 * 40 / 40.5) / 3)
    assert floor_list(pt) == ["b (50.0 / 55.0)"]  # listed, not hidden
    assert m.best_step == 40  # the median over the run's tasks


def test_paired_table_pairs_learned_and_random_by_task_and_seed():
    import pandas as pd

    from ipt.plots import paired_table

    rows = []
    for i in range(6):
        for sub, score in (("learned", 50.0 + i), ("random", 48.0 + i)):
            rows.append({"setting": "T_test(IST)", "split": "random", "d_I": 5, "subspace": sub, "task": f"t{i}",
                         "seed": 2, "score": score, "pt": 55.0, "zero_shot": 51.0, "still_improving": False})
    rows.append({**rows[0], "task": "only_learned"})  # no random partner: not a pair
    t = paired_table(pd.DataFrame(rows)).iloc[0]
    assert t["pairs (task × seed)"] == 6 and t["learned − random (points)"] == pytest.approx(2.0)
    assert t["learned wins"] == "6 of 6" and t["Wilcoxon p"] == pytest.approx(0.0312, abs=1e-4)  # exact: 2 / 2^6
    assert t["learned > random at p < 0.05"]
    assert t["learned − zero-shot (points)"] == pytest.approx(1.5) and t["learned > zero-shot"] == "4 of 6"
    flat = pd.DataFrame([{**r, "score": 50.0} for r in rows])  # no differences: no test, no claim
    t = paired_table(flat).iloc[0]
    assert pd.isna(t["Wilcoxon p"]) and not t["learned > random at p < 0.05"]
    assert paired_table(pd.DataFrame(rows[::2])).empty  # learned runs only: nothing to pair


def test_recovery_rule_needs_every_seed_above_half_of_pts_gain():
    import pandas as pd

    from ipt.plots import recovery_rule

    rows = [{"setting": st, "split": "random", "d_I": 5, "subspace": "learned", "seed": seed, "rel_cc": cc,
             "still_improving": False, "tasks": 10}
            for st, seed, cc in (("T_train-diff(IST)", 2, 80.0), ("T_train-diff(IST)", 3, 55.0), ("T_test(IST)", 2, 20.0),
                                 ("T_test(IST)", 3, 30.0))]
    r = recovery_rule(pd.DataFrame(rows)).iloc[0]
    assert r["seen > 50 % on every seed"] and r["unseen < seen"] and r["seen, new data: chance-corrected % (min over seeds)"] == 55.0
    partial = pd.DataFrame(rows).assign(tasks=10)
    partial.loc[1, ["rel_cc", "tasks"]] = [10.0, 3]  # seed 3 still going: left out until complete
    assert recovery_rule(partial).iloc[0]["seeds"] == 1
    rows[1]["rel_cc"] = 45.0  # one seed below half: not "most"
    assert not recovery_rule(pd.DataFrame(rows)).iloc[0]["seen > 50 % on every seed"]
    assert recovery_rule(pd.DataFrame(rows[:2])).empty  # no unseen runs yet


def test_settings_table_leaves_a_seed_still_running_out_of_its_cell():
    import pandas as pd

    from ipt.plots import settings_table

    rows = [{"setting": "T_test(IST)", "split": "random", "d_I": 5, "subspace": "learned", "seed": seed, "rel": rel,
             "rel_zs": 90.0, "rel_cc": rel - 80, "pt_minus_zero_shot": 2.0, "tasks": n, "still_improving": False,
             "best_step": 30} for seed, rel, n in ((2, 90.0, 10), (3, 80.0, 10), (4, 10.0, 3))]
    t = settings_table(pd.DataFrame(rows)).iloc[0]
    # seed 4 has 3 of 10 tasks: its mean is over other tasks, so it is counted as running, not averaged in
    assert t["seeds"] == 2 and t["seeds running"] == 1 and t["relative %"] == "85.0 [80.0, 90.0]" and t["tasks"] == 10


def test_task_count_rule_pairs_the_fewest_and_most_training_tasks_on_the_same_unseen_tasks():
    import pandas as pd

    from ipt.plots import tasks_trend

    means = pd.DataFrame([{"setting": "T_train(MSF)", "split": sp, "tasks": n} for sp, n in (("random_20", 9), ("random_60", 35), ("random", 52))])
    rows = [{"setting": "T_test(IST)", "split": sp, "d_I": 5, "subspace": "learned", "task": f"t{i}", "seed": 2,
             "score": 40.0 + i + bonus} for sp, bonus in (("random_20", 0.0), ("random_60", 1.0), ("random", 3.0))
            for i in range(6)]
    text = tasks_trend(pd.DataFrame(rows), means)
    assert "random (52 training tasks) against random_20 (9)" in text and "+3.0 points" in text
    assert "higher on 6 of 6 pairs" in text and "the rule holds (3 of 5 splits in so far)" in text and "3 splits: 1.00" in text
    worse = pd.DataFrame([{**r, "score": r["score"] - (6.0 if r["split"] == "random" else 0.0)} for r in rows])
    assert "the rule does not hold" in tasks_trend(worse, means)
    assert tasks_trend(pd.DataFrame(rows[:6]), means) is None  # one split: nothing to compare
    # a split whose run is still going (2 of its 6 tasks so far) is left out of the rule and the trend
    going = pd.DataFrame(rows).assign(run_tasks=6)
    going = going[(going.split != "random_60") | going.task.isin(["t0", "t1"])]
    assert "(2 of 5 splits in so far)" in tasks_trend(going, means) and "over 2 splits" in tasks_trend(going, means)


def test_task_count_table_marks_a_run_still_going():
    import pandas as pd

    from ipt.plots import tasks_table

    means = pd.DataFrame([{"setting": "T_train(MSF)", "split": sp, "d_I": 5, "subspace": "learned", "seed": 2,
                           "tasks": n, "rel": 95.0, "rel_cc": 60.0, "still_improving": False}
                          for sp, n in (("random_20", 9), ("random_60", 35))]
                         + [{"setting": "T_test(IST)", "split": sp, "d_I": 5, "subspace": "learned", "seed": 2,
                             "tasks": n, "run_tasks": 10, "rel": rel, "rel_cc": 5.0, "still_improving": False}
                            for sp, n, rel in (("random_20", 10, 85.0), ("random_60", 3, 103.0))])
    t = tasks_table(means).set_index("split")
    assert t.loc["random_20", "learned: relative %"] == "85.0"
    assert t.loc["random_60", "learned: relative %"] == "103.0 (3 of 10 tasks)"


def test_evidence_tables_count_our_training_tasks_and_mark_rising_runs():
    import pandas as pd

    from common.plots import OPEN
    from ipt.plots import claims_text, dim_table, n_train_tasks, pt_summary, tasks_table

    rows = []
    for split, n, rel in (("random_20", 9, 40.0), ("random", 52, 60.0)):
        rows.append({"setting": "T_train(MSF)", "split": split, "d_I": 5, "subspace": "learned", "seed": 2,
                     "rel": 90.0, "rel_cc": 50.0, "tasks": n, "still_improving": False})
        for sub, r in (("learned", rel), ("random", 30.0)):
            rows.append({"setting": "T_test(IST)", "split": split, "d_I": 5, "subspace": sub, "seed": 2,
                         "rel": r, "rel_cc": r - 20, "tasks": 10, "still_improving": sub == "random"})
    means = pd.DataFrame(rows)
    n = n_train_tasks(means)
    assert n["random_20"] == 9 and n["random"] == 52 and n["random_40"] == 40  # no run yet: the paper's count
    t = tasks_table(means).set_index("split")
    assert list(t.index) == ["random_20", "random"]  # ordered by training tasks, splits without runs left out
    assert t.loc["random", "learned: relative %"] == "60.0" and t.loc["random", "random: relative %"] == f"30.0{OPEN}"
    d = dim_table(means).set_index(["setting", "subspace"])
    assert d.loc[("T_test(IST)", "learned"), "d_I 5"] == "60.0" and d.loc[("T_test(IST)", "learned"), "paper d_I 5"] == 65.0
    running = pd.concat([means, pd.DataFrame([{**rows[-1], "d_I": 25, "tasks": 4, "still_improving": False}])])
    from ipt.plots import complete_runs

    assert len(complete_runs(running)) == len(means)  # the figure leaves the run still going out
    # a lone first seed still going: only its records' run_tasks can tell (old records without it: max over seeds)
    lone = pd.DataFrame([{**rows[-1], "d_I": 100, "tasks": 4, "run_tasks": 10.0}])
    assert complete_runs(lone).empty and len(complete_runs(lone.drop(columns="run_tasks"))) == 1
    assert dim_table(lone).iloc[0]["d_I 100"] == f"30.0{OPEN} (4 of 10 tasks)"
    d = dim_table(running).set_index(["setting", "subspace"])  # a run still going says how far it got
    assert d.loc[("T_test(IST)", "random"), "d_I 25"] == "30.0 (4 of 10 tasks)" and d.loc[("T_test(IST)", "random"), "d_I 5"] == f"30.0{OPEN}"
    pt = pd.DataFrame({"task": ["a", "b", "c"], "seed": [2] * 3, "lr": [0.01] * 3, "pt": [80.0, 50.0, 70.0], "zero_shot": [60.0, 55.0, 70.0],
                       "pt_dev": [60.0, 40.0, 50.0], "still_improving": [False, True, False],
                       "best_step": [20, 40, 60], "loss_at_best": [0.5, 0.6, 0.7], "loss_at_stop": [0.2, 0.3, 0.4]})
    s = pt_summary(pt).iloc[0]
    assert s["median best step"] == 40 and s["median train loss at best / at stop"] == "0.60 / 0.30"
    assert s["mean PT dev"] == pytest.approx(50.0) and s["PT > zero-shot"] == 1 and s["still improving"] == 1 and s["mean PT − zero-shot"] == pytest.approx(5.0)
    tune = pd.DataFrame({"task": ["a", "a", "a"], "seed": [1] * 3, "lr": [0.003, 0.01, 0.03], "pt": [1.0] * 3,
                         "zero_shot": [0.0] * 3, "pt_dev": [55.0, 52.0, 53.5], "still_improving": [False] * 3,
                         "best_step": [20] * 3, "loss_at_best": [0.5] * 3, "loss_at_stop": [0.2] * 3})
    text = claims_text(pd.concat([pt, tune]), None)
    assert "picked 0.003, the grid's lowest point" in text and "span 3.0 points" in text
    from ipt.plots import tuning_table

    t = tuning_table({"pt_lr": 0.003, "pt_lr_at_edge": "", "pt_lr_grid": [0.0009, 0.003, 0.01],
                      "pt_lr_dev_scores": {"0.003": 53.3, "0.01": 51.0, "0.0009": 52.0},
                      "alpha_dev_scores": {"10.0": 40.0, "1.0": 41.0}}).set_index("phase")
    assert list(t["chosen"]) == ["0.003", "pending"] and list(t["grid extended past an edge"]) == ["yes", "no"]
    assert t["dev score per value"].iloc[0] == "0.0009: 52.0, 0.003: 53.3, 0.01: 51.0"  # in grid order


def test_bart_text_to_text_path_runs_end_to_end(tmp_path):
    """scale=paper's formulation on tiny-bart: seq2seq scorer, an option task and a generation task."""
    from ipt import ist, msf, prompt_tuning

    cfg = compose("+split=random", "scale=smoke", "model=tiny-bart", "scorer.kind=seq2seq",
                  f"records_dir={tmp_path / 'records'}", "tasks=[glue-sst2,squad-no_context,rotten_tomatoes]")
    prompt_tuning.stage(cfg)
    rec = msf.stage(cfg)
    assert rec["resumed_at_step"] == 0 and not msf.partial_path(cfg).exists()  # resume state gone once recorded
    assert set(rec["per_task"]) == {"crossfit/glue-sst2", "crossfit/squad-no_context", "crossfit/rotten_tomatoes"}
    squad = rec["per_task"]["crossfit/squad-no_context"]["test"]
    assert "em" in squad and 0.0 <= squad["em"] <= 100.0  # text metrics on decoded text
    ist.stage(cfg)
    recs = [json.loads(p.read_text()) for p in (tmp_path / "records" / "ipt" / "ist").glob("*.json")]
    roles = [r["role"] for r in recs]
    assert len(recs) == 3 and all(r["run_tasks"] == roles.count(r["role"]) for r in recs)  # the invocation's count
    cfg_opt = {**cfg, "scorer": {**cfg["scorer"], "predict": "options"}}  # option likelihood instead of decoding
    scorer, _ = W.build(cfg_opt)
    task = W.load_task(cfg_opt, scorer, "crossfit/glue-sst2", 100)
    assert set(W.scores(scorer, task, task.test, None)) >= {"accuracy"}


SPLITS = sorted(p.stem for p in (REPO_ROOT / "conf" / "split").glob("*.yaml"))
SCALES = sorted(p.stem for p in (REPO_ROOT / "conf" / "scale").glob("*.yaml"))


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("scale", SCALES)
def test_every_split_and_scale_composes(split, scale):
    cfg = compose(f"+split={split}", f"scale={scale}")
    assert cfg["split"]["name"] == split and cfg["split"]["train"] and cfg["split"]["test"]
    assert cfg["scale"] == scale and cfg["prompt"]["len"] >= 1
    assert (cfg["scorer"]["kind"], cfg["model"]["name"]) == (("seq2seq", "bart-base") if scale == "paper" else ("cosine", "minilm"))


def test_experiment_list_tunes_with_seed_1_only_and_every_ist_has_its_msf(mirror):
    from ipt.experiments import ORDER, TUNE_SEED, phases

    runs = phases({"pt_lr": 0.01, "alpha": 1.0, "ist_lr": 0.03})
    assert [p for p in dict.fromkeys(p for p, _, _ in runs)] == ORDER
    seed = lambda ov: next(int(o.split("=")[1]) for o in ov if o.startswith("seed="))  # noqa: E731
    for phase, stage, ov in runs:
        assert (seed(ov) == TUNE_SEED) == phase.startswith("tune"), (phase, ov)
        if not phase.startswith("tune"):
            assert {"pt.lr=0.01"} <= set(ov) and (stage == "prompt_tuning" or "msf.alpha=1.0" in ov)
    # every learned-subspace IST invocation reads a decoder that an MSF invocation of the list writes: the
    # same MSF run id (which covers `tasks`, so IST must not restrict its tasks with it)
    from ipt import workbench as W
    from ipt.experiments import _compose
    from ipt.ist import msf_cfg

    msf = {W.run_id(_compose(ov), "msf") for p, s, ov in runs if s == "msf"}
    learned = [ov for p, s, ov in runs if s == "ist" and "subspace=random" not in ov]
    assert any(p == "tune_ist" for p, s, ov in runs) and learned
    same = [ov for p, s, ov in runs if "ist.seen_data=same" in ov]  # T_train-same(IST): every reported seed
    assert sorted(seed(ov) for ov in same) == [2, 3, 4] and all(p != "tune_ist" for p, s, ov in runs if "ist.seen_data=same" in ov)
    for ov in learned:
        assert W.run_id(msf_cfg(_compose(ov)), "msf") in msf, ov
    # the reported MSF runs get the longer budget, the alpha screen the scale's own
    # (the d_I above the headline twice as long: their 2000-step runs were still gaining)
    from ipt.experiments import HEADLINE_D, MSF_LONG_STEPS, MSF_REPORTED_STEPS

    steps = {(p, _compose(ov)["intrinsic_dim"] > HEADLINE_D): _compose(ov)["msf"]["steps"]
             for p, s, ov in runs if s == "msf"}
    assert steps == {("tune_msf", False): _compose(["+split=random"])["msf"]["steps"], ("msf", False): MSF_REPORTED_STEPS,
                     ("msf", True): MSF_LONG_STEPS}
    # ... and run all of it (no patience: dev plateaus of 300-400 steps preceded later gains)
    assert {_compose(ov)["msf"]["patience"] for q, s, ov in runs if q == "msf" and s == "msf"} == {None}


def test_each_ist_invocation_follows_the_msf_run_it_reads(mirror):
    """MSF and IST alternate: a learned-subspace IST invocation comes after its MSF run and before the MSF
    runs of later groups, so a session that ends between groups loses at most one group's decoders."""
    from ipt import workbench as W
    from ipt.experiments import MSF_GROUP, _compose, phases, segments
    from ipt.ist import msf_cfg

    runs = phases({"pt_lr": 0.01, "alpha": 1.0, "ist_lr": 0.03})
    at = {W.run_id(_compose(ov), "msf"): i for i, (p, s, ov) in enumerate(runs) if p == "msf"}
    for i, (p, s, ov) in enumerate(runs):
        if p == "ist" and "subspace=random" not in ov:
            j = at[W.run_id(msf_cfg(_compose(ov)), "msf")]
            assert j < i and not any(q == "msf" for q, _, _ in runs[j + MSF_GROUP:i]), (i, ov)
    segs = segments(runs)
    assert [len(t) for p, t in segs if p == "msf"] == [MSF_GROUP] * (len(at) // MSF_GROUP)
    assert sum(len(t) for _, t in segs) == len(runs)


def test_tuning_reads_its_own_value_and_extends_a_grid_whose_edge_wins(tmp_path, monkeypatch):
    """The chosen value is the phase's own (``msf.alpha``), not an earlier phase's choice that is also in the
    overrides (``pt.lr``); a winning edge grows the grid by one log-step and the phase runs again."""
    import common.aggregate
    import ipt.experiments as E

    monkeypatch.setattr(E, "CHOICES", tmp_path / "choices.json")
    monkeypatch.setattr(E, "_compose", lambda ov: {"ov": ov})
    monkeypatch.setattr(W, "record_dir", lambda cfg, stage: tmp_path)
    monkeypatch.setattr(E, "_matches", lambda rec, cfg, stage: rec["ov"] == cfg["ov"])
    monkeypatch.setattr(E, "phases", lambda got: [("tune_msf", "msf", ["pt.lr=0.003", f"msf.alpha={a}"])
                                                  for a in E.grid("tune_msf", got)])
    dev = {}
    monkeypatch.setattr(common.aggregate, "load_records", lambda folder: [
        {"ov": ["pt.lr=0.003", f"msf.alpha={a}"], "final": {"dev": {"mean_primary": s}}} for a, s in dev.items()])
    lo, mid, hi = E.ALPHA[0], E.ALPHA[1], E.ALPHA[-1]
    dev.update({a: 40.0 for a in E.ALPHA} | {mid: 42.0})
    assert E._choose("tune_msf") and E.choices()["alpha"] == mid  # inside the grid: chosen
    assert E.choices()["alpha_dev_scores"] == {str(a): dev[a] for a in E.ALPHA}
    E.CHOICES.unlink()
    dev.update({lo: 43.0})
    assert not E._choose("tune_msf")  # the low edge wins: one more point, no choice yet
    below = lo * lo / E.ALPHA[1]
    assert E.choices()["alpha_grid"] == pytest.approx([below, *E.ALPHA]) and "alpha" not in E.choices()
    dev.update({below: 39.0})
    assert E._choose("tune_msf") and E.choices()["alpha"] == lo and E.choices()["alpha_at_edge"] == ""
    assert hi in E.grid("tune_msf", E.choices())


def test_a_stage_1_record_matches_whatever_later_stages_default_to():
    """Stage-1 records stay found when a later stage's default (msf.alpha, ist.lr) changes."""
    from ipt.experiments import _compose, _matches

    rec = {"config": _compose(["+split=random", "seed=1", "pt.lr=0.01", "msf.alpha=1.0", "ist.lr=0.1"])}
    assert _matches(rec, _compose(["+split=random", "seed=1", "pt.lr=0.01", "msf.alpha=7.0"]), "prompt_tuning")
    assert not _matches(rec, _compose(["+split=random", "seed=1", "pt.lr=0.03"]), "prompt_tuning")
    assert not _matches(rec, _compose(["+split=random", "seed=1", "pt.lr=0.01", "msf.alpha=7.0"]), "msf")


def test_driver_skips_a_complete_msf_run_whose_decoder_is_gone(tmp_path, monkeypatch):
    """On a new machine the scratch decoders are gone: the driver does not re-run a complete MSF invocation
    (only an IST invocation that still needs its decoder does, via _ensure_decoder); an incomplete one runs."""
    import ipt.experiments as E
    from ipt import msf

    monkeypatch.setattr(E, "EXTRA", [f"records_dir={tmp_path}"])
    monkeypatch.setattr(W, "SCRATCH_DIR", tmp_path / "scratch")
    done, todo = (["+split=random", "intrinsic_dim=5", f"seed={s}"] for s in (2, 3))
    monkeypatch.setattr(E, "phases", lambda got: [("msf", "msf", done), ("msf", "msf", todo)])
    calls = []
    monkeypatch.setattr(msf, "stage", lambda cfg: calls.append(W.run_id(cfg, "msf")))
    cfg = E._compose(done)
    W.record_dir(cfg, "msf").mkdir(parents=True)
    (W.record_dir(cfg, "msf") / f"{W.run_id(cfg, 'msf')}.json").write_text(json.dumps({"status": "completed"}))
    assert not msf.checkpoint_path(cfg).is_file()
    E.run(workers=1)
    assert calls == [W.run_id(E._compose(todo), "msf")]


def test_a_lost_decoder_reruns_its_msf_only_when_ist_runs_remain(tmp_path, monkeypatch):
    import ipt.experiments as E
    from ipt import msf
    from ipt.ist import msf_cfg

    monkeypatch.setattr(E, "EXTRA", [f"records_dir={tmp_path}"])
    monkeypatch.setattr(W, "SCRATCH_DIR", tmp_path / "scratch")
    calls = []
    monkeypatch.setattr(msf, "stage", lambda cfg: calls.append(W.run_id(cfg, "msf")))
    cfg = E._compose(["+split=random", "intrinsic_dim=5", "seed=2", "ist.tasks=test", "subspace=learned"])
    E._ensure_decoder(cfg)
    assert calls == [W.run_id(msf_cfg(cfg), "msf")]  # decoder missing, IST runs to do
    folder = W.record_dir(cfg, "ist")
    folder.mkdir(parents=True)
    for i in E._record_ids("ist", cfg):
        (folder / f"{i}.json").write_text(json.dumps({"status": "completed"}))
    E._ensure_decoder(cfg)
    assert len(calls) == 1  # every IST run of the invocation done: nothing to re-run
    E._ensure_decoder(E._compose(["+split=random", "intrinsic_dim=5", "seed=2", "ist.tasks=test", "subspace=random"]))
    assert len(calls) == 1  # a random subspace reads no decoder


def test_random_subspace_runs_are_shared_across_splits_and_learned_ones_are_not():
    """The plan counts a random-subspace IST run once: its identity is the decoder's shape and seed, so the
    same unseen task under random and random_20 is one run; a learned subspace is each split's own MSF."""
    from ipt.experiments import _compose
    from ipt.ist import ist_run_id

    ids = {(sp, sub): ist_run_id(_compose([f"+split={sp}", "intrinsic_dim=5", "seed=2", f"subspace={sub}"]),
                                 "glue-rte", "test")
           for sp in ("random", "random_20") for sub in ("learned", "random")}
    assert ids[("random", "random")] == ids[("random_20", "random")]
    assert ids[("random", "learned")] != ids[("random_20", "learned")]
    other_seed = ist_run_id(_compose(["+split=random", "intrinsic_dim=5", "seed=3", "subspace=random"]), "glue-rte", "test")
    other_d = ist_run_id(_compose(["+split=random", "intrinsic_dim=25", "seed=2", "subspace=random"]), "glue-rte", "test")
    assert len({ids[("random", "random")], other_seed, other_d}) == 3


def test_plan_counts_the_records_that_exist_and_their_wall_time(tmp_path):
    from ipt.experiments import _compose, _measured, _record_ids

    cfg = _compose(["+split=random", f"records_dir={tmp_path}"])
    ids = _record_ids("prompt_tuning", cfg)
    assert len(ids) == len(set(ids)) > 1 and all("__prompt_tuning__seed2__" in i for i in ids)
    folder = W.record_dir(cfg, "prompt_tuning")
    folder.mkdir(parents=True)
    (folder / f"{ids[0]}.json").write_text(json.dumps({"wall_time_s": 1800.0}))
    assert _measured("prompt_tuning", cfg, ids) == (1, 0.5)
    assert _measured("msf", cfg, _record_ids("msf", cfg)) == (0, None)


def test_bench_table_gives_the_option_cache_speed_up():
    import pandas as pd

    from ipt.plots import bench_table

    rows = [{"task": "t", "n_options": 2, "mean_input_tokens": 30.0, "threads": 1, "bench": b, "metric": "examples_per_s",
             "value": v} for b, v in (("pt_train", 50.0), ("ist_train", 48.0), ("eval_options_cached", 300.0),
                                      ("eval_options_recomputed", 100.0))]
    t = bench_table(pd.DataFrame(rows)).iloc[0]
    assert t["option cache speed-up"] == 3.0 and t["pt_train"] == 50.0


def test_driver_out_sends_records_choices_and_plan_to_another_results_root(tmp_path, monkeypatch):
    import ipt.experiments as E

    for name in ("OUT", "CHOICES"):
        monkeypatch.setattr(E, name, getattr(E, name))  # restored after the test
    monkeypatch.setattr(E, "EXTRA", [])
    seen = {}
    monkeypatch.setattr(E, "run", lambda workers: seen.update(cfg=E._compose(["+split=random"]), choices=E.CHOICES))
    assert E.main(["run", "--out", str(tmp_path)]) == 0
    assert seen["cfg"]["records_dir"] == str((tmp_path / "records").resolve())
    assert seen["choices"] == tmp_path / "ipt" / "choices.json"


def test_tasks_figure_points_use_the_seeds_every_split_has():
    import pandas as pd

    from ipt.plots import tasks_points

    rows = [{"setting": "T_test(IST)", "split": "random", "d_I": 5, "subspace": "learned", "seed": seed,
             "rel": 80.0 + seed, "rel_cc": float(seed), "tasks": 10, "still_improving": False} for seed in (2, 3, 4)]
    rows.append({**rows[0], "split": "random_20", "rel": 70.0})
    p = tasks_points(pd.DataFrame(rows))
    assert sorted(p.seed) == [2, 2] and dict(zip(p.split, p.n)) == {"random": 100, "random_20": 20}  # no MSF run: the paper's counts
    assert p[p.split == "random"].rel.item() == 82.0  # seed 2 only: seeds 3 and 4 have no random_20 run
    alone = tasks_points(pd.DataFrame(rows[:3]))
    assert sorted(alone.seed) == [2, 3, 4]  # one split: all its seeds


def test_cls_noncls_table_shares_one_task_set_and_its_rule_waits_for_complete_runs():
    import pandas as pd

    from common.plots import OPEN
    from ipt.plots import cls_rule, cls_table, cls_text

    tasks = [f"t{i}" for i in range(6)]
    base = {"d_I": 5, "pt": 60.0, "zero_shot": 50.0, "rel_zs": 83.3, "still_improving": False, "run_tasks": 6.0}
    rows = [{**base, "setting": "T_train(MSF)", "split": sp, "task": f"{sp}{i}", "subspace": "learned", "seed": 2,
             "score": 55.0, "run_id": f"msf-{sp}"} for sp, n in (("cls", 3), ("noncls", 4)) for i in range(n)]
    rows += [{**base, "setting": "T_test(MSF)", "split": sp, "task": t, "subspace": "learned", "seed": 2, "score": 50.0,
              "run_id": f"msf-{sp}"} for sp in ("cls", "noncls") for t in tasks]
    for i, t in enumerate(tasks):  # in-type above cross-type on every task, by different amounts
        rows.append({**base, "setting": "T_test(IST)", "split": "cls", "task": t, "subspace": "learned", "seed": 2,
                     "score": 55.0 + i, "run_id": f"cls-{t}"})
        rows.append({**base, "setting": "T_test(IST)", "split": "noncls", "task": t, "subspace": "learned", "seed": 2,
                     "score": 50.0, "run_id": f"noncls-{t}"})
        # the random subspace reads no training task: half its runs were made under the random split, and that
        # split's seed 3 (no cls / noncls run has it) must stay out
        for sp, seed in (("random" if i < 3 else "cls", 2), ("random", 3)):
            rows.append({**base, "setting": "T_test(IST)", "split": sp, "task": t, "subspace": "random", "seed": seed,
                         "score": 40.0, "run_id": f"rand-{t}-{seed}"})
    rel = pd.DataFrame(rows).assign(rel=lambda x: 100 * x.score / x.pt)
    t = cls_table(rel).set_index("transfer")
    assert t.loc["in-type", "subspace from (training tasks)"] == "cls (3)" and t.loc["cross-type", "test tasks"] == "6 of 6"
    r = t[t.subspace == "random"].iloc[0]
    assert r["test tasks"] == "6 of 6" and r["seeds"] == 1 and r["mean score"] == 40.0
    assert t.loc["in-type", "chance-corrected %"] == "75.0"  # sum(score − 50) / sum(60 − 50) over 6 tasks
    assert "+7.5 points, higher on 6 of 6 pairs" in cls_rule(rel) and "the rule holds" in cls_rule(rel)
    flipped = rel.assign(split=rel.split.map({"cls": "noncls", "noncls": "cls"}).fillna(rel.split))
    assert "the rule does not hold" in cls_rule(flipped)
    going = rel[~((rel.split == "noncls") & (rel.setting == "T_test(IST)") & rel.task.isin(["t4", "t5"]))]
    assert cls_rule(going) is None and "no verdict until" in cls_text(going)
    assert cls_table(going).set_index("transfer").loc["cross-type", "test tasks"] == "4 of 6"
    rising = rel.assign(still_improving=(rel.split == "cls") & (rel.task == "t0"))
    assert "no verdict (a run still improving)" in cls_rule(rising) and OPEN in cls_text(rising)
    assert cls_text(rel[rel.setting != "T_test(IST)"]).startswith("(no IST run")
