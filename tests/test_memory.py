"""The training-memory measure: its parts add up and order the methods as their definitions require."""
import torch

from common.memory import count_saved, training_memory
from common.methods import attach_method
from common.models import build_task_model


def _batch(tok):
    enc = tok(["a cat sat on the mat", "dogs bark"], padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": torch.tensor([0, 1])}


def test_parts_of_the_step_follow_from_the_trainable_set():
    out = {}
    for cfg in ({"name": "full_ft"}, {"name": "head_only"}, {"name": "lora", "r": 4, "alpha": 8, "weights": ["Wq", "Wv"]}):
        torch.manual_seed(0)
        model, tok = build_task_model("tiny-bert", "classification", 2)
        attach_method(model, cfg)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        m = training_memory(model, _batch(tok))
        assert m["grad_bytes"] == 4 * n_train and m["optimizer_bytes"] == 2 * 4 * n_train  # fp32 AdamW moments
        assert m["total_bytes"] == sum(m[k] for k in ("param_bytes", "grad_bytes", "optimizer_bytes", "activation_bytes"))
        out[cfg["name"]] = m
    # a frozen backbone under a head saves no activations of its own; LoRA must backprop through the blocks
    assert out["head_only"]["activation_bytes"] < out["lora"]["activation_bytes"] <= out["full_ft"]["activation_bytes"]
    assert out["head_only"]["total_bytes"] < out["lora"]["total_bytes"] < out["full_ft"]["total_bytes"]


def test_count_saved_sees_activations_and_skips_what_it_is_told_to():
    w = torch.randn(4, 4, requires_grad=True)
    x = torch.randn(3, 4)
    with count_saved() as all_saved:
        (x @ w).sum()
    with count_saved(exclude={w.untyped_storage().data_ptr()}) as no_params:
        (x @ w).sum()
    assert sum(all_saved.values()) >= sum(no_params.values()) == x.numel() * 4
