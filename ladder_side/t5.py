"""LST's T5 path (Sung, Cho, Bansal, NeurIPS 2022, §3 and Fig. 2): a side encoder-decoder beside a frozen T5.

    e_0 .. e_n = backbone encoder(x)                        # no grad: embedding output, every block's output (B, L, d)
    s = side encoder(side_in(e_0), ladders from e_i)        # T5 blocks of width d/r: (B, L, d/r)
    t_0 .. t_n = backbone decoder(y_shifted, e_n)           # no grad, causal: (B, T, d)
    u = side decoder(side_in_dec(t_0), ladders from t_i, cross-attending to s)  # (B, T, d/r)
    logits = lm_head(up(u) * d**-0.5)                       # the frozen LM head: (B, T, V)

Each side stack mixes its state with the ladder before every kept block exactly as the encoder path does
(``ladder_mix``, gates g_i = sigmoid(alpha_i / T)). Side blocks are T5 blocks with d_model, d_ff and d_kv divided
by r and the head count kept; the first side block of each stack owns the relative position bias, as in T5.
Decoding is greedy and uncached: every step re-runs the backbone decoder (for the ladders) and the side decoder
over the prefix; beam search is not implemented for the side decoder (``num_beams`` > 1 is decoded greedily,
with a warning).

    model, tok = build_task_model("tiny-t5", "generation", 0)
    attach_method(model, {"name": "lst", "reduction_factor": 4, "init": "magnitude"})
"""
from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from common import arch
from common.errors import UserError
from ladder_side.methods import LSTConfig, kept_layers, ladder_mix

log = logging.getLogger(__name__)


def t5_side_config(config, r: int, n_layers: int, is_decoder: bool):
    """T5's config with d_model, d_ff and d_kv divided by ``r`` (head count kept), ``n_layers`` blocks."""
    for name in ("d_model", "d_ff", "d_kv"):
        if getattr(config, name) % r:
            raise UserError(f"lst: reduction_factor={r} must divide the backbone's {name} {getattr(config, name)}")
    c = copy.deepcopy(config)
    c.d_model, c.d_ff, c.d_kv = config.d_model // r, config.d_ff // r, config.d_kv // r
    c.num_layers = c.num_decoder_layers = n_layers
    c.is_decoder, c.use_cache = is_decoder, False
    return c


class SideStack(nn.Module):
    """One side stack (encoder or decoder): ladders + gates + T5 blocks of width d/r + final RMS norm."""

    def __init__(self, config, kept: list[int], d: int, cfg: LSTConfig):
        super().__init__()
        from transformers.models.t5.modeling_t5 import T5Block, T5LayerNorm

        self.config, self.kept = config, kept
        self.blocks = nn.ModuleList([T5Block(config, has_relative_attention_bias=j == 0, layer_idx=j)
                                     for j in range(len(kept))])
        self.ladders = nn.ModuleList([nn.Linear(d, config.d_model) for _ in kept])  # (B, *, d) -> (B, *, d/r)
        self.alpha = nn.Parameter(torch.zeros(len(kept)), requires_grad=cfg.gate == "learned")
        self.gate, self.T = cfg.gate, cfg.gate_T
        self.final_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def gates(self) -> torch.Tensor:
        return torch.sigmoid(self.alpha / self.T)  # (n_kept,), 0.5 at init

    def forward(self, x: torch.Tensor, hs: list[torch.Tensor], mask: torch.Tensor,
                enc: torch.Tensor | None = None, enc_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, d/r); hs: the backbone's states of the kept layers (B, L, d) each -> (B, L, d/r)."""
        masks = arch.t5_masks(self.config, x, mask, enc, enc_mask)
        biases, g = (None, None), self.gates()
        x = self.dropout(x)
        for i, (block, ladder) in enumerate(zip(self.blocks, self.ladders)):
            x, biases = arch.run_t5_block(block, ladder_mix(self.gate, g, i, x, ladder(hs[i])), masks, biases, enc)
        return self.dropout(self.final_norm(x))


class T5LadderSide(nn.Module):
    """Side encoder + side decoder for a frozen T5: (input embeds, mask, targets) -> LM logits (B, T, V)."""

    def __init__(self, backbone: nn.Module, cfg: LSTConfig):
        super().__init__()
        n = min(len(arch.encoder_blocks(backbone)), len(arch.decoder_blocks(backbone)))
        self.kept = kept_layers(cfg.side_layers, n)  # the same layers of both stacks
        self.backbone = [backbone]  # a list: not a submodule (never trained, never saved)
        r, d = cfg.reduction_factor, backbone.config.d_model
        enc_cfg = t5_side_config(backbone.config, r, len(self.kept), is_decoder=False)
        dec_cfg = t5_side_config(backbone.config, r, len(self.kept), is_decoder=True)
        self.side_in, self.side_in_dec = nn.Linear(d, d // r), nn.Linear(d, d // r)  # (B, *, d) -> (B, *, d/r)
        self.encoder = SideStack(enc_cfg, self.kept, d, cfg)
        self.decoder = SideStack(dec_cfg, self.kept, d, cfg)
        self.up = nn.Linear(d // r, d)

    def stacks(self) -> list[tuple[list[nn.Module], list[int], nn.ModuleList]]:
        bb = self.backbone[0]
        return [(arch.encoder_blocks(bb), self.kept, self.encoder.blocks),
                (arch.decoder_blocks(bb), self.kept, self.decoder.blocks)]

    @torch.no_grad()
    def encoder_states(self, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The backbone encoder's last state (B, L, d) and [e_0, e_kept...] (no graph, eval mode)."""
        bb = self.backbone[0]
        bb.eval()  # a frozen feature extractor: no dropout
        hs = arch.layer_states(bb, embeds, mask)
        return hs[-1], [hs[0]] + [hs[i] for i in self.kept]

    @torch.no_grad()
    def decoder_states(self, dec_ids: torch.Tensor, enc_last: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        hs = arch.decoder_layer_states(self.backbone[0], dec_ids, enc_last, mask)
        return [hs[0]] + [hs[i] for i in self.kept]  # each (B, T, d)

    def encode(self, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc_last, hs = self.encoder_states(embeds, mask)
        return enc_last, self.encoder(self.side_in(hs[0]), hs[1:], mask)  # side: (B, L, d/r)

    def decode(self, dec_ids: torch.Tensor, enc_last: torch.Tensor, side_enc: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
        """Decoder ids (B, T) -> LM logits (B, T, V)."""
        bb = self.backbone[0]
        hs = self.decoder_states(dec_ids, enc_last, mask)
        u = self.decoder(self.side_in_dec(hs[0]), hs[1:], torch.ones_like(dec_ids), side_enc, mask)  # (B, T, d/r)
        out = self.up(u)  # (B, T, d)
        if getattr(bb.config, "scale_decoder_outputs", bb.config.tie_word_embeddings):
            out = out * bb.config.d_model ** -0.5  # as T5 scales before its tied LM head
        return bb.lm_head(out)  # (B, T, V)

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: targets (B, T) with -100 padding -> logits (B, T, V)."""
        dec_ids = self.backbone[0]._shift_right(labels)  # start token + targets[:-1], -100 -> pad
        enc_last, side_enc = self.encode(embeds, mask)
        return self.decode(dec_ids, enc_last, side_enc, mask)

    @torch.no_grad()
    def generate(self, embeds: torch.Tensor, mask: torch.Tensor, pad_id: int, max_new_tokens: int = 64,
                 num_beams: int = 1, **_ignored) -> torch.Tensor:
        """Greedy decoding -> (B, T) new tokens after the start token; pad after each row's end token."""
        if num_beams > 1:
            log.warning("lst: the side decoder decodes greedily; num_beams=%d is not used", num_beams)
        cfg = self.backbone[0].config
        enc_last, side_enc = self.encode(embeds, mask)
        ys = torch.full((embeds.size(0), 1), cfg.decoder_start_token_id, device=embeds.device)  # (B, 1)
        done = torch.zeros(embeds.size(0), dtype=torch.bool, device=embeds.device)
        for _ in range(max_new_tokens):
            nxt = self.decode(ys, enc_last, side_enc, mask)[:, -1].argmax(-1)  # (B,)
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            ys = torch.cat([ys, nxt[:, None]], 1)
            done |= nxt == cfg.eos_token_id
            if done.all():
                break
        return ys[:, 1:]
