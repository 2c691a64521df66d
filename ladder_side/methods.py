"""Ladder side-tuning (Sung, Cho, Bansal, NeurIPS 2022, §3, https://arxiv.org/abs/2206.06522): ``method=lst``.

A small side network runs beside the frozen backbone and reads it through ladders; the backbone runs without
building an autograd graph, so training never backpropagates through it. Encoder path (BERT, RoBERTa, MiniLM,
the BART encoder):

    h_0 .. h_n = backbone(x)                      # embedding output and every block's output, no grad: (B, L, d)
    s = side_in(h_0)                              # (B, L, d/r)
    for each kept layer i:  s = block_i( g_i * s + (1 - g_i) * down_i(h_i) ),  g_i = sigmoid(alpha_i / T)
    out = up(LN(s))                               # (B, L, d) -> the task head (the model's pooling)

T5 (generation tasks): a side encoder and a side decoder, ``ladder_side/t5.py``.

Side blocks are the backbone's block type with every width divided by r (``reduction_factor``; head count
kept). ``side_layers`` keeps a subset of layers (1-based; a dropped layer has no block and no ladder). Init:
``fisher`` keeps, per side block, the backbone block's rows / columns with the largest empirical Fisher
information on ``fisher_samples`` training examples (batch 1): q/k/v rows ranked jointly within each head,
FFN rows by W1, the residual dimensions by Wo's and W2's rows together, kept columns propagated;
``magnitude`` ranks by |W| instead; ``random`` keeps the blocks' own init. ``gate``: learned (above), fixed
(g = 0.5) or sum (s + down_i(h_i)). ``cache_backbone`` (beyond the paper): the frozen backbone's outputs are the
same every epoch (it runs in eval mode), so they are computed once per input and kept in memory (fp16).

    python -m common.train task=rte method=lst method.reduction_factor=8 method.init=fisher

    model, tok = build_task_model("minilm", "classification", 2)
    attach_method(model, {"name": "lst", "reduction_factor": 8, "init": "magnitude"})
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from common import arch
from common.errors import UserError
from common.methods import MethodConfig, register_method, train_only
from common.models import TaskModel

GATES = ("learned", "fixed", "sum")
INITS = ("fisher", "magnitude", "random")


@dataclass
class LSTConfig(MethodConfig):
    name: str = "lst"
    lr: float = 3e-3  # LST's GLUE lr (T5-base); tuned on dev per task
    reduction_factor: int = 8  # every side width = backbone width / r (paper: 8)
    side_layers: Optional[list[int]] = None  # 1-based backbone layers with a side block and a ladder; null = all
    gate: str = "learned"  # learned: sigmoid(alpha / T), alpha init 0 | fixed: 0.5 | sum: s + down(h)
    gate_T: float = 0.1  # the gate's temperature (paper: 0.1)
    init: str = "fisher"  # fisher | magnitude | random
    fisher_samples: int = 1024  # training examples for the Fisher init (paper: 1024, batch 1)
    cache_backbone: bool = False  # compute the frozen backbone's per-layer outputs once per input, keep them
    cache_dtype: str = "float16"  # float16 halves the cache (outputs differ ~1e-3); float32 is exact
    # The side blocks' attention-probability dropout (encoder path). 0 lets SDPA run its fused kernel, which keeps
    # no (B, heads, L, L) maps for backward: at batch 32 x 128 that cuts MiniLM's LST activations ~4x. null = the
    # backbone's own value (MiniLM 0.1, the paper's setting).
    side_attention_dropout: Optional[float] = 0.0


# ----------------------------------------------------------------------------- side network
def side_config(config, r: int, attention_dropout: Optional[float] = None):
    """The backbone's config with every width divided by ``r`` (head count kept) and, unless None, the given
    attention-probability dropout."""
    c = copy.deepcopy(config)
    fam = c.model_type
    d = arch.hidden_size_of(c)
    heads = getattr(c, "num_attention_heads", None) or getattr(c, "encoder_attention_heads", None)
    ffn = getattr(c, "intermediate_size", None) or getattr(c, "encoder_ffn_dim", None)
    for name, width in (("hidden", d), ("ffn", ffn)):
        if width % r:
            raise UserError(f"lst: reduction_factor={r} must divide the backbone's {name} width {width}")
    if (d // r) % heads:
        raise UserError(f"lst: the side width {d // r} (= {d} / {r}) must be a multiple of the {heads} heads "
                        f"(the side network keeps the head count); try r in "
                        f"{[k for k in (2, 4, 8, 16, 32) if d % k == 0 and (d // k) % heads == 0]}")
    if fam in ("bert", "roberta"):
        c.hidden_size, c.intermediate_size = d // r, ffn // r
        if attention_dropout is not None:
            c.attention_probs_dropout_prob = attention_dropout
    elif fam == "bart":
        c.d_model, c.encoder_ffn_dim = d // r, ffn // r
        if attention_dropout is not None:
            c.attention_dropout = attention_dropout
    else:
        raise UserError(f"lst: the encoder side network supports BERT, RoBERTa (MiniLM) and BART, not {fam}")
    return c


def kept_layers(side_layers: Optional[list[int]], n: int) -> list[int]:
    """The 1-based layers (of ``n``) that keep a side block and a ladder, validated and sorted."""
    kept = list(range(1, n + 1)) if side_layers is None else list(side_layers)
    if not kept:
        raise UserError("lst: side_layers is empty; keep at least one layer (1-based), or null for all")
    bad = [i for i in kept if not 1 <= i <= n]
    if bad or len(set(kept)) != len(kept):
        raise UserError(f"lst: side_layers {kept} must be distinct layers in 1..{n} (this backbone has {n})")
    return sorted(kept)


def ladder_mix(gate: str, g: torch.Tensor, i: int, s: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """The input of side block i: g_i * s + (1 - g_i) * down_i(h_i), or s + down_i(h_i) for ``gate=sum``."""
    if gate == "sum":
        return s + down
    gi = g[i] if gate == "learned" else 0.5
    return gi * s + (1 - gi) * down


class LadderSide(nn.Module):
    """The side network with its ladders and gates: word embeddings (B, L, d) -> token states (B, L, d)."""

    def __init__(self, backbone: nn.Module, cfg: LSTConfig):
        super().__init__()
        self.kept = kept_layers(cfg.side_layers, len(arch.encoder_blocks(backbone)))
        self.backbone = [backbone]  # a list: not a submodule (never trained, never saved with the side network)
        self.config = side_config(backbone.config, cfg.reduction_factor, cfg.side_attention_dropout)
        d, ds = arch.hidden_size(backbone), arch.hidden_size_of(self.config)
        block_cls = type(arch.encoder_blocks(backbone)[0])
        self.blocks = nn.ModuleList([block_cls(self.config) for _ in self.kept])
        self.ladders = nn.ModuleList([nn.Linear(d, ds) for _ in self.kept])  # down_i: (B, L, d) -> (B, L, d/r)
        self.side_in = nn.Linear(d, ds)
        self.alpha = nn.Parameter(torch.zeros(len(self.kept)), requires_grad=cfg.gate == "learned")
        self.gate, self.T = cfg.gate, cfg.gate_T
        self.norm = nn.LayerNorm(ds)
        self.up = nn.Linear(ds, d)
        self.cache_backbone = cfg.cache_backbone
        self.cache_dtype = {"float16": torch.float16, "float32": torch.float32}[cfg.cache_dtype]
        self.cache: dict[bytes, list[torch.Tensor]] = {}  # sha1 of an input's embeddings -> its states (fp16)

    def gates(self) -> torch.Tensor:
        return torch.sigmoid(self.alpha / self.T)  # (n_kept,), 0.5 at init

    @torch.no_grad()
    def backbone_states(self, embeds: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """h_0 and the kept layers' outputs, from the frozen backbone in eval mode (no graph): (B, L, d) each."""
        bb = self.backbone[0]
        bb.eval()  # frozen feature extractor: no dropout, so the states are the same every epoch (cacheable)
        hs = arch.layer_states(bb, embeds, mask)
        return [hs[0]] + [hs[i] for i in self.kept]

    def states(self, embeds: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        if not self.cache_backbone:
            return self.backbone_states(embeds, mask)
        # key: each row's embedded input up to its length (the same input gives the same states)
        lengths = mask.sum(1).tolist()
        keys = [hashlib.sha1(embeds[b, :n].detach().cpu().numpy().tobytes()).digest() for b, n in enumerate(lengths)]
        missing = [b for b, k in enumerate(keys) if k not in self.cache]
        if missing:
            idx = torch.tensor(missing, device=embeds.device)
            fresh = self.backbone_states(embeds[idx], mask[idx])
            for j, b in enumerate(missing):
                self.cache[keys[b]] = [h[j, : lengths[b]].to(self.cache_dtype).cpu() for h in fresh]
        L = embeds.size(1)
        out = []
        for k in range(len(self.kept) + 1):  # re-pad each layer's states to this batch's width
            rows = [torch.nn.functional.pad(self.cache[key][k], (0, 0, 0, L - n)) for key, n in zip(keys, lengths)]
            out.append(torch.stack(rows).to(device=embeds.device, dtype=embeds.dtype))
        return out

    def cache_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for v in self.cache.values() for t in v)

    def record_stats(self) -> dict:
        """What the run record keeps of this module (``common.run``): the backbone cache's size, when caching."""
        return {"backbone_cache_mb": round(self.cache_bytes() / 2**20, 1)} if self.cache_backbone else {}

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hs = self.states(embeds, mask)  # [h_0, h_kept...], each (B, L, d)
        s = self.side_in(hs[0])  # (B, L, d/r)
        block_mask = arch.bidirectional_mask(self.config, s, mask)
        g = self.gates()
        for i, (block, ladder) in enumerate(zip(self.blocks, self.ladders)):
            x = ladder_mix(self.gate, g, i, s, ladder(hs[i + 1]))  # ladder: (B, L, d) -> (B, L, d/r)
            s = arch.run_block(block, x, block_mask)  # (B, L, d/r)
        return self.up(self.norm(s))  # (B, L, d)

    def stacks(self) -> list[tuple[list[nn.Module], list[int], nn.ModuleList]]:
        """(backbone blocks, kept layers, side blocks) per stack, for the init."""
        return [(arch.encoder_blocks(self.backbone[0]), self.kept, self.blocks)]


# ----------------------------------------------------------------------------- init from the backbone
def _block_norms(block: nn.Module) -> list[nn.Module]:
    """The block's LayerNorms (BERT / BART LayerNorm, T5's RMS norm), in order."""
    return [m for m in block.modules() if type(m).__name__.endswith("LayerNorm")]


def row_scores(weights: dict[str, nn.Linear], fisher: dict[int, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Per output row of each matrix: summed Fisher information (grad^2) or, without it, summed |W|."""
    out = {}
    for w, lin in weights.items():
        t = fisher[id(lin.weight)] if fisher is not None else lin.weight.detach().abs()
        out[w] = t.sum(1)  # (rows,)
    return out


def _heads_rows(sc: dict[str, torch.Tensor], heads: int, r: int) -> torch.Tensor:
    """Attention inner dims kept: q/k/v rows ranked jointly within each head, head_dim / r per head."""
    hd = sc["Wq"].numel() // heads
    qkv = (sc["Wq"] + sc["Wk"] + sc["Wv"]).view(heads, hd)
    return torch.cat([h * hd + qkv[h].topk(hd // r).indices.sort().values for h in range(heads)])


def select(block: nn.Module, fam: str, fisher, heads: int, r: int) -> dict[str, torch.Tensor]:
    """Indices kept from one backbone block: residual dims (d/r), attention dims (heads x head_dim/r), FFN dims
    (and ``cross``: a decoder block's cross-attention dims)."""
    sc = row_scores(arch.block_weights(block, fam), fisher)
    d = sc["Wo"].numel()
    out = {"resid": (sc["Wo"] + sc["W2"]).topk(d // r).indices.sort().values, "attn": _heads_rows(sc, heads, r),
           "ffn": sc["W1"].topk(sc["W1"].numel() // r).indices.sort().values}
    cross = arch.block_weights(block, fam, "cross")
    if cross:
        out["cross"] = _heads_rows(row_scores(cross, fisher), heads, r)
    return out


ROWS_COLS = {"Wq": ("attn", "resid"), "Wk": ("attn", "resid"), "Wv": ("attn", "resid"),
             "Wo": ("resid", "attn"), "W1": ("ffn", "resid"), "W2": ("resid", "ffn")}


def _copy(a: dict[str, nn.Linear], b: dict[str, nn.Linear], ix: dict[str, torch.Tensor], attn: str) -> None:
    for w in b:
        rows, cols = (attn if k == "attn" else k for k in ROWS_COLS[w])
        b[w].weight.copy_(a[w].weight[ix[rows]][:, ix[cols]])
        if b[w].bias is not None:  # T5 has no biases
            b[w].bias.copy_(a[w].bias[ix[rows]])


@torch.no_grad()
def init_from_backbone(side: LadderSide, fisher: dict[int, torch.Tensor] | None, r: int) -> list[dict]:
    """Copy each kept backbone block's selected rows / columns into its side block; returns the selections."""
    bb = side.backbone[0]
    heads, fam = arch.attention_shape(bb)[0], arch.family(bb)
    chosen = []
    for blocks, kept, side_blocks in side.stacks():
        for i, sblock in zip(kept, side_blocks):
            src = blocks[i - 1]
            ix = select(src, fam, fisher, heads, r)
            _copy(arch.block_weights(src, fam), arch.block_weights(sblock, fam), ix, "attn")
            if "cross" in ix:  # its keys / values read the side encoder's states: columns from the same dims
                _copy(arch.block_weights(src, fam, "cross"), arch.block_weights(sblock, fam, "cross"), ix, "cross")
            for na, nb in zip(_block_norms(src), _block_norms(sblock)):
                nb.weight.copy_(na.weight[ix["resid"]])
                if getattr(nb, "bias", None) is not None:
                    nb.bias.copy_(na.bias[ix["resid"]])
            chosen.append(ix)
        rel = [m for m in (blocks[0].modules()) if type(m).__name__ == "Embedding"]  # T5's relative position bias
        if rel:  # (buckets, heads): the head count is kept, so the backbone's table fits as it is
            [m for m in side_blocks[0].modules() if type(m).__name__ == "Embedding"][0].weight.copy_(rel[0].weight)
    return chosen


def empirical_fisher(model: TaskModel, items: list[dict], spec, tok, n: int) -> dict[int, torch.Tensor]:
    """Sum over ``n`` training examples (batch 1) of the squared gradient of the task loss w.r.t. every
    backbone weight matrix, through the backbone and the model's (fresh) head or its own LM head (T5), the
    side network bypassed."""
    from common.data import Collator

    bb, fam = model.backbone, arch.family(model.backbone)
    blocks = arch.encoder_blocks(bb) + (arch.decoder_blocks(bb) if model.side_lm is not None else [])
    mats = [lin.weight for blk in blocks for part in ("self", "cross")
            for lin in arch.block_weights(blk, fam, part).values()]
    fisher = {id(w): torch.zeros_like(w) for w in mats}
    was = [w.requires_grad for w in mats]
    side = model.token_encoder, model.side_lm
    model.token_encoder = model.side_lm = None  # the backbone's own states feed the head / its LM head
    collate = Collator(tok.pad_token_id, spec.task_type)
    bb.eval()
    try:
        for w in mats:
            w.requires_grad_(True)
        for item in items[:n]:
            loss = model(collate([item]))["loss"]
            grads = torch.autograd.grad(loss, mats, allow_unused=True)
            for w, g in zip(mats, grads):
                if g is not None:
                    fisher[id(w)] += g.detach() ** 2
    finally:
        model.token_encoder, model.side_lm = side
        for w, r in zip(mats, was):
            w.requires_grad_(r)
    return fisher


# ----------------------------------------------------------------------------- the method
def check_options(cfg: LSTConfig) -> None:
    for key, value, valid in (("gate", cfg.gate, GATES), ("init", cfg.init, INITS),
                              ("cache_dtype", cfg.cache_dtype, ("float16", "float32"))):
        if value not in valid:
            raise UserError(f"lst: {key}={value!r}; valid: {', '.join(valid)}")
    if cfg.side_attention_dropout is not None and not 0 <= cfg.side_attention_dropout < 1:
        raise UserError(f"lst: side_attention_dropout must be in [0, 1) or null, got {cfg.side_attention_dropout}")
    if cfg.reduction_factor < 1:
        raise UserError(f"lst: reduction_factor must be >= 1, got {cfg.reduction_factor}")


@register_method("lst", LSTConfig)
def attach_lst(model: TaskModel, cfg: LSTConfig) -> None:
    """Freeze the backbone; the side network (+ ladders, gates, up-projection) and the head train."""
    check_options(cfg)
    fam, generation = arch.family(model.backbone), model.task_type == "generation"
    if fam == "t5" and generation:
        from ladder_side.t5 import T5LadderSide

        if cfg.cache_backbone:
            raise UserError("lst: cache_backbone covers the encoder path; T5's decoder states depend on the "
                            "targets, so the T5 side network runs uncached (method.cache_backbone=false)")
        train_only(model, lambda n, p: False)
        side = model.side_lm = T5LadderSide(model.backbone, cfg)
    elif fam in ("t5", "gpt2") or generation:
        raise UserError(f"lst: {fam} with a {model.task_type} task has no side network here. Supported: encoders "
                        "(BERT, RoBERTa, MiniLM, the BART encoder) for classification, regression and tagging; "
                        "T5 (encoder + decoder) for generation tasks")
    else:
        if model.pooling == "eos":
            raise UserError("lst: pooling=eos reads BART's decoder, which has no side network; use "
                            "model.pooling=mean")
        train_only(model, lambda n, p: False)
        side = model.token_encoder = LadderSide(model.backbone, cfg)
    if cfg.init == "magnitude":
        init_from_backbone(side, None, cfg.reduction_factor)
    elif cfg.init == "fisher":
        def fisher_init(train, spec, tok):
            fisher = empirical_fisher(model, train, spec, tok, cfg.fisher_samples)
            init_from_backbone(side, fisher, cfg.reduction_factor)

        model.before_training.append(fisher_init)
    for n, p in side.named_parameters():
        p.requires_grad_(not n.endswith("alpha") or cfg.gate == "learned")  # fixed / sum gates do not train
