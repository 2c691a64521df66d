"""LoRA's targets: the paper's weight names (Wq, Wk, Wv, Wo; W1, W2 for the FFN; map in ``common.arch``).

GPT-2 stores Wq, Wk and Wv as one fused ``Conv1D`` (``attn.c_attn``, output ``3H``); to adapt any
subset of them with a rank-r update each (as the paper's code does with ``MergedLinear``),
:func:`split_gpt2` replaces each targeted ``Conv1D`` by ``nn.Linear`` modules that compute the same
thing (``c_attn`` becomes :class:`FusedQKV` holding ``q``, ``k``, ``v``); :func:`join_gpt2` undoes it.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from common import arch

# The weight-name map (Wq ... W2 -> module names per architecture) lives in common.arch (adapters use it too).
WEIGHTS, PATTERNS, QKV, linear_modules = arch.WEIGHTS, arch.SUBLAYERS, arch.QKV, arch.linear_modules


def parse_weights(weights) -> list[str]:
    return arch.parse_weights(weights, who="lora")


def resolve(model: nn.Module, weights: list[str]) -> dict[str, list[str]]:
    return arch.resolve_weights(model, weights, who="lora")


# ----------------------------------------------------------------------------- GPT-2's fused Conv1D
def conv1d_to_linear(conv: nn.Module) -> nn.Linear:
    """transformers' Conv1D (weight (in, out)) -> nn.Linear (weight (out, in)) computing the same map."""
    w = conv.weight  # (in, out)
    lin = nn.Linear(w.shape[0], w.shape[1], device=w.device, dtype=w.dtype)
    with torch.no_grad():
        lin.weight.copy_(w.t())
        lin.bias.copy_(conv.bias)
    lin.requires_grad_(conv.weight.requires_grad)
    return lin


def linear_to_conv1d(lin: nn.Linear) -> nn.Module:
    from transformers.pytorch_utils import Conv1D

    conv = Conv1D(lin.out_features, lin.in_features).to(device=lin.weight.device, dtype=lin.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(lin.weight.t())
        conv.bias.copy_(lin.bias)
    return conv


class FusedQKV(nn.Module):
    """GPT-2's ``c_attn`` as three linear maps: ``x (B, L, H) -> [q(x), k(x), v(x)] (B, L, 3H)``."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        w, b = conv.weight, conv.bias  # (H, 3H), (3H,)
        H = w.shape[0]
        for i, part in enumerate("qkv"):
            lin = nn.Linear(H, H, device=w.device, dtype=w.dtype)
            with torch.no_grad():
                lin.weight.copy_(w[:, i * H:(i + 1) * H].t())
                lin.bias.copy_(b[i * H:(i + 1) * H])
            setattr(self, part, lin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)  # (B, L, 3H)

    def to_conv1d(self) -> nn.Module:
        from transformers.pytorch_utils import Conv1D

        q = self.q.weight
        H = q.shape[1]
        conv = Conv1D(3 * H, H).to(device=q.device, dtype=q.dtype)
        with torch.no_grad():
            conv.weight.copy_(torch.cat([self.q.weight, self.k.weight, self.v.weight], 0).t())  # (H, 3H)
            conv.bias.copy_(torch.cat([self.q.bias, self.k.bias, self.v.bias]))
        return conv


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def split_gpt2(model: nn.Module, weights: list[str]) -> None:
    """Replace the Conv1D modules that ``weights`` target by equivalent nn.Linear ones (in place)."""
    want = [w for w in weights if w not in QKV] + (["c_attn"] if set(weights) & set(QKV) else [])
    pats = {"c_attn": r".*attn\.c_attn", "Wo": PATTERNS["gpt2"]["Wo"], "W1": PATTERNS["gpt2"]["W1"],
            "W2": PATTERNS["gpt2"]["W2"]}
    for name, m in list(model.named_modules()):
        if type(m).__name__ != "Conv1D":
            continue
        for w in want:
            if re.fullmatch(pats[w], name):
                frozen = not m.weight.requires_grad
                new = FusedQKV(m) if w == "c_attn" else conv1d_to_linear(m)
                new.requires_grad_(not frozen)
                _set(model, name, new)


def join_gpt2(model: nn.Module) -> None:
    """Undo :func:`split_gpt2` (after LoRA was merged and unloaded): stock GPT-2 module types again."""
    for name, m in list(model.named_modules()):
        if isinstance(m, FusedQKV):
            _set(model, name, m.to_conv1d())
        elif isinstance(m, nn.Linear) and re.fullmatch(r".*(attn\.c_proj|mlp\.c_fc|mlp\.c_proj)", name):
            _set(model, name, linear_to_conv1d(m))
