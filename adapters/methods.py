"""Bottleneck adapters: Houlsby et al. 2019 (§2.1, https://arxiv.org/abs/1902.00751) and the Pfeiffer
placement of AdapterFusion (Pfeiffer et al. 2021, §3, https://arxiv.org/abs/2005.00247).

An adapter is ``A(h) = W_up f(W_down h)`` with ``W_down (m, d)``, ``W_up (d, m)``, ``m = d / reduction_factor``;
the backbone is frozen. Placement (the same as AdapterHub's ``double_seq_bn`` / ``seq_bn``):

- ``houlsby``: two adapters per block, on the outputs of the attention output projection (Wo, self-attention)
  and of the FFN output projection (W2), before each residual add: ``y -> y + A(y)``. The block's LayerNorms
  train too (Houlsby §2.1: "we also train the layer normalization parameters per task").
- ``pfeiffer``: one adapter after the FFN. With the block's pretrained LayerNorm ``LN`` after the FFN
  (post-LN: BERT, RoBERTa, MiniLM, BART) the output ``LN(z)``, ``z = x + FFN(x)``, becomes
  ``LN(z + A(LN(z)))`` (the LayerNorm before and after the adapter, both frozen); in pre-LN models (T5, GPT-2)
  the block output ``z`` becomes ``z + A(z)``.

Init ``houlsby`` (default): both projections truncated normal N(0, 1e-2) in ±2 std, biases zero (near-identity);
``zero_up``: W_up = 0, so the model starts exactly as the base model; ``bert``: N(0, 0.02) (AdapterHub's default).

    python -m common.train task=rte method=adapter method.config=pfeiffer method.reduction_factor=16

    model, tok = build_task_model("minilm", "classification", 2)
    attach_method(model, {"name": "adapter", "config": "houlsby", "reduction_factor": 16})
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from common import arch
from common.errors import UserError
from common.methods import MethodConfig, _is_layernorm, register_method, train_only
from common.models import TaskModel

CONFIGS = ("pfeiffer", "houlsby")
INITS = ("houlsby", "zero_up", "bert")
NON_LINEARITIES = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU, "tanh": nn.Tanh}


@dataclass
class AdapterConfig(MethodConfig):
    name: str = "adapter"
    lr: float = 1e-4  # AdapterFusion's adapter lr (Houlsby's grid: 3e-5 ... 3e-3)
    config: str = "pfeiffer"  # pfeiffer | houlsby
    reduction_factor: int = 16  # bottleneck m = hidden / reduction_factor (Pfeiffer et al.: 16)
    size: Optional[int] = None  # bottleneck m directly (overrides reduction_factor; Houlsby's size sweep)
    non_linearity: str = "relu"  # relu (Pfeiffer) | gelu | swish | tanh
    init: str = "houlsby"  # houlsby: trunc. N(0, 1e-2) (near-identity) | zero_up: exact identity | bert: N(0, 0.02)


class Adapter(nn.Module):
    """``h -> W_up f(W_down h)``: (..., d) -> (..., m) -> (..., d)."""

    def __init__(self, d: int, m: int, non_linearity: str, init: str):
        super().__init__()
        self.down, self.act, self.up = nn.Linear(d, m), NON_LINEARITIES[non_linearity](), nn.Linear(m, d)
        for lin in (self.down, self.up):
            nn.init.zeros_(lin.bias)
            if init == "bert":
                nn.init.normal_(lin.weight, std=0.02)
            else:  # houlsby; zero_up overrides W_up below
                nn.init.trunc_normal_(lin.weight, std=1e-2, a=-2e-2, b=2e-2)
        if init == "zero_up":
            nn.init.zeros_(self.up.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(h)))


class _Wrapper(nn.Module):
    """A module wrapping ``inner`` with an adapter; other attributes are the wrapped module's (model code
    reads e.g. ``wo.weight.dtype`` in T5 or ``layer_idx`` in GPT-2 blocks)."""

    inner_name = "inner"

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__(self.inner_name), name)


class AfterOutput(_Wrapper):
    """Houlsby: a sub-layer's output projection followed by its adapter, ``y -> y + A(y)``."""

    inner_name = "proj"

    def __init__(self, proj: nn.Module, adapter: Adapter):
        super().__init__()
        self.proj, self.adapter = proj, adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)  # (B, L, d)
        return y + self.adapter(y)


class AroundLayerNorm(_Wrapper):
    """Pfeiffer in a post-LN block: ``LN(z) -> LN(z + A(LN(z)))`` with the block's own LayerNorm."""

    inner_name = "ln"

    def __init__(self, ln: nn.Module, adapter: Adapter):
        super().__init__()
        self.ln, self.adapter = ln, adapter

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.ln(z + self.adapter(self.ln(z)))


class AfterBlock(_Wrapper):
    """Pfeiffer in a pre-LN block (T5, GPT-2): the block's output hidden state ``z -> z + A(z)``."""

    inner_name = "block"

    def __init__(self, block: nn.Module, adapter: Adapter):
        super().__init__()
        self.block, self.adapter = block, adapter

    def _out(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.adapter(z)

    def forward(self, *args, **kwargs):
        out = self.block(*args, **kwargs)
        if isinstance(out, tuple):  # blocks that also return attention weights / caches
            return (self._out(out[0]), *out[1:])
        return self._out(out)


def bottleneck(cfg: AdapterConfig, d: int) -> int:
    if cfg.size is not None:
        if cfg.size < 1:
            raise UserError(f"adapter: size must be >= 1, got {cfg.size}")
        return cfg.size
    if cfg.reduction_factor < 1 or d % cfg.reduction_factor:
        raise UserError(f"adapter: reduction_factor={cfg.reduction_factor} must divide the hidden size {d} "
                        f"(e.g. {', '.join(str(r) for r in (2, 4, 8, 16, 32, 64) if d % r == 0)}), or set method.size")
    return d // cfg.reduction_factor


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def _ffn_layernorms(model: nn.Module) -> list[str]:
    """Post-LN blocks' LayerNorm after the FFN (BERT/RoBERTa ``layer.N.output.LayerNorm``, BART ``final_layer_norm``)."""
    pat = {"bert": r".*layer\.\d+\.output\.LayerNorm", "roberta": r".*layer\.\d+\.output\.LayerNorm",
           "bart": r".*layers\.\d+\.final_layer_norm"}[arch.family(model)]
    return [n for n, _ in model.named_modules() if re.fullmatch(pat, n)]


def check_options(cfg: AdapterConfig) -> None:
    for key, value, valid in (("config", cfg.config, CONFIGS), ("init", cfg.init, INITS),
                              ("non_linearity", cfg.non_linearity, tuple(NON_LINEARITIES))):
        if value not in valid:
            raise UserError(f"adapter: {key}={value!r}; valid: {', '.join(valid)}")


def add_adapters(backbone: nn.Module, cfg: AdapterConfig,
                 make: Optional[Callable[[int, int], nn.Module]] = None) -> list[nn.Module]:
    """Insert ``cfg``'s adapters into ``backbone`` in place; returns them (input to output order).
    ``make(d, m)`` builds what sits at each place (default: one :class:`Adapter`; MT-A: one per task)."""
    check_options(cfg)
    d = arch.hidden_size(backbone)
    m = bottleneck(cfg, d)
    new = (lambda: make(d, m)) if make is not None else (lambda: Adapter(d, m, cfg.non_linearity, cfg.init))
    added = []
    if cfg.config == "houlsby":
        found = arch.resolve_weights(backbone, ["Wo", "W2"], who="adapter")
        self_wo = [n for n in found["Wo"] if not n.endswith(("encoder_attn.out_proj", "EncDecAttention.o"))]
        for name in sorted(self_wo + found["W2"], key=_order(backbone)):
            a = new()
            _set(backbone, name, AfterOutput(backbone.get_submodule(name), a))
            added.append(a)
    elif arch.family(backbone) in ("bert", "roberta", "bart"):
        for name in _ffn_layernorms(backbone):
            a = new()
            _set(backbone, name, AroundLayerNorm(backbone.get_submodule(name), a))
            added.append(a)
    else:  # pre-LN: after each block
        ids = {id(b): n for n, b in backbone.named_modules()}
        for block in arch.layers(backbone):
            a = new()
            _set(backbone, ids[id(block)], AfterBlock(block, a))
            added.append(a)
    return added


def _order(model: nn.Module):
    pos = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return lambda name: pos[name]


@register_method("adapter", AdapterConfig)
def attach_adapter(model: TaskModel, cfg: AdapterConfig) -> None:
    """Freeze the backbone, insert the adapters (trainable); Houlsby also trains the LayerNorms."""
    train_only(model, lambda n, p: False)
    ln = {id(p) for mod in model.backbone.modules() if _is_layernorm(mod) for p in mod.parameters(recurse=False)}
    for a in add_adapters(model.backbone, cfg):
        a.requires_grad_(True)
    if cfg.config == "houlsby":
        for p in model.backbone.parameters():
            if id(p) in ln:
                p.requires_grad_(True)

# registers method=adapter_fusion; at the end because fusion imports this module's names
from . import fusion as _fusion  # noqa: F401
