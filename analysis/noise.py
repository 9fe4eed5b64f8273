"""Whether a before/after change exceeds the per-step noise (docs/metrics.md "Diff JSON").

A change counts when it exceeds twice the pooled per-step spread and, with at least three steps
a side, Welch's two-sided test gives p < 0.05; without a per-step spread (whole-trace basis, or
one step per side) when it exceeds ``NO_SPREAD_REL`` of the larger side.
"""

from __future__ import annotations

import math

import numpy as np

NOISE_SPREADS = 2.0
WELCH_MIN_STEPS = 3
WELCH_ALPHA = 0.05
NO_SPREAD_REL = 0.02


def _welch_two_sided(before: list[float], after: list[float]) -> float | None:
    from speedtrace.analysis.runs import time_p_value

    fell, rose = time_p_value(after, before), time_p_value(before, after)
    if fell is None or rose is None:
        return None
    return min(1.0, 2.0 * min(fell, rose))


def pooled_spread(before: list[float], after: list[float]) -> float | None:
    """The pooled sample standard deviation of two per-step series (None with fewer than
    three values in all, or an empty side)."""
    n1, n2 = len(before), len(after)
    if n1 == 0 or n2 == 0 or n1 + n2 < 3:
        return None
    ss = sum((x - np.mean(before)) ** 2 for x in before) + sum((x - np.mean(after)) ** 2 for x in after)
    return float(math.sqrt(ss / (n1 + n2 - 2)))


def significance(before: list[float], after: list[float], b: float | None, a: float | None) -> dict:
    """Whether the change from ``b`` to ``a`` exceeds the per-step noise: {"spread", "p", "significant"}.

    ``before``/``after`` are the per-step values (empty on the whole-trace basis), ``b`` and
    ``a`` the values compared. A change is significant when it exceeds ``NOISE_SPREADS`` pooled
    spreads (``NO_SPREAD_REL`` of the larger value when there is no spread) and, with at least
    ``WELCH_MIN_STEPS`` steps a side, Welch's two-sided test gives p < ``WELCH_ALPHA`` (a
    difference between two constant series needs no test).
    """
    spread = pooled_spread(before, after)
    out = {"spread": spread, "p": None, "significant": False}
    if b is None or a is None:
        return out
    delta = abs(a - b)
    if delta <= 1e-9 * max(1.0, abs(a), abs(b)):
        return out
    if spread is None:
        out["significant"] = delta > NO_SPREAD_REL * max(abs(a), abs(b))
        return out
    out["significant"] = delta > NOISE_SPREADS * spread
    if out["significant"] and len(before) >= WELCH_MIN_STEPS and len(after) >= WELCH_MIN_STEPS:
        out["p"] = _welch_two_sided(before, after)
        if out["p"] is not None:
            out["significant"] = out["p"] < WELCH_ALPHA
    return out
