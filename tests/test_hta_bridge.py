"""The HTA bridge runs HTA live over the same files and agrees with metrics.md "Agreement with HTA"."""

import json

import pytest
from conftest import shared_path

from speedtrace.analysis.load import load
from speedtrace.analysis.report import build_report
from speedtrace.errors import SpeedtraceError

pytest.importorskip("hta")
# HTA's own pandas calls warn about deprecated arguments; that is HTA's business, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:.*inplace keyword:Warning")

from speedtrace.analysis import hta as bridge  # noqa: E402


def hta_numbers(trace_set) -> dict[int, dict]:
    """Per rank: HTA's overlap %, idle, compute and kernel time (µs), through the bridge."""
    ta = bridge.open(trace_set)
    overlap = ta.get_comm_comp_overlap(visualize=False).set_index("rank")["comp_comm_overlap_pctg"]
    breakdown = ta.get_temporal_breakdown(visualize=False).set_index("rank")
    return {int(r): {"overlap_pct": float(overlap[r]), "idle_us": float(breakdown.loc[r, "idle_time(us)"]),
                     "compute_us": float(breakdown.loc[r, "compute_time(us)"]),
                     "span_us": float(breakdown.loc[r, "kernel_time(us)"])}
            for r in breakdown.index}


def our_numbers(trace_set) -> dict[int, dict]:
    out = {}
    for e in build_report(trace_set)["ranks"]:
        t = e["totals"]
        out[e["rank"]] = {"overlap_pct": t["comp_comm_overlap_pct"], "idle_us": t["idle_us"],
                          "compute_us": t["compute_us"], "span_us": t["span_us"]}
    return out


def test_hta_sampled_two_ranks_agree():
    ts = load(shared_path("external-traces", "hta-sampled-2rank"))
    theirs, ours = hta_numbers(ts), our_numbers(ts)
    assert sorted(theirs) == sorted(ours) == [0, 1]
    # metrics.md: whole trace, with the last profiler step included
    assert theirs[0]["overlap_pct"] == pytest.approx(14.95, abs=0.005)
    assert theirs[1]["overlap_pct"] == pytest.approx(19.93, abs=0.005)
    for r in (0, 1):
        assert ours[r]["overlap_pct"] == pytest.approx(theirs[r]["overlap_pct"], abs=0.005)  # HTA rounds to 0.01
        for key in ("idle_us", "compute_us", "span_us"):
            assert ours[r][key] == pytest.approx(theirs[r][key], abs=1e-6), (r, key)


def test_synthetic_integer_trace_agrees(tmp_path):
    from test_report_cli import TOTALS, synthetic_trace

    for r in (0, 1):
        (tmp_path / f"rank-{r}.trace.json").write_text(json.dumps(synthetic_trace(rank=r, world_size=2)))
    ts = load(tmp_path)
    theirs, ours = hta_numbers(ts), our_numbers(ts)
    for r in (0, 1):
        assert theirs[r]["overlap_pct"] == pytest.approx(TOTALS["comp_comm_overlap_pct"], abs=0.005)
        for key in ("idle_us", "compute_us", "span_us"):
            assert theirs[r][key] == pytest.approx(TOTALS[key]), (r, key)  # HTA, by hand
            assert ours[r][key] == pytest.approx(theirs[r][key]), (r, key)  # and ours


def test_single_file_without_rank_metadata(tmp_path):
    from test_report_cli import synthetic_trace

    path = tmp_path / "rank-3.trace.json"  # the rank comes from the file name only
    path.write_text(json.dumps(synthetic_trace(with_rank=False)))
    (tmp_path / "run.json").write_text(json.dumps({"mode": "full"}))  # must not be read as a trace
    ts = load(path)
    assert [rt.rank for rt in ts.ranks] == [3]
    assert sorted(hta_numbers(ts)) == [3]


def test_missing_hta_is_a_clear_error(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_hta(name, *args, **kwargs):
        if name == "hta" or name.startswith("hta."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    from test_report_cli import synthetic_trace

    path = tmp_path / "rank-0.trace.json"
    path.write_text(json.dumps(synthetic_trace()))
    ts = load(path)
    monkeypatch.setattr(builtins, "__import__", no_hta)
    with pytest.raises(SpeedtraceError, match=r"pip install speedtrace\[hta\]"):
        bridge.open(ts)
