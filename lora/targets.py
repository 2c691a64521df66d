"""The paper's weight names (Wq, Wk, Wv, Wo; W1, W2 for the FFN) -> each architecture's module names.

LoRA (Hu et al. 2022, §4.2) names the adapted matrices by their role in the Transformer: ``Wq, Wk,
Wv, Wo`` in attention; we add ``W1, W2`` for the FFN (Vaswani et al.'s names for its two matrices).
In encoder-decoder models a name covers every attention module (self- and cross-attention).

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
from common.errors import UserError

WEIGHTS = ("Wq", "Wk", "Wv", "Wo", "W1", "W2")

# Full-match regexes on module names, per family.
PATTERNS: dict[str, dict[str, str]] = {
    "bert": {"Wq": r".*attention\.self\.query", "Wk": r".*attention\.self\.key", "Wv": r".*attention\.self\.value",
             "Wo": r".*attention\.output\.dense", "W1": r".*intermediate\.dense",
             "W2": r".*layer\.\d+\.output\.dense"},
    "bart": {"Wq": r".*(self_attn|encoder_attn)\.q_proj", "Wk": r".*(self_attn|encoder_attn)\.k_proj",
             "Wv": r".*(self_attn|encoder_attn)\.v_proj", "Wo": r".*(self_attn|encoder_attn)\.out_proj",
             "W1": r".*layers\.\d+\.fc1", "W2": r".*layers\.\d+\.fc2"},
    "t5": {"Wq": r".*(SelfAttention|EncDecAttention)\.q", "Wk": r".*(SelfAttention|EncDecAttention)\.k",
           "Wv": r".*(SelfAttention|EncDecAttention)\.v", "Wo": r".*(SelfAttention|EncDecAttention)\.o",
           "W1": r".*DenseReluDense\.wi(_0|_1)?", "W2": r".*DenseReluDense\.wo"},
    # after split_gpt2: c_attn.{q,k,v} are nn.Linear
    "gpt2": {"Wq": r".*attn\.c_attn\.q", "Wk": r".*attn\.c_attn\.k", "Wv": r".*attn\.c_attn\.v",
             "Wo": r".*attn\.c_proj", "W1": r".*mlp\.c_fc", "W2": r".*mlp\.c_proj"},
}
PATTERNS["roberta"] = PATTERNS["bert"]
QKV = ("Wq", "Wk", "Wv")


def linear_modules(model: nn.Module) -> list[str]:
    """Names of the model's linear maps (nn.Linear and GPT-2's Conv1D), for error messages."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"]


def parse_weights(weights) -> list[str]:
    """``["Wq", "Wv"]`` or ``"Wq,Wv"`` -> ``["Wq", "Wv"]`` (validated, de-duplicated, in WEIGHTS order)."""
    items = [w.strip() for w in (weights.split(",") if isinstance(weights, str) else weights) if str(w).strip()]
    if not items:
        raise UserError(f"lora: weights is empty; choose from {list(WEIGHTS)} (e.g. [Wq,Wv])")
    canon = {w.lower(): w for w in WEIGHTS}
    bad = [w for w in items if w.lower() not in canon]
    if bad:
        raise UserError(f"lora: unknown weight name(s) {bad}; valid: {list(WEIGHTS)} "
                        f"(Wq, Wk, Wv, Wo: attention; W1, W2: the FFN)")
    got = {canon[w.lower()] for w in items}
    return [w for w in WEIGHTS if w in got]


def resolve(model: nn.Module, weights: list[str]) -> dict[str, list[str]]:
    """``{weight name: [module names]}`` in ``model``; a name that matches nothing is an error."""
    fam = arch.family(model)
    pats = PATTERNS[fam]
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    out = {}
    for w in weights:
        hits = [n for n in names if re.fullmatch(pats[w], n)]
        if not hits:
            raise UserError(f"lora: target {w} ({pats[w]!r}) matches no linear module of this {fam} model; "
                            f"its linear modules: {linear_modules(model)[:12]}{' ...' if len(names) > 12 else ''}")
        out[w] = hits
    return out


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
