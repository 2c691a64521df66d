"""AdapterFusion (Pfeiffer et al. 2021, §3.2, https://arxiv.org/abs/2005.00247): per layer, attention over the
outputs of N frozen adapters (``method=adapter_fusion``).

At layer l, with the query q = the FFN sub-layer's output after the block's LayerNorm (Pfeiffer placement) and
each adapter's output a_n = A_n(q):
    s_n = softmax_n( (q W_Q) . (a_n W_K) )       # score dropout before the softmax
    o   = sum_n s_n (a_n W_V)                     # dynamic; static: sum_n s_n a_n (no W_V)
and the block's output LN(z + o) (post-LN) or z + o (pre-LN), as for a single Pfeiffer adapter. W_V starts at
the identity with 1e-6 off the diagonal; the loss adds 0.01 * ||I - W_V||^2 per layer (§3.2).

``method.adapters`` names the adapters by task (``[rte, mrpc, sst2]``: the best-dev checkpoint of that task and
seed among the runs of the experiments ``method.adapters_from``, written with ``trainer.save_checkpoint=true``) or
by checkpoint folder.

    python -m common.train task=rte method=adapter_fusion method.adapters=[rte,mrpc,sst2] seed=2
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from adapters.methods import (
    Adapter,
    AdapterConfig,
    AfterBlock,
    _ffn_layernorms,
    _set,
    _Wrapper,
    bottleneck,
)
from common import arch, paths
from common.errors import UserError
from common.methods import MethodConfig, register_method, train_only

V_OFF_DIAGONAL = 1e-6


class FusionLayer(nn.Module):
    """Attention of one position's query over N adapter outputs: q (B, L, d), a (B, L, N, d) -> (B, L, d)."""

    def __init__(self, d: int, dynamic: bool = True, score_dropout: float = 0.1):
        super().__init__()
        self.query, self.key = nn.Linear(d, d), nn.Linear(d, d)
        for lin in (self.query, self.key):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        self.value = nn.Linear(d, d, bias=False) if dynamic else None
        if self.value is not None:
            with torch.no_grad():
                self.value.weight.copy_(torch.full((d, d), V_OFF_DIAGONAL).fill_diagonal_(1.0))
        self.dropout = nn.Dropout(score_dropout)
        self.last_weights: torch.Tensor | None = None  # (B, L, N), kept when return_weights is set
        self.return_weights = False

    def forward(self, q: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("bld,blnd->bln", self.query(q), self.key(a))  # (B, L, N)
        w = torch.softmax(self.dropout(scores), dim=-1)  # (B, L, N), sums to 1 over adapters
        if self.return_weights:
            self.last_weights = w.detach()
        v = self.value(a) if self.value is not None else a  # (B, L, N, d)
        return torch.einsum("bln,blnd->bld", w, v)  # (B, L, d)

    def regularization(self) -> torch.Tensor:
        """||I - W_V||^2 (zero for static fusion)."""
        if self.value is None:
            return self.query.weight.new_zeros(())
        eye = torch.eye(self.value.weight.size(0), device=self.value.weight.device)
        return (eye - self.value.weight).pow(2).sum()


# ----------------------------------------------------------------------------- in the model (Pfeiffer placement)


class FusedAroundLayerNorm(_Wrapper):
    """Post-LN block: ``LN(z) -> LN(z + Fuse(q, [A_n(q)]))`` with ``q = LN(z)`` (one Pfeiffer adapter per task)."""

    inner_name = "ln"

    def __init__(self, ln: nn.Module, adapters: list[Adapter], fusion: FusionLayer):
        super().__init__()
        self.ln, self.adapters, self.fusion = ln, nn.ModuleList(adapters), fusion

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        q = self.ln(z)  # (B, L, d)
        a = torch.stack([ad(q) for ad in self.adapters], dim=2)  # (B, L, N, d)
        return self.ln(z + self.fusion(q, a))


class FusedAfterBlock(AfterBlock):
    """Pre-LN block (T5, GPT-2): the block's output ``z -> z + Fuse(z, [A_n(z)])`` (as :class:`AfterBlock`)."""

    def __init__(self, block: nn.Module, adapters: list[Adapter], fusion: FusionLayer):
        nn.Module.__init__(self)
        self.block, self.adapters, self.fusion = block, nn.ModuleList(adapters), fusion

    def _out(self, z: torch.Tensor) -> torch.Tensor:
        a = torch.stack([ad(z) for ad in self.adapters], dim=2)  # (B, L, N, d)
        return z + self.fusion(z, a)


def _adapter_sites(backbone: nn.Module) -> list[tuple[str, type]]:
    """Where a Pfeiffer adapter sits (as :func:`add_adapters` places it), with the fused wrapper for that place."""
    if arch.family(backbone) in ("bert", "roberta", "bart"):
        return [(n, FusedAroundLayerNorm) for n in _ffn_layernorms(backbone)]
    ids = {id(b): n for n, b in backbone.named_modules()}
    return [(ids[id(b)], FusedAfterBlock) for b in arch.layers(backbone)]


def add_fusion(backbone: nn.Module, states: list[dict[str, torch.Tensor]], cfg: AdapterConfig,
               dynamic: bool = True, score_dropout: float = 0.1) -> list[FusionLayer]:
    """Fuse N trained Pfeiffer adapters. ``states[n]`` maps ``<LayerNorm module name>.adapter.<param>`` (as
    ``save_trainable`` writes them, ``backbone.`` prefix removed) to tensors; adapters are frozen, fusion trains."""
    if not states:
        raise UserError("adapter_fusion: fusion needs at least one adapter")
    d = arch.hidden_size(backbone)
    m = bottleneck(cfg, d)
    layers = []
    for name, wrapper in _adapter_sites(backbone):
        adapters = []
        for i, st in enumerate(states):
            own = {k[len(name) + len(".adapter."):]: v for k, v in st.items() if k.startswith(name + ".adapter.")}
            if not own:
                raise UserError(f"adapter_fusion: adapter {i} has no weights for {name} (was it trained on this model?)")
            a = Adapter(d, m, cfg.non_linearity, "zero_up")
            a.load_state_dict(own)
            adapters.append(a.requires_grad_(False))
        fusion = FusionLayer(d, dynamic, score_dropout)
        _set(backbone, name, wrapper(backbone.get_submodule(name), adapters, fusion))
        layers.append(fusion)
    return layers


@torch.no_grad()
def fusion_weights(model: nn.Module, batch: dict) -> list[torch.Tensor]:
    """Each fusion layer's attention over the adapters for ``batch``, input to output: a (B, L, N) tensor
    per layer (AdapterFusion Fig. 5; a list because encoder and decoder layers see different lengths)."""
    layers = [m for m in model.modules() if isinstance(m, FusionLayer)]
    if not layers:
        raise UserError("the model has no fusion layers (method=adapter_fusion)")
    for f in layers:
        f.return_weights = True
    try:
        model(batch)
        return [f.last_weights for f in layers]
    finally:
        for f in layers:
            f.return_weights, f.last_weights = False, None


# ----------------------------------------------------------------------------- the method


@dataclass
class AdapterFusionConfig(MethodConfig):
    name: str = "adapter_fusion"
    lr: float = 5e-5  # AdapterFusion's fusion lr (§4.1)
    adapters: list[str] = field(default_factory=list)  # task names (found in adapters_from's runs) or checkpoint folders
    # the experiment(s) whose saved runs hold the named adapters (ST-A: adapters_st + adapters_src; MT-A: adapters_mt)
    adapters_from: list[str] = field(default_factory=lambda: ["adapters_st", "adapters_src"])
    adapter_seed: Optional[int] = None  # whose adapters: that seed's runs (the yaml sets the run's own seed)
    fusion: str = "dynamic"  # dynamic (with W_V) | static (without)
    reg_weight: float = 0.01  # weight of ||I - W_V||^2 per layer (§3.2)
    score_dropout: float = 0.1


def find_adapter(ref: str, experiment: str | list[str], seed: Optional[int]) -> Path:
    """The checkpoint folder ``ref`` names: a folder as given, or a task name looked up among the saved runs
    (``<scratch>/checkpoints/*/run.json``) of ``experiment`` (one or several) with ``seed``, best dev first."""
    if Path(ref).expanduser().is_dir():
        return Path(ref).expanduser()
    experiments = [experiment] if isinstance(experiment, str) else list(experiment)
    root = paths.SCRATCH_DIR / "checkpoints"
    saved = [(json.loads(f.read_text()), f.parent) for f in sorted(root.glob("*/run.json"))]
    saved = [(info, folder) for info, folder in saved if info.get("experiment") in experiments]
    runs = [(info.get("dev") if info.get("dev") is not None else -float("inf"), folder) for info, folder in saved
            if info.get("task") == ref and (seed is None or info.get("seed") == seed)]
    if not runs:
        have = sorted({info.get("task") for info, _ in saved})
        raise UserError(f"adapter_fusion: {ref!r} is neither a checkpoint folder nor a task with a saved adapter (seed "
                        f"{seed}) among the runs of experiment(s) {', '.join(experiments)} in {root}; tasks saved there: "
                        f"{', '.join(map(str, have)) or 'none'}. Train it first (method=adapter with "
                        f"trainer.save_checkpoint=true) or give a checkpoint folder.")
    return max(runs, key=lambda r: r[0])[1]  # several runs (an lr grid): the best on dev


def load_adapter_state(folder: str) -> tuple[dict[str, torch.Tensor], AdapterConfig]:
    """A trained adapter's tensors (``backbone.`` removed) and its config, from a ``save_trainable`` folder."""
    from safetensors.torch import load_file

    f = Path(folder)
    if not (f / "trainable.safetensors").is_file() or not (f / "method.json").is_file():
        raise UserError(f"adapter_fusion: no trained adapter in {f} (expected trainable.safetensors and method.json "
                        f"written by a method=adapter run with trainer.save_checkpoint=true)")
    meta = json.loads((f / "method.json").read_text())
    if meta.get("name") != "adapter" or meta.get("config") != "pfeiffer":
        raise UserError(f"adapter_fusion: {f} holds a {meta.get('name')}/{meta.get('config')} run; fusion takes "
                        f"Pfeiffer adapters (method=adapter method.config=pfeiffer)")
    state = {k[len("backbone."):]: v for k, v in load_file(str(f / "trainable.safetensors")).items()
             if k.startswith("backbone.") and ".adapter." in k}
    return state, AdapterConfig(**{k: v for k, v in meta.items() if k != "name"})


@register_method("adapter_fusion", AdapterFusionConfig)
def attach_adapter_fusion(model, cfg: AdapterFusionConfig) -> None:
    """Frozen backbone and adapters; fusion layers and a fresh head train; the V regulariser joins the loss."""
    if not cfg.adapters:
        raise UserError("adapter_fusion: method.adapters is empty; name at least one trained adapter's folder")
    if cfg.fusion not in ("dynamic", "static"):
        raise UserError(f"adapter_fusion: fusion={cfg.fusion!r}; valid: dynamic, static")
    loaded = [load_adapter_state(find_adapter(a, cfg.adapters_from, cfg.adapter_seed)) for a in cfg.adapters]
    shapes = {(c.reduction_factor, c.size, c.non_linearity) for _, c in loaded}
    if len(shapes) > 1:
        raise UserError(f"adapter_fusion: the adapters differ in shape {sorted(map(str, shapes))}; fuse adapters of one config")
    train_only(model, lambda n, p: False)
    layers = add_fusion(model.backbone, [s for s, _ in loaded], loaded[0][1], cfg.fusion == "dynamic", cfg.score_dropout)
    if cfg.fusion == "dynamic" and cfg.reg_weight:
        model.aux_losses.append(lambda: cfg.reg_weight * sum(f.regularization() for f in layers))
