"""Task metrics, all on a 0-100 scale (as the papers report them).

Classification: accuracy, macro-F1, binary F1, MCC (scikit-learn). Regression: Pearson / Spearman
(SciPy). NER: entity-level micro-F1 (seqeval, IOB2). Generation: exact match and token F1 after
SQuAD normalisation, ROUGE-L F (rouge-score), each the maximum over an example's references; the E2E
challenge's BLEU / NIST / METEOR / ROUGE-L / CIDEr in ``nlg_metrics``.
MultiRC: F1a (binary F1 over all answer options) and EM (a question counts only if all its options
are right).
"""
from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from typing import Sequence

import numpy as np


def _pct(x: float) -> float:
    return float(100.0 * x)


def accuracy(preds, labels) -> float:
    return _pct(np.mean(np.asarray(preds) == np.asarray(labels))) if len(labels) else 0.0


def macro_f1(preds, labels) -> float:
    from sklearn.metrics import f1_score

    return _pct(f1_score(labels, preds, average="macro", zero_division=0))


def binary_f1(preds, labels) -> float:
    from sklearn.metrics import f1_score

    return _pct(f1_score(labels, preds, average="binary", pos_label=1, zero_division=0))


def mcc(preds, labels) -> float:
    from sklearn.metrics import matthews_corrcoef

    return _pct(matthews_corrcoef(labels, preds))


def pearson(preds, labels) -> float:
    from scipy.stats import pearsonr

    return _pct(pearsonr(preds, labels)[0]) if np.std(preds) > 0 else 0.0


def spearman(preds, labels) -> float:
    from scipy.stats import spearmanr

    return _pct(spearmanr(preds, labels)[0]) if np.std(preds) > 0 else 0.0


def entity_f1(pred_tags: list[list[str]], gold_tags: list[list[str]]) -> float:
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    return _pct(f1_score(gold_tags, pred_tags, mode="strict", scheme=IOB2, zero_division=0))


def normalize_answer(s: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _token_f1(pred: str, ref: str) -> float:
    p, r = normalize_answer(pred).split(), normalize_answer(ref).split()
    common = sum((Counter(p) & Counter(r)).values())
    if not p or not r:
        return float(p == r)
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(r)
    return 2 * prec * rec / (prec + rec)


def exact_match(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    return _pct(np.mean([max(normalize_answer(p) == normalize_answer(r) for r in rs) for p, rs in zip(preds, refs)]))


def token_f1(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    return _pct(np.mean([max(_token_f1(p, r) for r in rs) for p, rs in zip(preds, refs)]))


def rouge_l(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return _pct(np.mean([max(scorer.score(r, p)["rougeL"].fmeasure for r in rs) for p, rs in zip(preds, refs)]))


def multirc_em(preds, labels, groups) -> float:
    ok: dict[str, bool] = defaultdict(lambda: True)
    for p, l, g in zip(preds, labels, groups):
        ok[g] &= bool(p == l)
    return _pct(np.mean(list(ok.values())))


LABEL_METRICS = {"accuracy": accuracy, "macro_f1": macro_f1, "f1": binary_f1, "f1a": binary_f1, "mcc": mcc,
                 "pearson": pearson, "spearman": spearman}
TEXT_METRICS = {"em": exact_match, "token_f1": token_f1, "rougeL": rouge_l}


def _text_metric(name: str):
    if name in TEXT_METRICS:
        return TEXT_METRICS[name]
    from .nlg_metrics import E2E_METRICS  # bleu, nist, meteor, rougeL_e2e, cider

    return E2E_METRICS[name]


def compute(metric_names: Sequence[str], task_type: str, preds, labels, groups=None) -> dict[str, float]:
    """Metrics of one evaluation; ``preds`` / ``labels`` as produced by the trainer for ``task_type``."""
    out = {}
    for m in metric_names:
        if task_type == "token_classification":
            out[m] = entity_f1(preds, labels)
        elif task_type == "generation":
            out[m] = _text_metric(m)(preds, labels)
        elif m == "em" and groups is not None:
            out[m] = multirc_em(preds, labels, groups)
        else:
            out[m] = LABEL_METRICS[m](preds, labels)
    return {k: v for k, v in out.items() if v is not None}  # None: not computable here (METEOR without WordNet)
