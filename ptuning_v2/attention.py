"""The only code of this repository that touches transformers' attention: key/value prefixes.

transformers (v5) routes every self-attention of BERT, RoBERTa, BART, T5 and GPT-2 through a
registered *attention function* that receives per-head ``query, key, value`` of shape
``(B, heads, L, d)`` after projection (and after any KV-cache update). We register one more
implementation, ``"deep_prompt"``: it prepends the module's prefix keys / values (if the module has
one), widens the attention mask by ``P`` always-visible columns (and T5's relative position bias by
``P`` zero columns), then runs PyTorch's scaled-dot-product attention. Modules without a prefix run
exactly as under ``"sdpa"``. Causal masks are always materialised (boolean, ``True`` = attend): with a
prefix the key length differs from the query length, so SDPA's implicit causal flag would align
the triangle wrongly (a bidirectional mask may stay None when nothing is padded: all keys visible).

Because the prefix is added inside the attention call rather than through ``past_key_values``, it
survives cache refactors, works during generation (the cache holds only real tokens; the prefix is
prepended at every step), and lets any subset of layers carry a prefix.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

IMPL = "deep_prompt"
_ATTR = "_deep_prompt_kv"  # set on self-attention modules; a callable (B, dtype, device) -> (K, V)


def _mask_fn(*args, **kwargs):
    from transformers.masking_utils import sdpa_mask

    # Causal masks are always materialised (with a prefix, SDPA's implicit causal flag would align the
    # triangle to the wrong corner); bidirectional ones may stay None when nothing is padded (faster).
    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


def deep_prompt_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, position_bias: torch.Tensor | None = None, **kwargs):
    """Attention with an optional prefix. query (B, h, Lq, d); key/value (B, h, Lk, d)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    provider: Callable | None = module.__dict__.get(_ATTR)
    B, Lq = query.size(0), query.size(2)
    if provider is not None:
        pk, pv = provider(B, key.dtype, key.device)  # (B, h, P, d) each
        P = pk.size(2)
        key, value = torch.cat([pk, key], 2), torch.cat([pv, value], 2)  # (B, h, P+Lk, d)
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:
                attention_mask = F.pad(attention_mask, (P, 0), value=True)  # prefix always visible
            else:
                attention_mask = F.pad(attention_mask, (P, 0), value=0.0)
        if position_bias is not None:
            position_bias = F.pad(position_bias, (P, 0), value=0.0)  # prefix has no relative position
    if position_bias is not None:  # T5: fold the relative bias into an additive mask
        if attention_mask is None:
            attention_mask = position_bias
        elif attention_mask.dtype == torch.bool:
            attention_mask = position_bias.masked_fill(~attention_mask, torch.finfo(position_bias.dtype).min)
        else:
            attention_mask = attention_mask + position_bias
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        attention_mask = attention_mask.to(query.dtype)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register() -> None:
    """Make ``"deep_prompt"`` a valid ``attn_implementation`` (idempotent)."""
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(IMPL, deep_prompt_attention)
    AttentionMaskInterface.register(IMPL, _mask_fn)


def enable(model: nn.Module) -> None:
    """Route ``model``'s attention through :func:`deep_prompt_attention`."""
    register()
    model.set_attn_implementation(IMPL)


def set_prefix(attention: nn.Module, provider: Callable | None) -> None:
    """Give one self-attention module a prefix provider (stored outside ``nn.Module``'s registry so the
    prefix parameters are owned, saved and counted once, by the method's own module)."""
    if provider is None:
        attention.__dict__.pop(_ATTR, None)
    else:
        attention.__dict__[_ATTR] = provider


def has_prefix(attention: nn.Module) -> bool:
    return _ATTR in attention.__dict__
