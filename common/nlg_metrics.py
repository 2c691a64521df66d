"""E2E NLG challenge metrics (Dušek et al. 2020), as the LoRA and prefix-tuning papers report them:
BLEU-4 and NIST-5 against all references of a meaning representation (corpus level), METEOR,
ROUGE-L (coco-caption's: max precision / recall over references, beta 1.2) and CIDEr-D.

BLEU, NIST and METEOR come from NLTK; ROUGE-L and CIDEr-D follow coco-caption's definitions (the
E2E scripts call coco-caption). Text is lower-cased and split into words and punctuation first.
Scores: BLEU, METEOR, ROUGE-L on 0-100 (as the papers print them), NIST and CIDEr raw.
METEOR needs NLTK's WordNet data; without it (this offline machine) it is reported as None.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def bleu(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    from nltk.translate.bleu_score import corpus_bleu

    return 100.0 * corpus_bleu([[tokenize(r) for r in rs] for rs in refs], [tokenize(p) for p in preds])


def nist(preds: Sequence[str], refs: Sequence[Sequence[str]], n: int = 5) -> float:
    from nltk.translate.nist_score import corpus_nist

    hyps = [tokenize(p) for p in preds]
    # an order with no hypothesis n-gram adds 0 (NLTK would divide by zero): stop below it
    n = min(n, max((len(h) for h in hyps), default=0))
    if n == 0:
        return 0.0
    return float(corpus_nist([[tokenize(r) for r in rs] for rs in refs], hyps, n=n))


def meteor(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float | None:
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        from nltk.translate.meteor_score import meteor_score
    except LookupError:
        return None  # WordNet data not installed (nltk.download("wordnet") needs the internet)
    scores = [meteor_score([tokenize(r) for r in rs], tokenize(p)) for p, rs in zip(preds, refs)]
    return 100.0 * sum(scores) / len(scores)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(preds: Sequence[str], refs: Sequence[Sequence[str]], beta: float = 1.2) -> float:
    """coco-caption's ROUGE-L: per segment, F_beta of the max LCS precision and max LCS recall over refs."""
    scores = []
    for p, rs in zip(preds, refs):
        h = tokenize(p)
        prec, rec = [], []
        for r in rs:
            t = tokenize(r)
            lcs = _lcs(h, t)
            prec.append(lcs / len(h) if h else 0.0)
            rec.append(lcs / len(t) if t else 0.0)
        P, R = max(prec), max(rec)
        scores.append(((1 + beta ** 2) * P * R) / (R + beta ** 2 * P) if P and R else 0.0)
    return 100.0 * sum(scores) / len(scores)


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def cider_d(preds: Sequence[str], refs: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0) -> float:
    """CIDEr-D (Vedantam et al. 2015, coco-caption): tf-idf n-gram cosine, clipped, with a Gaussian
    length penalty, averaged over n = 1..4 and references, times 10. Document frequencies come from
    the references of the evaluated corpus."""
    ref_tok = [[tokenize(r) for r in rs] for rs in refs]
    df: Counter = Counter()
    for rs in ref_tok:
        df.update({g for r in rs for k in range(1, n + 1) for g in _ngrams(r, k)})
    log_n = math.log(float(len(refs)))

    def vec(words):
        vs, norms = [], []
        for k in range(1, n + 1):
            counts = _ngrams(words, k)
            v = {g: tf * (log_n - math.log(max(1.0, df[g]))) for g, tf in counts.items()}
            vs.append(v)
            norms.append(math.sqrt(sum(x * x for x in v.values())))
        return vs, norms, len(words)

    total = 0.0
    for p, rs in zip(preds, ref_tok):
        vh, nh, lh = vec(tokenize(p))
        score = [0.0] * n
        for r in rs:
            vr, nr, lr = vec(r)
            for k in range(n):
                dot = sum(min(x, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, x in vh[k].items())
                if nh[k] and nr[k]:
                    score[k] += dot / (nh[k] * nr[k]) * math.exp(-((lh - lr) ** 2) / (2 * sigma ** 2))
        total += 10.0 * sum(s / len(rs) for s in score) / n
    return total / len(preds)


E2E_METRICS = {"bleu": bleu, "nist": nist, "meteor": meteor, "rougeL_e2e": rouge_l, "cider": cider_d}


def e2e_scores(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, float | None]:
    return {name: fn(preds, refs) for name, fn in E2E_METRICS.items()}
