"""The kernel table: GPU events grouped by key (metrics.md "Kernels")."""

from __future__ import annotations

import re

import numpy as np

_INDUCTOR_COUNTER = re.compile(r"_\d+$")


def kernel_key(name: str) -> str:
    """The kernel's name, without Inductor's trailing counter for names starting ``triton_``."""
    return _INDUCTOR_COUNTER.sub("", name) if name.startswith("triton_") else name


def _weighted_mean(key: np.ndarray, n_keys: int, value: np.ndarray, dur: np.ndarray) -> list:
    """Per key: duration-weighted mean of the known (non-NaN) values; plain mean when those
    events all last 0 µs; None when no event of the key has a value."""
    known = ~np.isnan(value)
    k, v, w = key[known], value[known], dur[known]
    num = np.bincount(k, weights=v * w, minlength=n_keys)
    den = np.bincount(k, weights=w, minlength=n_keys)
    cnt = np.bincount(k, minlength=n_keys)
    plain = np.bincount(k, weights=v, minlength=n_keys)
    out = []
    for i in range(n_keys):
        if cnt[i] == 0:
            out.append(None)
        elif den[i] > 0:
            out.append(float(num[i] / den[i]))
        else:
            out.append(float(plain[i] / cnt[i]))
    return out


def kernel_table(tl, sel: np.ndarray, top: int | None = None) -> list[dict]:
    """Per key over the selected events of a ``DeviceTimeline``: count, total/mean/max µs,
    duration-weighted mean blocks per SM and occupancy, streams and class (compute, comm or
    memory), largest total first; ``top`` keeps the first ``top``."""
    ev = tl.rank.events
    rows = tl.rows[sel]
    if len(rows) == 0:
        return []
    dur = (tl.end - tl.start)[sel]
    codes, inverse = np.unique(ev.name[rows], return_inverse=True)
    keys = [kernel_key(ev.names[c]) for c in codes]
    key_names, key_of_code = np.unique(np.array(keys, dtype=object), return_inverse=True)
    key = key_of_code[inverse]
    n = len(key_names)

    count = np.bincount(key, minlength=n)
    total = np.bincount(key, weights=dur, minlength=n)
    longest = np.full(n, -np.inf)
    np.maximum.at(longest, key, dur)
    mean_b = _weighted_mean(key, n, tl.b[sel], dur)
    mean_occ = _weighted_mean(key, n, tl.occupancy[sel], dur)
    stream = np.where(ev.stream[rows] >= 0, ev.stream[rows], ev.tid[rows])
    pairs = np.unique(np.stack([key, stream]), axis=1)
    streams: list[list[int]] = [[] for _ in range(n)]
    for k, s in pairs.T.tolist():
        streams[k].append(s)
    cls = np.where(tl.is_comm[sel], 1, np.where(tl.is_compute[sel], 0, 2))
    cls_of_key = np.zeros(n, dtype=np.int64)
    np.maximum.at(cls_of_key, key, cls)  # a key is one class in practice; comm/memory win ties

    order = np.lexsort((key_names.astype(str), -total))
    if top is not None:
        order = order[:top]
    return [{"key": str(key_names[i]), "class": ("compute", "comm", "memory")[cls_of_key[i]],
             "count": int(count[i]), "total_us": float(total[i]), "mean_us": float(total[i] / count[i]),
             "max_us": float(longest[i]), "mean_blocks_per_sm": mean_b[i],
             "mean_occupancy_pct": mean_occ[i], "streams": streams[i]} for i in order]
