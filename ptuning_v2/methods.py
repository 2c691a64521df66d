"""Deep prompts: P-Tuning v2 (Liu et al., ACL 2022, §3; https://arxiv.org/abs/2110.07602).

Trainable prefix keys and values are prepended to the self-attention of chosen layers of a frozen
model; the task head (linear on [CLS], per-token linear for tagging) is trained with them.

    python -m common.train task=rte method=deep_prompt method.prefix_len=16 method.layers=top:3

``layers`` (1-based, input to output; encoder blocks then decoder blocks for BART / T5):
``all`` | ``top:k`` | ``bottom:k`` | ``a-b`` | ``i,j,...``. ``reparam=true`` produces the prefixes
with the paper's MLP (embedding -> Linear(H, 512) -> tanh -> Linear(512, layers*2*H)).

Because the backbone and its embeddings are frozen, nothing below the lowest prompted layer needs
a gradient: autograd stops there by construction (tested).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from common import arch
from common.errors import UserError
from common.methods import MethodConfig, register_method, train_only
from common.models import TaskModel

from . import attention


@dataclass
class DeepPromptConfig(MethodConfig):
    name: str = "deep_prompt"
    lr: float = 1e-2  # P-Tuning v2's scripts use 5e-3..3e-2
    prefix_len: int = 16  # the paper: short prompts (< 20) suffice for simple classification
    layers: str = "all"  # all | top:k | bottom:k | a-b | i,j,...  (1-based)
    reparam: bool = False  # MLP reparameterisation (the paper finds it task-dependent)
    reparam_hidden: int = 512  # the paper's MLP width
    prefix_dropout: float = 0.1  # the reference code applies the model's hidden dropout to the prefix
    init_std: float = 1.0  # the reference code's nn.Embedding default init, N(0, 1)
    # The paper's code (and peft) pass prefixes as past_key_values, which shifts the input's position
    # ids by prefix_len in BERT / RoBERTa / GPT-2; keep that (true) or start positions at 0 (false).
    shift_positions: bool = True


def parse_layers(spec: str, n: int) -> list[int]:
    """``spec`` -> sorted 0-based block indices; clear errors for anything outside ``1..n``."""
    s = str(spec).strip().lower()
    valid = f"valid: all, top:k, bottom:k (1 <= k <= {n}), a-b or i,j,... with indices in 1..{n}"
    try:
        if s == "all":
            ids = list(range(n))
        elif s.startswith(("top:", "bottom:")):
            k = int(s.split(":", 1)[1])
            if not 1 <= k <= n:
                raise UserError(f"deep_prompt: layers={spec!r} asks for {k} layers; the model has {n}; {valid}")
            ids = list(range(n - k, n)) if s.startswith("top") else list(range(k))
        elif "-" in s:
            a, b = (int(x) for x in s.split("-", 1))
            ids = [i - 1 for i in range(a, b + 1)]
        else:
            ids = [int(x) - 1 for x in s.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"deep_prompt: cannot read layers={spec!r}; {valid}") from None
    if not ids:
        raise UserError(f"deep_prompt: layers={spec!r} selects no layer; {valid}")
    bad = [i + 1 for i in ids if not 0 <= i < n]
    if bad:
        raise UserError(f"deep_prompt: layer index {bad[0]} is outside the model's layers 1..{n}; {valid}")
    return sorted(set(ids))


class DeepPrompt(nn.Module):
    """Prefix keys / values for ``len(layer_ids)`` layers, each ``(heads, prefix_len, head_dim)``."""

    def __init__(self, layer_ids: list[int], prefix_len: int, heads: int, head_dim: int, hidden: int,
                 reparam: bool = False, reparam_hidden: int = 512, dropout: float = 0.1, init_std: float = 1.0):
        super().__init__()
        self.layer_ids, self.P, self.heads, self.d = list(layer_ids), prefix_len, heads, head_dim
        n, D = len(layer_ids), heads * head_dim
        self.reparam = reparam
        if reparam:
            self.embedding = nn.Parameter(torch.randn(prefix_len, hidden) * init_std)  # (P, H)
            self.mlp_in = nn.Linear(hidden, reparam_hidden)
            self.mlp_out = nn.Linear(reparam_hidden, n * 2 * D)
        else:
            self.prefix = nn.Parameter(torch.randn(n, 2, heads, prefix_len, head_dim) * init_std)
        self.dropout = nn.Dropout(dropout)

    def layer_kv(self, j: int) -> torch.Tensor:
        """Keys and values of the j-th prompted layer: (2, heads, P, d)."""
        if not self.reparam:
            return self.prefix[j]
        D = self.heads * self.d
        h = torch.tanh(self.mlp_in(self.embedding))  # (P, 512)
        rows = slice(j * 2 * D, (j + 1) * 2 * D)  # this layer's rows of the output projection only
        out = nn.functional.linear(h, self.mlp_out.weight[rows], self.mlp_out.bias[rows])  # (P, 2D)
        return out.view(self.P, 2, self.heads, self.d).permute(1, 2, 0, 3)  # (2, heads, P, d)

    def all_kv(self) -> torch.Tensor:
        """(layers, 2, heads, P, d) — e.g. to hand the same tensors to peft."""
        return torch.stack([self.layer_kv(j) for j in range(len(self.layer_ids))])

    def provider(self, j: int, batch_size: int, dtype: torch.dtype, device: torch.device):
        kv = self.dropout(self.layer_kv(j)).to(dtype=dtype, device=device)
        kv = kv.unsqueeze(1).expand(2, batch_size, *kv.shape[1:])  # (2, B, heads, P, d)
        return kv[0], kv[1]


def _extra_positions(cfg: DeepPromptConfig) -> int:
    if cfg.prefix_len <= 0:
        raise UserError(f"deep_prompt: prefix_len must be >= 1, got {cfg.prefix_len}")
    return cfg.prefix_len  # the attended length stays within what the model was pretrained for


@register_method("deep_prompt", DeepPromptConfig, extra_positions=_extra_positions)
def attach_deep_prompt(model: TaskModel, cfg: DeepPromptConfig) -> None:
    blocks = arch.layers(model.backbone)
    ids = parse_layers(cfg.layers, len(blocks))
    heads, d = arch.attention_shape(model.backbone)
    train_only(model, lambda n, p: False)
    prompt = DeepPrompt(ids, cfg.prefix_len, heads, d, arch.hidden_size(model.backbone), cfg.reparam,
                        cfg.reparam_hidden, cfg.prefix_dropout, cfg.init_std)
    model.deep_prompt = prompt
    model.position_offset = cfg.prefix_len if cfg.shift_positions else 0
    attention.enable(model.backbone)
    for j, i in enumerate(ids):
        attention.set_prefix(arch.self_attention(blocks[i]), partial(prompt.provider, j))
