"""Prompt-conditioned task scorers without per-task parameters: the soft prompt carries the whole task.

IPT (Qin et al., "Exploring Universal Intrinsic Task Subspace via Prompt Tuning", §3) tunes only a soft
prompt on a frozen text-to-text model with a shared LM head. Two scorers follow that rule here:

- :class:`CosineOptionScorer` (``scorer.kind=cosine``, the ``small`` scale, our design for MiniLM, which
  has no LM head): for input x with options o_1..o_m, s_j = cos(E([P; x]), E(o_j)) / tau, E the frozen
  encoder with its pooling (MiniLM: mean over the input tokens, prompt positions excluded); loss =
  label-smoothed cross-entropy over the options. With no prompt it is MiniLM's zero-shot classifier.
  Option embeddings do not depend on the prompt: they are computed once per task (:meth:`prepare`).
- :class:`Seq2SeqScorer` (``scorer.kind=seq2seq``, the paper's BART-base): the prompt is prepended to
  the encoder input; loss = label-smoothed NLL of the target text; prediction = beam search (metrics on
  the text) or the option with the lowest NLL (``scorer.predict=options``).

Both take a prompt of shape (P, H) for a batch of one task's examples (or None).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common import arch
from common import metrics as M
from common.errors import UserError
from common.multitask import TaskData


@dataclass
class ScorerConfig:
    kind: str = "cosine"  # cosine | seq2seq
    tau: float = 0.05  # cosine temperature (fixed, not tuned): cosines in [-1, 1] -> logits in [-20, 20]
    label_smoothing: float = 0.1  # as the paper's NLL
    predict: str = "generate"  # seq2seq: generate (beam search, CrossFit metrics) | options (lowest NLL)
    num_beams: int = 4
    max_new_tokens: int = 32


def _pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([list(s) + [value] * (width - len(s)) for s in seqs], dtype=torch.long)


def _ids_and_mask(items: list[dict], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids (B, L) and their attention mask (B, L), 1 = real token."""
    ids = _pad([it["input_ids"] for it in items], pad_id)
    lengths = torch.tensor([len(it["input_ids"]) for it in items])
    return ids, (torch.arange(ids.size(1)) < lengths[:, None]).long()


def _with_prompt(embeds: torch.Tensor, mask: torch.Tensor, prompt: torch.Tensor | None):
    """(B, L, H), (B, L) -> (B, P+L, H), (B, P+L) with the prompt in front (unchanged when None)."""
    if prompt is None:
        return embeds, mask
    B, P = embeds.size(0), prompt.size(0)
    prompt = prompt.to(embeds.dtype).unsqueeze(0).expand(B, -1, -1)  # (B, P, H)
    return torch.cat([prompt, embeds], 1), torch.cat([mask.new_ones(B, P), mask], 1)


def option_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Cross-entropy over each row's options, label smoothing spread over that row's real options only.

    ``logits`` (B, M) holds -inf where a row has fewer than M options (multirc: 2-9). F.cross_entropy's
    smoothing would put mass on those and return inf (its gradient stays finite, but the logged loss and
    the target are wrong); here the uniform part is over the row's own options. Equal to F.cross_entropy
    when every row has all M options.
    """
    logp = F.log_softmax(logits, dim=-1)  # (B, M); -inf at missing options
    valid = torch.isfinite(logits)
    nll = -logp.gather(1, labels[:, None]).squeeze(1)  # (B,)
    uniform = -logp.masked_fill(~valid, 0.0).sum(-1) / valid.sum(-1)  # (B,) mean over the real options
    return ((1 - smoothing) * nll + smoothing * uniform).mean()


class CosineOptionScorer(nn.Module):
    """Cosine similarity of the prompted input's and each option's pooled encoder states (see module doc)."""

    needs_options = True

    def __init__(self, backbone: nn.Module, tok, cfg: ScorerConfig, pooling: str = "mean", max_seq_len: int = 128):
        super().__init__()
        if arch.lm_kind(backbone) != "encoder":
            raise UserError(f"scorer.kind=cosine needs an encoder (MiniLM, BERT, RoBERTa); got "
                            f"{arch.family(backbone)}; use scorer.kind=seq2seq for BART / T5")
        self.backbone, self.tok, self.cfg, self.max_seq_len = backbone, tok, cfg, max_seq_len
        self.pooling = arch.check_pooling(backbone, pooling)
        self.hidden = arch.hidden_size(backbone)
        self.backbone.requires_grad_(False)

    # -- data
    def tokenize(self, examples: list[dict]) -> tuple[list[dict], dict]:
        """Items ``{"input_ids", "option_index", "label"}`` and the task's option table (unique options)."""
        table: dict[str, int] = {}
        items = []
        for e in examples:
            ids = self.tok(e["context"], truncation=True, max_length=self.max_seq_len)["input_ids"]
            items.append({"input_ids": ids, "option_index": [table.setdefault(o, len(table)) for o in e["options"]],
                          "label": int(e["label"])})
        return items, {"options": list(table)}

    @torch.no_grad()
    def prepare(self, task: TaskData) -> None:
        """Embed the task's option table once (eval mode): (N_options, H), unit length."""
        was = self.training
        self.eval()
        texts, out = task.extra["options"], []
        for s in range(0, len(texts), 128):
            enc = self.tok(texts[s:s + 128], truncation=True, max_length=self.max_seq_len, padding=True,
                           return_tensors="pt")
            out.append(self.encode(enc["input_ids"], enc["attention_mask"], None))
        task.extra["option_emb"] = F.normalize(torch.cat(out), dim=-1)
        self.train(was)

    # -- model
    def encode(self, ids: torch.Tensor, mask: torch.Tensor, prompt: torch.Tensor | None) -> torch.Tensor:
        embeds = arch.embed_tokens(self.backbone, ids)  # (B, L, H)
        embeds, mask = _with_prompt(embeds, mask, prompt)  # (B, P+L, H)
        P = 0 if prompt is None else prompt.size(0)
        return arch.pooled_state(self.backbone, embeds, mask, 0, self.pooling, n_prompt=P)  # (B, H)

    def logits(self, task: TaskData, items: list[dict], prompt: torch.Tensor | None) -> torch.Tensor:
        ids, mask = _ids_and_mask(items, self.tok.pad_token_id)
        q = F.normalize(self.encode(ids, mask, prompt), dim=-1)  # (B, H)
        opt = _pad([it["option_index"] for it in items], -1)  # (B, M); -1 = no such option
        emb = task.extra["option_emb"][opt.clamp_min(0)]  # (B, M, H)
        s = torch.einsum("bh,bmh->bm", q, emb) / self.cfg.tau  # (B, M)
        return s.masked_fill(opt < 0, float("-inf"))

    def loss(self, task: TaskData, items: list[dict], prompt: torch.Tensor | None) -> torch.Tensor:
        labels = torch.tensor([it["label"] for it in items])
        return option_cross_entropy(self.logits(task, items, prompt), labels, self.cfg.label_smoothing)

    @torch.no_grad()
    def evaluate(self, task: TaskData, items: list[dict], prompt: torch.Tensor | None, metrics, batch_size: int = 64):
        order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))  # little padding
        preds = [0] * len(items)
        for s in range(0, len(order), batch_size):
            chunk = order[s:s + batch_size]
            for i, p in zip(chunk, self.logits(task, [items[i] for i in chunk], prompt).argmax(-1).tolist()):
                preds[i] = p
        # option indices are per task (the table), so label metrics compare the same classes
        gold = [it["option_index"][it["label"]] for it in items]
        pred = [it["option_index"][p] for it, p in zip(items, preds)]
        out = M.compute([m for m in metrics if m != "em"], "multiple_choice", pred, gold)
        if "em" in metrics:  # the chosen option's text equals the gold text iff it is the gold option (one index per text)
            out["em"] = M.compute(["accuracy"], "multiple_choice", pred, gold)["accuracy"]
        return out


class Seq2SeqScorer(nn.Module):
    """BART / T5 text-to-text with the prompt on the encoder input (the paper's setting; see module doc)."""

    needs_options = False

    def __init__(self, backbone: nn.Module, tok, cfg: ScorerConfig, max_seq_len: int = 128, target_len: int = 32):
        super().__init__()
        if arch.lm_kind(backbone) != "seq2seq":
            raise UserError(f"scorer.kind=seq2seq needs BART or T5; got {arch.family(backbone)}")
        if cfg.predict not in ("generate", "options"):
            raise UserError(f"scorer.predict={cfg.predict!r}; valid: generate, options")
        self.backbone, self.tok, self.cfg = backbone, tok, cfg
        self.max_seq_len, self.target_len = max_seq_len, target_len
        self.hidden = arch.hidden_size(backbone)
        self.eos = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        self.backbone.requires_grad_(False)

    def tokenize(self, examples: list[dict]) -> tuple[list[dict], dict]:
        items = []
        for e in examples:
            if "options" in e:  # an option task as text to text: the target is the gold option's text
                src, target, options = e["context"], e["options"][e["label"]], e["options"]
            else:
                src, target, options = e["source"], e["target"], None
            items.append({"input_ids": self.tok(src, truncation=True, max_length=self.max_seq_len)["input_ids"],
                          "labels": self._target(target), "target": target, "options": options,
                          "references": e.get("references", [target])})
        return items, {}

    def _target(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False, truncation=True, max_length=self.target_len)["input_ids"] + [self.eos]

    def prepare(self, task: TaskData) -> None:  # nothing to cache: targets depend on the prompt
        return None

    def _inputs(self, items, prompt):
        ids, mask = _ids_and_mask(items, self.tok.pad_token_id)
        embeds = arch.embed_tokens(self.backbone, ids)  # (B, L, H)
        return _with_prompt(embeds, mask, prompt)  # (B, P+L, H)

    def _nll(self, embeds, mask, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
        """Per-example mean token NLL of ``labels`` (B, T); -100 = ignored."""
        logits = self.backbone(inputs_embeds=embeds, attention_mask=mask, labels=labels).logits  # (B, T, V)
        tok_loss = F.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=-100,
                                   label_smoothing=smoothing, reduction="none")  # (B, T)
        n = (labels != -100).sum(1).clamp_min(1)
        return tok_loss.sum(1) / n

    def loss(self, task: TaskData, items: list[dict], prompt: torch.Tensor | None) -> torch.Tensor:
        embeds, mask = self._inputs(items, prompt)
        labels = _pad([it["labels"] for it in items], -100)
        return self._nll(embeds, mask, labels, self.cfg.label_smoothing).mean()

    @torch.no_grad()
    def evaluate(self, task: TaskData, items: list[dict], prompt: torch.Tensor | None, metrics, batch_size: int = 64):
        preds = []
        for s in range(0, len(items), batch_size):
            chunk = items[s:s + batch_size]
            embeds, mask = self._inputs(chunk, prompt)
            if self.cfg.predict == "options" and chunk[0]["options"]:
                preds += [self._best_option(e, m, it) for e, m, it in zip(embeds, mask, chunk)]
            else:
                out = self.backbone.generate(inputs_embeds=embeds, attention_mask=mask, num_beams=self.cfg.num_beams,
                                             max_new_tokens=self.cfg.max_new_tokens, do_sample=False,
                                             pad_token_id=self.tok.pad_token_id)
                preds += [self.tok.decode([t for t in seq if t != self.tok.pad_token_id], skip_special_tokens=True).strip()
                          for seq in out.tolist()]
        if items[0]["options"]:  # classification / multiple choice: label metrics on the option strings
            return M.compute(metrics, "multiple_choice", preds, [it["target"] for it in items])
        return M.compute(metrics, "generation", preds, [it["references"] for it in items])

    def _best_option(self, embeds, mask, item) -> str:
        n = len(item["options"])
        labels = _pad([self._target(o) for o in item["options"]], -100)  # (n, T)
        nll = self._nll(embeds.expand(n, -1, -1), mask.expand(n, -1), labels, 0.0)  # (n,)
        return item["options"][int(nll.argmin())]


def build_scorer(backbone: nn.Module, tok, cfg: ScorerConfig, pooling: str, max_seq_len: int, target_len: int = 32):
    if cfg.kind == "cosine":
        return CosineOptionScorer(backbone, tok, cfg, pooling, max_seq_len)
    if cfg.kind == "seq2seq":
        return Seq2SeqScorer(backbone, tok, cfg, max_seq_len, target_len)
    raise UserError(f"scorer.kind={cfg.kind!r}; valid: cosine, seq2seq")
