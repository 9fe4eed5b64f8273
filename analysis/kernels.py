"""The kernel table: GPU events grouped by key (metrics.md "Kernels").

A kernel's identity is its name (Inductor's counter removed) *and* its launch configuration:
the same ``transpose_kernel`` at grid 2358 × block 256 and at grid 201216 × block 128 is two
different pieces of work. The full key of a kernel is ``name<<<grid, block>>>`` (CUDA's launch
syntax; a dimension list drops its trailing 1s), or the bare name for events without launch
dimensions (memcpy, memset, traces without ``args.grid``). Tables show the bare name where a
name has one configuration among the keys shown (``display_keys``), and the full key where it
has several.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from speedtrace.analysis.fmt import config_text, split_key  # noqa: F401  (kernel keys are written there)

_INDUCTOR_COUNTER = re.compile(r"_\d+$")


def kernel_key(name: str) -> str:
    """The kernel's name, without Inductor's trailing counter for names starting ``triton_``."""
    return _INDUCTOR_COUNTER.sub("", name) if name.startswith("triton_") else name


def display_keys(keys: Iterable[str]) -> dict[str, str]:
    """Full key -> the key to show: the bare name when that name has one configuration among
    ``keys``, else the full key."""
    keys = list(dict.fromkeys(keys))
    configs: dict[str, int] = {}
    for k in keys:
        name, _ = split_key(k)
        configs[name] = configs.get(name, 0) + 1
    return {k: (k if configs[split_key(k)[0]] > 1 else split_key(k)[0]) for k in keys}


def launch_config(rank, row: int) -> tuple[tuple | None, tuple | None]:
    """(grid, block) of an event row of a ``RankTrace`` ((None, None) when not recorded)."""
    a = rank.args_of(row)
    return a.get("grid"), a.get("block")


def key_index(rank, rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The distinct full keys (name and launch configuration) of the event ``rows`` of a
    ``RankTrace``, sorted, and each row's index into them."""
    ev = rank.events
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return [], np.empty(0, dtype=np.int64)
    pairs, inverse = np.unique(np.stack([ev.name[rows].astype(np.int64), ev.extra[rows].astype(np.int64)]),
                               axis=1, return_inverse=True)
    full = []
    for code, extra in pairs.T.tolist():
        a = rank.event_args[extra] if extra >= 0 else {}
        grid, block = a.get("grid"), a.get("block")
        suffix = config_text(grid, block) if grid or block else ""
        full.append(kernel_key(ev.names[code]) + suffix)
    keys = sorted(set(full))
    position = {k: i for i, k in enumerate(keys)}
    idx = np.array([position[k] for k in full], dtype=np.int64)[inverse.reshape(-1)]
    return keys, idx


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
    """Per full key (name and launch configuration) over the selected events of a
    ``DeviceTimeline``: count, total/mean/max µs, duration-weighted mean blocks per SM and
    occupancy, streams, class (compute, comm or memory) and the launch dimensions; largest total
    first; ``top`` keeps the first ``top``. ``key`` is the display key (``display_keys``)."""
    ev = tl.rank.events
    rows = tl.rows[sel]
    if len(rows) == 0:
        return []
    dur = (tl.end - tl.start)[sel]
    full, key = key_index(tl.rank, rows)
    shown = display_keys(full)
    key_names = np.array([shown[k] for k in full], dtype=object)
    n = len(full)

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
    # Every event of a full key has the same dimensions: take them from its first event.
    first = np.full(n, -1, dtype=np.int64)
    first[key[::-1]] = rows[::-1]
    dims = [launch_config(tl.rank, int(r)) for r in first]

    order = np.lexsort((key_names.astype(str), -total))
    if top is not None:
        order = order[:top]
    return [{"key": str(key_names[i]), "class": ("compute", "comm", "memory")[cls_of_key[i]],
             "count": int(count[i]), "total_us": float(total[i]), "mean_us": float(total[i] / count[i]),
             "max_us": float(longest[i]), "mean_blocks_per_sm": mean_b[i],
             "mean_occupancy_pct": mean_occ[i], "streams": streams[i],
             "grid": list(dims[i][0]) if dims[i][0] else None,
             "block": list(dims[i][1]) if dims[i][1] else None} for i in order]
