"""Training memory of one step, measured the same way for every method.

    mem = training_memory(model, batch)   # bytes: parameters, gradients, optimizer state, saved activations

The sum counts what a training step must hold at once: every parameter (trainable or frozen), a gradient
per trainable parameter, AdamW's two moments per trainable parameter (read from the optimizer after one
real step), and the tensors autograd saves for the backward pass (``torch.autograd.graph.saved_tensors_hooks``;
each storage once, parameters left out since they are counted already). Peak memory is the cross-check:
the process's peak RSS on CPU (which also holds the Python runtime and libraries, so it is larger), or
``torch.cuda.max_memory_allocated`` after a reset on CUDA. The LST paper's figure reads the allocator's peak
on a GPU without a reset, so its numbers include everything allocated before the step as well.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@contextmanager
def count_saved(exclude: set[int] | None = None):
    """Within the block, record every tensor autograd saves for backward: yields a dict storage-id -> bytes
    (each storage once; storages in ``exclude``, e.g. the parameters', left out)."""
    seen: dict[int, int] = {}
    skip = exclude or set()

    def pack(t: torch.Tensor):
        key = t.untyped_storage().data_ptr()
        if key not in skip and key not in seen:
            seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield seen


def training_memory(model: nn.Module, batch: dict, lr: float = 1e-5) -> dict:
    """One full training step (forward, backward, AdamW step) on ``batch``; the bytes it needs, by kind."""
    params = {p.untyped_storage().data_ptr(): p for p in model.parameters()}
    trainable = [p for p in params.values() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr)
    device = trainable[0].device if trainable else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.train()
    with count_saved(exclude=set(params)) as saved:
        loss = model(batch)["loss"]
    loss.backward()
    opt.step()
    state = sum(_bytes(v) for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.ndim > 0)
    out = {"param_bytes": sum(_bytes(p) for p in params.values()),
           "grad_bytes": sum(_bytes(p) for p in trainable),
           "optimizer_bytes": state,
           "activation_bytes": sum(saved.values())}
    out["total_bytes"] = sum(out.values())
    opt.zero_grad(set_to_none=True)
    from .trainer import peak_memory_mb

    out["peak_mb"] = peak_memory_mb(device)  # RSS (CPU, whole process) or allocator peak since the reset (CUDA)
    return out
