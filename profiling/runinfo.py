"""run.json, the one schema: what ``speedtrace profile`` records beside a trace set.

``RunInfo`` is written by capture (``write``) and read by analysis (``read``). Every field is
optional, because run.json grew over time and older runs (and the bundled samples) lack the
newer fields: a missing field is None. A field of the wrong type is dropped with a warning, and
so are fields this version does not know, so an odd run.json never stops a report. The
top-level names are those run.json has always had; a new field is added at the end.
"""

from __future__ import annotations

from typing import Any

import msgspec

SCHEMA = "speedtrace.run/1"


class StepMarkers(msgspec.Struct, forbid_unknown_fields=False):
    """Marker kernels launched at each profiled step's start and after the last one."""

    kernel: str
    steps: list[int]


class StepBoundary(msgspec.Struct, forbid_unknown_fields=False):
    """A step's window on the trace's clock (µs), for steps without annotations or markers."""

    step: int
    start_us: float
    end_us: float


class HostBound(msgspec.Struct, forbid_unknown_fields=False):
    """Whether the host set the length of the unprofiled / profiled steps (None: not judged)."""

    unprofiled: bool | None = None
    profiled: bool | None = None


class Steal(msgspec.Struct, forbid_unknown_fields=False):
    """CPU time (ms) the hypervisor took while the unprofiled / profiled steps ran."""

    unprofiled: float | None = None
    profiled: float | None = None


class RunInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The fields of run.json, in the order capture writes them (all optional)."""

    schema: str | None = None
    created: str | None = None
    # What ran: the trainer's settings (speedtrace profile) or a user's metadata.
    config: str | None = None
    variant: str | None = None
    reverts: list[str] | None = None
    start_step: int | None = None
    compile_warmup: str | None = None
    compiled: bool | None = None
    # How it was profiled.
    mode: str | None = None
    activities: str | None = None
    record_shapes: bool | None = None
    with_stack: bool | None = None
    profile_memory: bool | None = None
    launch_records: bool | None = None
    startup_steps: int | None = None
    cuda_graphs: bool | None = None
    world_size: int | None = None
    # Step and host times, and what they say.
    unprofiled_steps: list[int] | None = None
    unprofiled_step_ms: list[float] | None = None
    profiled_steps: list[int] | None = None
    profiled_step_ms: list[float] | None = None
    unprofiled_host_ms: list[float] | None = None
    profiled_host_ms: list[float] | None = None
    dilation: float | None = None
    dilation_target: float | None = None
    host_bound: HostBound | None = None
    steal_ms: Steal | None = None
    unprofiled_peak_allocated_mib: float | None = None
    unprofiled_peak_reserved_mib: float | None = None
    environment: dict[str, Any] | None = None
    # Where the steps are when the trace has no ProfilerStep annotations.
    step_markers: StepMarkers | None = None
    step_boundaries: list[StepBoundary] | None = None
    # Bundled samples: which steps were kept, where they came from.
    sample_steps: list[int] | None = None
    source: str | None = None
    note: str | None = None
    # ProfileSettings.metadata entries that are none of the fields above.
    metadata: dict[str, Any] | None = None


FIELDS: dict[str, Any] = {f.name: f.type for f in msgspec.structs.fields(RunInfo)}


def from_dict(raw: dict, where: str = "run.json") -> tuple[RunInfo, list[str]]:
    """A ``RunInfo`` from run.json's decoded object, and the warnings about it (one for the
    unknown fields, one for the fields of the wrong type; each dropped, never fatal)."""
    known, wrong = {}, []
    for name, value in raw.items():
        if name not in FIELDS or value is None:
            continue
        try:
            known[name] = msgspec.convert(value, type=FIELDS[name])
        except msgspec.ValidationError:
            wrong.append(name)
    warnings = []
    unknown = sorted(str(k) for k in raw if k not in FIELDS)
    if unknown:
        warnings.append(f"{where}: unknown fields ignored ({', '.join(unknown)}); written by a newer "
                        "speedtrace or by hand")
    if wrong:
        warnings.append(f"{where}: fields of the wrong type ignored ({', '.join(wrong)})")
    return RunInfo(**known), warnings


def coerce(run) -> RunInfo | None:
    """``run`` as a ``RunInfo``: a RunInfo as it is, a dict converted (its warnings dropped:
    the loader has given them), anything else None."""
    if run is None or isinstance(run, RunInfo):
        return run
    if isinstance(run, dict):
        return from_dict(run)[0]
    return None


def to_dict(info: RunInfo, keep: tuple[str, ...] = ()) -> dict:
    """run.json's object (plain JSON types) in field order: fields that are None are left out,
    except those named in ``keep`` (written as null, so a reader sees "measured: none")."""
    out = msgspec.to_builtins(info)
    if not keep:
        return out
    return {name: out.get(name) for name in FIELDS if name in out or name in keep}


def read(data: bytes, where: str) -> tuple[RunInfo | None, list[str]]:
    """Decode run.json's bytes: (RunInfo, warnings), or (None, [warning]) when unreadable."""
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as e:
        return None, [f"{where}: unreadable run metadata, ignored ({e})"]
    if not isinstance(raw, dict):
        return None, [f"{where}: run metadata is not a JSON object, ignored"]
    return from_dict(raw, where)
