"""When is a run's dev curve flat enough to draw a verdict from it?

A run record's ``still_improving`` says whether its best dev evaluation was its last one. Under the linear
decay to zero that every trainer here uses, a converged run often ends on its best evaluation by a hair (the
last steps at a tiny lr polish the optimum), so that flag alone marks flat curves as open. A run is
**still rising** when its best evaluation was its last AND its best dev score gained at least ``FLAT_TOL``
points over the last quarter of its evaluations (``late_gain``). Tables mark cells with a still-rising run
(†) and draw no verdict from them; the CSVs keep both the record's flag (``best_is_last``) and ``late_gain``.
"""
from __future__ import annotations

import math

FLAT_TOL = 0.5  # metric points (scores are 0-100): below one STS-B seed's spread, about 1 RTE example in 277


def dev_scores(history: list[dict], primary: str | None) -> list[float]:
    """The primary dev score of each evaluation: ``dev[primary]`` (one task) or ``dev_mean`` (multi-task)."""
    out = []
    for h in history:
        if isinstance(h.get("dev"), dict) and primary in h["dev"]:
            out.append(float(h["dev"][primary]))
        elif "dev_mean" in h:
            out.append(float(h["dev_mean"]))
    return out


def late_gain(scores: list[float]) -> float | None:
    """Best score overall minus the best over the first three quarters of the evaluations (>= 0); None for
    fewer than 2 evaluations."""
    if len(scores) < 2:
        return None
    head = max(1, math.ceil(0.75 * len(scores)))
    return max(scores) - max(scores[:head]) if head < len(scores) else max(scores) - max(scores[:-1])


def still_rising(best_is_last: bool | None, gain: float | None) -> bool:
    """The flag the tables mark: best evaluation last and a late gain of at least ``FLAT_TOL`` points (the
    record's flag alone when the curve is unknown)."""
    if not best_is_last:
        return False
    return True if gain is None or (isinstance(gain, float) and math.isnan(gain)) else gain >= FLAT_TOL


def of_record(rec: dict) -> tuple[bool | None, float | None, bool]:
    """``(best_is_last, late_gain, still_rising)`` of a run record."""
    from .errors import UserError
    from .tasks import get_task

    try:
        primary = rec.get("primary_metric") or get_task(rec["task"]).primary_metric
    except (UserError, KeyError, TypeError):  # a task outside the task table, a multi-task run: dev_mean is used
        primary = None
    best_is_last = rec.get("still_improving")
    gain = late_gain(dev_scores(rec.get("history") or [], primary))
    return best_is_last, gain, still_rising(best_is_last, gain)
