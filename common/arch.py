"""Everything that depends on a transformers architecture's internals, in one place.

Supported families: BERT, RoBERTa (encoders), BART, T5 (encoder-decoders), GPT-2 (decoder).
Other modules ask this one for: the family and kind of a model, its layers in input-to-output order,
its position limit, and hidden states computed from input embeddings.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from .errors import UserError

FAMILIES = {"bert": "encoder", "roberta": "encoder", "bart": "seq2seq", "t5": "seq2seq", "gpt2": "causal"}


def family(model: nn.Module) -> str:
    mt = model.config.model_type
    if mt not in FAMILIES:
        raise UserError(f"architecture {mt!r} is not supported; supported: {', '.join(FAMILIES)}")
    return mt


def lm_kind(model: nn.Module) -> str:
    """``encoder``, ``seq2seq`` or ``causal``."""
    return FAMILIES[family(model)]


def _base(model: nn.Module) -> nn.Module:
    """The bare transformer inside an LM-head wrapper (GPT2LMHeadModel.transformer, BartFor*.model,
    BertForMaskedLM.bert, RobertaForMaskedLM.roberta)."""
    for attr in ("transformer", "model", "bert", "roberta"):  # GPT-2 / BART / masked-LM wrappers
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module) and hasattr(inner, "config"):
            return inner
    return model


def layers(model: nn.Module) -> list[nn.Module]:
    """Transformer blocks from input to output (encoder blocks, then decoder blocks)."""
    fam, base = family(model), _base(model)
    if fam in ("bert", "roberta"):
        return list(base.encoder.layer)
    if fam == "gpt2":
        return list(base.h)
    if fam == "bart":
        return list(base.encoder.layers) + list(base.decoder.layers)
    return list(model.encoder.block) + list(model.decoder.block)  # t5


def self_attention(layer: nn.Module) -> nn.Module:
    """The self-attention module of one block (never cross-attention); its forward calls the
    attention interface with per-head keys / values (B, heads, L, d)."""
    for path in ("attention.self", "attn", "self_attn", "layer.0.SelfAttention"):
        mod = layer
        try:
            for part in path.split("."):
                mod = mod[int(part)] if part.isdigit() else getattr(mod, part)
        except (AttributeError, IndexError, TypeError):
            continue
        return mod
    raise UserError(f"no self-attention found in {type(layer).__name__}; supported: {', '.join(FAMILIES)}")


def attention_shape(model: nn.Module) -> tuple[int, int]:
    """(heads, head_dim) of the self-attention in every block."""
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "num_heads", None) or cfg.n_head
    if family(model) == "t5":
        return heads, cfg.d_kv
    return heads, hidden_size(model) // heads


def layer_prefixes(model: nn.Module) -> list[str]:
    """Parameter-name prefixes of :func:`layers`, in the same order."""
    ids = {id(m): n for n, m in model.named_modules()}
    return [ids[id(layer)] + "." for layer in layers(model)]


def max_positions(model: nn.Module) -> int | None:
    """Longest input the position embeddings allow; None for relative positions (T5)."""
    cfg = model.config
    if family(model) == "t5":
        return None
    n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    if family(model) == "roberta":
        n -= cfg.pad_token_id + 1  # RoBERTa positions start after the padding index
    return n


def hidden_size(model: nn.Module) -> int:
    return hidden_size_of(model.config)


def hidden_size_of(cfg) -> int:
    return getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", None) or cfg.n_embd


def embed_tokens(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Word embeddings only (positions are added inside the model). (B, L) -> (B, L, H)."""
    return model.get_input_embeddings()(input_ids)  # BART's embedding module applies its own scale


def shifted_positions(model: nn.Module, mask: torch.Tensor, offset: int) -> torch.Tensor | None:
    """Position ids starting ``offset`` later, as when ``offset`` cached positions precede the input
    (what ``past_key_values`` prefixes do in BERT, RoBERTa and GPT-2). None = the model's default.
    BART's encoder and T5 take no position ids: the offset does not apply to them."""
    fam = family(model)
    if offset == 0 or fam in ("bart", "t5"):
        return None
    if fam == "roberta":  # RoBERTa counts non-padding tokens from padding_idx + 1 (its own formula)
        m = mask.long()
        return (torch.cumsum(m, 1) + offset) * m + model.config.pad_token_id
    return torch.arange(offset, offset + mask.size(1), device=mask.device).unsqueeze(0).expand_as(mask)


def token_states(model: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, position_offset: int = 0) -> torch.Tensor:
    """Per-token hidden states of the (encoder) stack. (B, L, H) -> (B, L, H)."""
    fam = family(model)
    if fam in ("bart", "t5"):
        return model.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    pos = shifted_positions(model, mask, position_offset)
    kw = {"position_ids": pos} if pos is not None else {}
    return _base(model)(inputs_embeds=embeds, attention_mask=mask, **kw).last_hidden_state


POOLINGS = ("cls", "mean", "last", "eos")


def default_pooling(model: nn.Module) -> str:
    """The head's pooling when the model config names none: [CLS] for BERT / RoBERTa, the last real
    token for GPT-2, the decoder's start state for BART / T5 (``eos``). MiniLM's is set in its config."""
    return {"encoder": "cls", "causal": "last", "seq2seq": "eos"}[lm_kind(model)]


def check_pooling(model: nn.Module, pooling: str) -> str:
    """``pooling`` if this model can pool that way, else a clear error naming the valid choices."""
    if pooling not in POOLINGS:
        raise UserError(f"model.pooling={pooling!r}; valid: {', '.join(POOLINGS)}")
    if pooling == "eos" and lm_kind(model) != "seq2seq":
        raise UserError(f"model.pooling=eos reads a decoder start state and needs BART or T5; this "
                        f"{family(model)} model takes cls, mean or last")
    return pooling


def pooled_state(model: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, position_offset: int = 0,
                 pooling: str | None = None, n_prompt: int = 0) -> torch.Tensor:
    """One vector per sequence. (B, P+L, H) -> (B, H); the first ``n_prompt`` positions are soft prompts.

    ``cls``: the first input token ([CLS] / <s>). ``mean``: the mean over real input tokens (padding and
    prompt positions never enter it). ``last``: the last real input token. ``eos`` (BART / T5 only): the
    decoder's state at its start token (BART: </s>) attending to the whole encoded input, as BART's own
    classification head reads the decoder.
    """
    pooling = check_pooling(model, pooling or default_pooling(model))
    if pooling == "eos":
        enc = model.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        start = torch.full((embeds.size(0), 1), model.config.decoder_start_token_id, device=embeds.device)
        dec = model.get_decoder()(input_ids=start, encoder_hidden_states=enc, encoder_attention_mask=mask)
        return dec.last_hidden_state[:, 0]
    h = token_states(model, embeds, mask, position_offset)[:, n_prompt:]  # (B, L, H): input positions only
    return pool(h, mask[:, n_prompt:], pooling)


def pool(h: torch.Tensor, m: torch.Tensor, pooling: str) -> torch.Tensor:
    """Token states (B, L, H) with mask (B, L) -> one vector per sequence (B, H), for cls / mean / last."""
    if pooling == "cls":
        return h[:, 0]
    if pooling == "last":
        last = m.long().sum(1) - 1  # right padding: the last real token
        return h[torch.arange(h.size(0), device=h.device), last]
    w = m.to(h.dtype).unsqueeze(-1)  # (B, L, 1)
    return (h * w).sum(1) / w.sum(1).clamp_min(1.0)  # (B, H)


# ----------------------------------------------------------------------------- per-layer states, single blocks
def layer_states(model: nn.Module, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The (encoder) stack's embedding output and every block's output: L+1 tensors (B, L, H)."""
    enc = model.get_encoder() if family(model) in ("bart", "t5") else _base(model)
    return enc(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True).hidden_states


def encoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The encoder's blocks (all blocks of BERT / RoBERTa), input to output."""
    fam, base = family(model), _base(model)
    if fam in ("bert", "roberta"):
        return list(base.encoder.layer)
    if fam == "bart":
        return list(base.encoder.layers)
    if fam == "t5":
        return list(model.encoder.block)
    raise UserError(f"{fam} has no encoder blocks; use BERT, RoBERTa, BART or T5")


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The decoder's blocks of BART / T5, input to output."""
    fam = family(model)
    if fam == "bart":
        return list(_base(model).decoder.layers)
    if fam == "t5":
        return list(model.decoder.block)
    raise UserError(f"{fam} has no encoder-decoder blocks; use BART or T5")


def decoder_layer_states(model: nn.Module, dec_ids: torch.Tensor, enc_states: torch.Tensor,
                         enc_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The decoder's embedding output and every block's output for ``dec_ids`` (B, T) attending to
    ``enc_states`` (B, L, H): T5 / BART, causal, no cache. n+1 tensors (B, T, H)."""
    return model.get_decoder()(input_ids=dec_ids, encoder_hidden_states=enc_states, encoder_attention_mask=enc_mask,
                               output_hidden_states=True, use_cache=False).hidden_states


def t5_masks(config, states: torch.Tensor, mask: torch.Tensor, enc_states: torch.Tensor | None = None,
             enc_mask: torch.Tensor | None = None) -> tuple:
    """(self-attention, cross-attention) masks as T5Stack builds them: causal when ``config.is_decoder``."""
    from transformers.masking_utils import create_bidirectional_mask, create_causal_mask

    if config.is_decoder:
        own = create_causal_mask(config=config, inputs_embeds=states, attention_mask=mask, past_key_values=None)
    else:
        own = bidirectional_mask(config, states, mask)
    cross = None if enc_states is None else create_bidirectional_mask(
        config=config, inputs_embeds=states, attention_mask=enc_mask, encoder_hidden_states=enc_states)
    return own, cross


def run_t5_block(block: nn.Module, x: torch.Tensor, masks: tuple, biases: tuple,
                 enc_states: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple]:
    """One T5 block on ``x`` (B, L, h). ``biases``: the (self, cross) relative position biases the stack's
    first block computes and later blocks reuse, (None, None) before it; returns (x, biases)."""
    out, own_bias, cross_bias = block(x, masks[0], biases[0], enc_states, masks[1], biases[1])
    return out, (own_bias, cross_bias)


def bidirectional_mask(config, states: torch.Tensor, mask: torch.Tensor):
    """The attention mask a block of ``config``'s architecture takes for padding ``mask`` (B, L)."""
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=config, inputs_embeds=states, attention_mask=mask)


def run_block(block: nn.Module, states: torch.Tensor, block_mask) -> torch.Tensor:
    """One encoder block on ``states`` (B, L, h) with a mask from :func:`bidirectional_mask`."""
    out = block(states, block_mask)
    return out[0] if isinstance(out, tuple) else out


# ----------------------------------------------------------------------------- sub-layer weight names
# The papers' names for a block's matrices: Wq, Wk, Wv, Wo in attention (LoRA, Hu et al. 2022, §4.2) and W1, W2
# for the FFN (Vaswani et al.'s names). In encoder-decoder models a name covers self- and cross-attention.
# LoRA adapts them; Houlsby / Pfeiffer adapters sit after Wo's and W2's outputs.
WEIGHTS = ("Wq", "Wk", "Wv", "Wo", "W1", "W2")

# Full-match regexes on module names, per family.
SUBLAYERS: dict[str, dict[str, str]] = {
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
SUBLAYERS["roberta"] = SUBLAYERS["bert"]
QKV = ("Wq", "Wk", "Wv")


def block_weights(block: nn.Module, fam: str, part: str = "self") -> dict[str, nn.Linear]:
    """One block's own Wq, Wk, Wv, Wo, W1, W2 (self-attention), found with :data:`SUBLAYERS`; with
    ``part="cross"`` its cross-attention's Wq, Wk, Wv, Wo instead ({} for a block without one)."""
    prefix = "layer.0." if fam in ("bert", "roberta") else "layers.0."  # the regexes expect a block's full name
    cross = ("encoder_attn", "EncDecAttention")
    out = {}
    for w in (WEIGHTS if part == "self" else WEIGHTS[:4]):
        hits = [m for n, m in block.named_modules() if isinstance(m, nn.Linear)
                and any(c in n for c in cross) == (part == "cross") and re.fullmatch(SUBLAYERS[fam][w], prefix + n)]
        if part == "cross" and not hits:
            return {}
        if len(hits) != 1:
            raise UserError(f"{type(block).__name__}: found {len(hits)} {w} matrices, expected one")
        out[w] = hits[0]
    return out


def linear_modules(model: nn.Module) -> list[str]:
    """Names of the model's linear maps (nn.Linear and GPT-2's Conv1D), for error messages."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"]


def parse_weights(weights, who: str) -> list[str]:
    """``["Wq", "Wv"]`` or ``"Wq,Wv"`` -> ``["Wq", "Wv"]`` (validated, de-duplicated, in WEIGHTS order)."""
    items = [w.strip() for w in (weights.split(",") if isinstance(weights, str) else weights) if str(w).strip()]
    if not items:
        raise UserError(f"{who}: weights is empty; choose from {list(WEIGHTS)} (e.g. [Wq,Wv])")
    canon = {w.lower(): w for w in WEIGHTS}
    bad = [w for w in items if w.lower() not in canon]
    if bad:
        raise UserError(f"{who}: unknown weight name(s) {bad}; valid: {list(WEIGHTS)} "
                        f"(Wq, Wk, Wv, Wo: attention; W1, W2: the FFN)")
    got = {canon[w.lower()] for w in items}
    return [w for w in WEIGHTS if w in got]


def resolve_weights(model: nn.Module, weights: list[str], who: str) -> dict[str, list[str]]:
    """``{weight name: [module names]}`` in ``model`` (nn.Linear or GPT-2's Conv1D); a name that matches
    nothing is an error naming ``who`` (the method) and the model's linear modules."""
    fam = family(model)
    pats = SUBLAYERS[fam]
    names = linear_modules(model)
    out = {}
    for w in weights:
        hits = [n for n in names if re.fullmatch(pats[w], n)]
        if not hits:
            raise UserError(f"{who}: target {w} ({pats[w]!r}) matches no linear module of this {fam} model; "
                            f"its linear modules: {linear_modules(model)[:12]}{' ...' if len(names) > 12 else ''}")
        out[w] = hits
    return out
