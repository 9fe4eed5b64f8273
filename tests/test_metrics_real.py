"""The metrics on the real H200 traces of the project's data folder, which is not in the repository
(../shared/data beside the checkout; each test is skipped when its trace is absent).

Expected figures come from the data README (GPU busy ~96% of the span, est. SM efficiency ~94%
without record_shapes) and metrics.md (record trainer, two steps: 96 dedicated select_backward
kernels, 667 µs; 656 fused).
"""

import time

import pytest
from conftest import shared_path

from speedtrace.analysis.load import load
from speedtrace.analysis.metrics import device_report


def entry(*parts):
    ts = load(shared_path("external-traces", *parts))
    (rt,) = ts.ranks
    start = time.perf_counter()
    r = device_report(rt, 0, ts.run)
    return r, time.perf_counter() - start


def test_noshapes_busy_and_sm_efficiency():
    r, seconds = entry("h200-speedrun-record233-noshapes")
    tot = r["totals"]
    assert tot["busy_us"] / tot["span_us"] == pytest.approx(0.96, abs=0.01)
    assert tot["est_sm_efficiency_pct"] == pytest.approx(94, abs=1)
    assert r["step_source"] == "cpu_annotation" and [s["step"] for s in r["steps"]] == [11, 12]
    assert tot["kernel_count"] > 10_000 and seconds < 1.0
    assert tot["compute_us"] + tot["exposed_comm_us"] + tot["exposed_memory_us"] + tot["idle_us"] \
        == pytest.approx(tot["span_us"], rel=1e-12)


def test_record_select_backward_matches_metrics_md():
    r, _ = entry("h200-speedrun-record233")
    tot = r["totals"]
    assert tot["select_backward_kernels"] == 96
    assert tot["select_backward_us"] == pytest.approx(667, abs=1)
    assert tot["select_backward_fused_kernels"] == 656
    assert tot["select_backward_cpu_ops"] == 0  # compiled: no eager aten::select_backward
    assert [s["totals"]["select_backward_kernels"] for s in r["steps"]] == [48, 48]


def test_hta_sampled_agrees_with_hta():
    """metrics.md "Agreement with HTA": overlap 14.95% / 19.93%; idle and compute µs as printed
    by HTA 0.6's get_temporal_breakdown (include_last_profiler_step=True) on these files."""
    from speedtrace.analysis import metrics

    got = {r["rank"]: r for r in metrics.totals(load(shared_path("external-traces", "hta-sampled-2rank")))}
    assert got[0]["comp_comm_overlap_pct"] == pytest.approx(14.95, abs=0.005)
    assert got[1]["comp_comm_overlap_pct"] == pytest.approx(19.93, abs=0.005)
    assert (got[0]["idle_us"], got[0]["compute_us"], got[0]["span_us"]) == (675191.0, 210320.0, 1222847.0)
    assert (got[1]["idle_us"], got[1]["compute_us"], got[1]["span_us"]) == (651136.0, 271973.0, 1231186.0)
