"""Verbalizer head (P-Tuning v2, §4.2 / head ablation): classify by the masked-LM head's scores of one
label word per class at a ``[MASK]`` position, instead of a linear head on [CLS].

MiniLM has no masked-LM head, so this path runs only on MLM-capable backbones (BERT / RoBERTa with
their MLM head); it is tested on tiny random masked-LM models. The LM head stays frozen: with deep
prompts, only the prefixes train.

    model, tok = build_verbalizer_model("tiny-bert", label_words=["no", "yes"])
    attach_method(model, {"name": "deep_prompt", "prefix_len": 8})
    batch = add_mask(tok(["it rains", "sunny"], padding=True, return_tensors="pt"), tok)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common import arch
from common.errors import UserError
from common.models import MODELS, TaskModel, load_tokenizer, tiny_config


class VerbalizerTaskModel(TaskModel):
    """A :class:`TaskModel` whose classification logits are MLM scores of the label words at [MASK]."""

    def __init__(self, mlm_model: nn.Module, label_token_ids: list[int], mask_token_id: int):
        super().__init__(mlm_model, "classification", len(label_token_ids))
        self.head = None  # the pretrained LM head scores the classes; it is part of the frozen backbone
        self.register_buffer("label_ids", torch.tensor(label_token_ids), persistent=False)
        self.mask_token_id = mask_token_id

    def lm_head(self) -> nn.Module:
        return self.backbone.cls if arch.family(self.backbone) == "bert" else self.backbone.lm_head

    def forward(self, batch: dict) -> dict:
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch.get("labels")
        at = ids == self.mask_token_id  # (B, L)
        if not bool((at.sum(1) == 1).all()):
            raise UserError("verbalizer: every input needs exactly one mask token (see add_mask)")
        embeds, mask, P = self.embed(ids, mask)
        h = arch.token_states(self.backbone, embeds, mask, self.position_offset)[:, P:]  # (B, L, H)
        vocab = self.lm_head()(h[at])  # (B, V)
        logits = vocab[:, self.label_ids]  # (B, C)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def build_verbalizer_model(name: str, label_words: list[str]) -> tuple[VerbalizerTaskModel, object]:
    """A masked-LM backbone (tiny random BERT / RoBERTa here; hub ids with their MLM head) + verbalizer."""
    from transformers import AutoModelForMaskedLM

    entry = MODELS.get(name)
    if entry is None or entry.family not in ("bert", "roberta") or name == "minilm":
        raise UserError(f"verbalizer heads need a masked-LM backbone (bert / roberta with an MLM head); "
                        f"{name!r} has none. Valid here: tiny-bert, tiny-roberta, bert-base-uncased, roberta-base, "
                        f"roberta-large")
    tok = load_tokenizer(name)
    if entry.source == "tiny":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            mlm = AutoModelForMaskedLM.from_config(tiny_config(entry.family, tok))
    else:
        mlm = AutoModelForMaskedLM.from_pretrained(entry.hub_id)
    ids = []
    for w in label_words:
        pieces = tok(w, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise UserError(f"verbalizer: label word {w!r} is {len(pieces)} tokens; each must be one token")
        ids.append(pieces[0])
    return VerbalizerTaskModel(mlm, ids, tok.mask_token_id), tok


def add_mask(enc: dict, tok) -> dict:
    """Insert one mask token before each sequence's final separator (template "<text> [MASK] [SEP]")."""
    rows = []
    for ids, m in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist()):
        n = sum(m)
        rows.append(ids[: n - 1] + [tok.mask_token_id] + ids[n - 1: n])
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    return {"input_ids": input_ids, "attention_mask": (torch.arange(width) < torch.tensor([len(r) for r in rows])
                                                       .unsqueeze(1)).long()}
