"""Baselines on every tiny architecture: forward/backward, frozen weights, counts, save -> load."""
import pytest
import torch

from common import arch
from common.errors import UserError
from common.methods import (METHODS, attach_method, count_params, load_trainable, save_trainable,
                            trainable_state)
from common.models import build_task_model
from conftest import TINY

BASELINES = ["full_ft", "head_only", "bitfit", "layernorm", "top_k", "prompt_tuning"]
CFG = {"top_k": {"k": 1}, "prompt_tuning": {"prompt_len": 4}}


def method_cfg(name):
    return {"name": name, **CFG.get(name, {})}


def batch(tok, labels=(0, 1)):
    enc = tok(["a tiny test sentence", "another one"], ["with a pair", "b"], padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor(labels)}


def build(family, method, seed=0, task_type="classification", num_labels=2):
    torch.manual_seed(seed)
    model, tok = build_task_model(family, task_type, num_labels)
    attach_method(model, method_cfg(method), max_seq_len=32)
    return model, tok


def expected_trainable(model, method):
    """Each baseline's count from its definition, computed independently of the method code."""
    head = sum(p.numel() for p in model.head.parameters())
    bb = model.backbone
    if method == "full_ft":
        return count_params(model)[1]
    if method == "head_only":
        return head
    if method == "bitfit":
        return head + sum(p.numel() for n, p in bb.named_parameters() if n.endswith(".bias"))
    if method == "layernorm":
        return head + sum(p.numel() for m in bb.modules() if "LayerNorm" in type(m).__name__
                          for p in m.parameters(recurse=False))
    if method == "top_k":
        return head + sum(p.numel() for p in arch.layers(bb)[-1].parameters())
    if method == "prompt_tuning":
        return head + 4 * arch.hidden_size(bb)


@pytest.mark.parametrize("method", BASELINES)
@pytest.mark.parametrize("family", TINY)
def test_baseline_trains_only_what_it_should(family, method):
    model, tok = build(family, method)
    trainable, total = count_params(model)
    assert trainable == expected_trainable(model, method)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = model(batch(tok))
    out["loss"].backward()
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"frozen {n} changed"
    changed = [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]
    assert changed, "no trainable parameter moved"


@pytest.mark.parametrize("method", BASELINES)
@pytest.mark.parametrize("family", ["tiny-bert", "tiny-t5", "tiny-gpt2"])
def test_save_load_reproduces_outputs_and_writes_only_trainable_state(tmp_path, family, method):
    from safetensors.torch import load_file

    model, tok = build(family, method, seed=0)
    with torch.no_grad():  # move the trainable state away from its initial values
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    b = batch(tok)
    ref = model(b)["logits"]
    path = save_trainable(model, tmp_path, method_cfg(method))
    assert set(load_file(str(path))) == set(trainable_state(model))
    fresh, _ = build(family, method, seed=123)  # different head / prompt init
    fresh.eval()
    assert not torch.allclose(fresh(b)["logits"], ref)
    load_trainable(fresh, path)
    torch.testing.assert_close(fresh(b)["logits"], ref)


def test_load_rejects_state_of_another_method(tmp_path):
    model, _ = build("tiny-bert", "bitfit")
    path = save_trainable(model, tmp_path)
    other, _ = build("tiny-bert", "head_only")
    with pytest.raises(UserError, match="does not match"):
        load_trainable(other, path)


@pytest.mark.parametrize("family", TINY)
@pytest.mark.parametrize("task_type,num_labels", [("regression", 1), ("token_classification", 5),
                                                  ("multiple_choice", 0)])
def test_heads_forward_backward(family, task_type, num_labels, tokenizer):
    torch.manual_seed(0)
    model, tok = build_task_model(family, task_type, num_labels)
    attach_method(model, {"name": "prompt_tuning", "prompt_len": 3})
    enc = tok(["one two three", "four five", "six", "seven eight"], padding=True, return_tensors="pt")
    b = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if task_type == "regression":
        b["labels"] = torch.tensor([0.5, 4.0, 1.0, 2.0])
    elif task_type == "token_classification":
        b["labels"] = torch.randint(0, num_labels, enc["input_ids"].shape)
    else:  # 2 examples with 3 and 1 options -> flattened 4 sequences
        b["n_choices"], b["labels"] = torch.tensor([3, 1]), torch.tensor([2, 0])
    out = model(b)
    out["loss"].backward()
    if task_type == "token_classification":
        assert out["logits"].shape == (*enc["input_ids"].shape, num_labels)  # prompt positions stripped
    if task_type == "multiple_choice":
        assert out["logits"].shape == (2, 3) and torch.isinf(out["logits"][1, 1:]).all()
    assert model.input_transform.prompt.grad is not None


@pytest.mark.parametrize("family", ["tiny-bart", "tiny-t5", "tiny-gpt2"])
@pytest.mark.parametrize("method", ["full_ft", "bitfit", "prompt_tuning"])
def test_generation_loss_and_decoding(family, method):
    torch.manual_seed(0)
    model, tok = build_task_model(family, "generation", 0)
    if (family, method) == ("tiny-t5", "bitfit"):  # T5 has no biases and generation has no task head
        with pytest.raises(UserError, match="nothing to train"):
            attach_method(model, method_cfg(method))
        return
    attach_method(model, method_cfg(method))
    src = tok(["name [ x ]"], add_special_tokens=True)["input_ids"][0]
    tgt = tok(["x is a place"], add_special_tokens=False)["input_ids"][0] + [tok.sep_token_id]
    if model.kind == "causal":
        ids, labels = src + [tok.sep_token_id] + tgt, [-100] * (len(src) + 1) + tgt
    else:
        ids, labels = src, tgt
    out = model({"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
                 "labels": torch.tensor([labels])})
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    gen = model.generate([src, src[:3]], tok.pad_token_id, max_new_tokens=4, do_sample=False)
    assert len(gen) == 2 and all(len(g) <= 5 for g in gen)


def test_generation_rejects_encoder_model():
    with pytest.raises(UserError, match="seq2seq or causal"):
        build_task_model("tiny-bert", "generation", 0)


def test_top_k_out_of_range_names_valid_range():
    model, _ = build_task_model("tiny-bert", "classification", 2)
    with pytest.raises(UserError, match=r"k=9 .*\(1\.\.2\)"):
        attach_method(model, {"name": "top_k", "k": 9})


@pytest.mark.parametrize("family,limit", [("tiny-bert", 256), ("tiny-roberta", 256), ("tiny-gpt2", 256)])
def test_prompt_plus_input_beyond_positions_is_an_error(family, limit):
    model, _ = build_task_model(family, "classification", 2)
    assert arch.max_positions(model.backbone) == limit
    with pytest.raises(UserError, match="exceeds the model's 256 positions"):
        attach_method(model, {"name": "prompt_tuning", "prompt_len": 200}, max_seq_len=128)


def test_unknown_method_and_option_list_valid_names():
    model, _ = build_task_model("tiny-bert", "classification", 2)
    with pytest.raises(UserError, match="bitfit"):
        attach_method(model, {"name": "lora_xyz"})
    with pytest.raises(UserError, match="prompt_len"):
        attach_method(model, {"name": "prompt_tuning", "length": 3})
    with pytest.raises(UserError, match="prompt_len must be >= 1"):
        attach_method(model, {"name": "prompt_tuning", "prompt_len": 0})


def test_registry_holds_the_baselines():
    assert set(BASELINES) <= set(METHODS)
