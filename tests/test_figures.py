"""speedtrace.analysis.figures on a hand-built step, the bundled samples and hostile names.

The step (µs from the step's start; GPU 0 with 132 SMs; ``step_trace`` below):

  CPU  ProfilerStep#11 [0,100)   forward [1,58)
         launch at 2  -> gemm      stream 7  [10,20)  grid 132 -> b = 1 (every SM)
         launch at 3  -> ncclDevKernel_AllReduce  stream 9  [12,32)  grid 4
         launch at 30 -> small     stream 7  [40,50)  grid 66 -> b = 0.5
         launch at 55 -> Memcpy    stream 7  [60,70)

busy [10,32) ∪ [40,50) ∪ [60,70); idle gaps [32,40) (8 µs, launch of `small` at 30 before
the gap: dependency) and [50,60) (10 µs, the memcpy's launch at 55 after the gap began:
host_late); exposed comm [20,32) (12 µs; the next compute kernel, `small`, was launched at 30,
after it began: host_late); exposed memory [60,70) (10 µs). The NCCL kernel ran under the
full-SM gemm over [12,20) (8 µs) and waited in its queue from its launch's end (4) to its start
(12), of which [10,12) under the gemm. Span 60 = compute 20 + exposed comm 12 + exposed memory
10 + idle 18; overlap 8 of 20 µs comm: 40%.
"""

from __future__ import annotations

import json
import os

import numpy as np
import plotly.io as pio
import pytest
from synth import Trace

from speedtrace.analysis import figures, load
from speedtrace.analysis.diff import build_diff
from speedtrace.analysis.figures_geometry import MAX_POINTS
from speedtrace.analysis.figures_timeline import NAME_LIMIT
from speedtrace.errors import SpeedtraceError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(REPO, "speedtrace", "samples")
EIGHT_RANKS = os.path.join(os.environ.get("SPEEDTRACE_SHARED", os.path.join(os.path.dirname(REPO), "shared")),
                           "data", "external-traces", "mng-normuon-8rank-h100")

HOSTILE = "<img src=x onerror=alert(1)>"
SCRIPT = "</script><script>alert(2)</script>"
BIDI = "evil\u202eroot\nline"


def step_trace(tmp_path, *, gemm="gemm", small="small", rank=0, step=11, name="rank-0.trace.json"):
    t = Trace(rank=rank)
    t.step(step, 0, 100)
    t.annotation("forward", 1, 57)
    t.launch_kernel(gemm, 2, 10, 10, grid=132, stream=7)
    t.launch_kernel("ncclDevKernel_AllReduce_Sum_f32_RING_LL", 3, 12, 20, grid=4, stream=9)
    t.launch_kernel(small, 30, 40, 10, grid=66, stream=7)
    t.memcpy(60, 10, stream=7, launch_at=55)
    return load(t.write(tmp_path / name))


def traces_named(fig, name, mode=None):
    return [t for t in fig.data if t.name == name and (mode is None or t.mode == mode)]


def pairs(trace):
    """(x0, x1) of each NaN-separated polygon or segment of a trace, in µs."""
    x = np.asarray(trace.x, float) * 1000.0
    out = []
    for part in np.split(x, np.flatnonzero(np.isnan(x))):
        part = part[~np.isnan(part)]
        if len(part):
            out.append((round(part.min(), 6), round(part.max(), 6)))
    return out


def spec(fig) -> dict:
    """The figure as the page embeds it (plotly's JSON), decoded."""
    return json.loads(pio.to_json(fig, validate=False))


# ---------------------------------------------------------------------------- timeline


def test_timeline_gap_bands_where_the_gaps_are(tmp_path):
    fig = figures.timeline(step_trace(tmp_path))
    [idle] = traces_named(fig, "idle gap", "lines")
    assert sorted(pairs(idle)) == [(32.0, 40.0), (50.0, 60.0)]
    [comm] = traces_named(fig, "exposed comm", "lines")
    assert pairs(comm) == [(20.0, 32.0)]
    [mem] = traces_named(fig, "exposed memory", "lines")
    assert pairs(mem) == [(60.0, 70.0)]
    # The hover marker of each idle gap names its cause.
    [marks] = traces_named(fig, "idle gap", "markers")
    texts = dict(zip(np.round(np.asarray(marks.x, float) * 1000, 6), marks.text))
    assert "cause: dependency" in texts[36.0] and "cause: host_late" in texts[55.0]


def test_timeline_lanes_streams_and_kernels(tmp_path):
    fig = figures.timeline(step_trace(tmp_path))
    labels = [t for t in fig.layout.yaxis.ticktext if t]
    assert labels == ["rank 0 · GPU 0 · phases", "rank 0 · GPU 0 · stream 7 (compute+memcpy)",
                      "rank 0 · GPU 0 · stream 9 (comm)"]
    [compute] = traces_named(fig, "compute kernel", "lines")
    assert sorted(pairs_segments(compute)) == [(10.0, 20.0), (40.0, 50.0)]
    [comm] = traces_named(fig, "comm kernel (NCCL)", "lines")
    assert pairs_segments(comm) == [(12.0, 32.0)]
    assert fig.layout.meta["events_drawn"] == 4
    # Hover: name, start in the step (the step's first GPU event is the gemm at 10), duration.
    [marks] = [t for t in fig.data if t.mode == "markers" and t.legendgroup == "class:compute"]
    row = list(marks.text).index("small")
    assert marks.customdata[row][:2] == [30.0, 10.0]
    assert marks.customdata[row][4] == 0.5          # blocks/SM
    assert "step 11" in marks.hovertext[row] and "phase forward" in marks.hovertext[row]
    # Step boundary at the step's first GPU start.
    assert [round(s.x0 * 1000, 6) for s in fig.layout.shapes if s.yref == "y"] == [10.0]


def pairs_segments(trace):
    x = np.asarray(trace.x, float) * 1000.0
    return [(round(x[i], 6), round(x[i + 1], 6)) for i in range(0, len(x), 3)]


def test_timeline_sm_track_and_contention(tmp_path):
    fig = figures.timeline(step_trace(tmp_path))
    [sm] = traces_named(fig, "SM usage (Σ blocks/SM)")
    x = np.round(np.asarray(sm.x, float) * 1000, 6)
    value = dict(zip(x[1:-3], sm.customdata[1:-3]))  # the step vertices (see _polygon_of_steps)
    assert value == {10.0: 1.0, 20.0: 0.0, 40.0: 0.5}
    [ran] = traces_named(fig, "comm ran while compute held every SM")
    assert pairs(ran) == [(12.0, 20.0)]
    assert ran.customdata[0] == 8.0
    [queued] = traces_named(fig, "comm waited in its queue while compute held every SM")
    assert pairs(queued) == [(10.0, 12.0)]


def test_timeline_phase_band(tmp_path):
    fig = figures.timeline(step_trace(tmp_path))
    [band] = [t for t in fig.data if t.legendgroup == "phase:forward" and t.mode == "lines"]
    assert pairs_segments(band) == [(10.0, 70.0)]  # first to last GPU event launched in `forward`


def test_timeline_selection_errors(tmp_path):
    ts = step_trace(tmp_path)
    with pytest.raises(SpeedtraceError, match="no rank 3"):
        figures.timeline(ts, ranks=3)
    with pytest.raises(SpeedtraceError, match="steps 11-11"):
        figures.timeline(ts, steps=(20, 30))
    assert figures.timeline(ts, steps=11, ranks=[0]).layout.meta["events_drawn"] == 4


def test_hostile_names_are_inert_in_the_figure(tmp_path):
    d = tmp_path / "<b onclick=x>dir"
    d.mkdir()
    ts = step_trace(d, gemm=HOSTILE, small=SCRIPT + BIDI)
    for fig in (figures.timeline(ts), figures.kernels(ts), figures.gaps(ts), figures.breakdown(ts)):
        text = json.dumps(spec(fig), ensure_ascii=False)
        assert "<img" not in text and "<script" not in text and "</script" not in text
        assert "<b onclick" not in text and "\u202e" not in text
    fig = figures.timeline(ts)
    names = [n for t in fig.data if t.legendgroup == "class:compute" and t.mode == "markers" for n in t.text]
    assert "&lt;img src=x onerror=alert(1)&gt;" in names
    assert "&lt;/script&gt;&lt;script&gt;alert(2)&lt;/script&gt;evil\\u202eroot\\x0aline" in names
    assert "&lt;b onclick=x&gt;dir" in fig.layout.title.text
    # The idle gap after the hostile kernel shows its name escaped.
    [marks] = traces_named(fig, "idle gap", "markers")
    assert any("&lt;/script&gt;" in t for t in marks.text)


def test_long_names_are_cut(tmp_path):
    fig = figures.timeline(step_trace(tmp_path, gemm="k" * 500))
    [marks] = [t for t in fig.data if t.legendgroup == "class:compute" and t.mode == "markers"]
    assert "k" * (NAME_LIMIT - 1) + "…" in marks.text


# ---------------------------------------------------------------------------- summary panes


def test_breakdown_stacks_to_the_span(tmp_path):
    fig = figures.breakdown(step_trace(tmp_path))
    got = {t.name: list(t.y) for t in fig.data}
    assert got == {"compute": [0.020], "exposed comm": [0.012], "exposed memory": [0.010], "idle": [0.018]}


def test_overlap_and_kernels(tmp_path):
    ts = step_trace(tmp_path)
    fig = figures.overlap(ts)
    got = {t.name: list(t.y) for t in fig.data}
    assert got == {"overlapped with compute": [0.008], "exposed": [0.012]}
    assert list(fig.data[1].text) == ["40.0% hidden"]
    k = figures.kernels(ts)
    bars = {y: x for t in k.data for y, x in zip(t.y, t.x)}
    assert bars["ncclDevKernel_AllReduce_Sum_f32_RING_LL"] == pytest.approx(0.020)
    assert bars["gemm"] == pytest.approx(0.010) and bars["small"] == pytest.approx(0.010)


def test_gaps_over_time(tmp_path):
    fig = figures.gaps(step_trace(tmp_path))
    points = sorted((round(x * 1000, 6), y, t.name) for t in fig.data for x, y in zip(t.x, t.y))
    # Times from the rank's first GPU start (the gemm at 10).
    assert points == [(10.0, 12.0, "host_late (exposed comm)"), (22.0, 8.0, "dependency (idle)"),
                      (40.0, 10.0, "host_late (idle)")]


def test_no_comm_says_so(tmp_path):
    t = Trace(rank=0)
    t.step(1, 0, 50)
    t.launch_kernel("gemm", 1, 5, 10, grid=132)
    fig = figures.overlap(load(t.write(tmp_path / "rank-0.trace.json")))
    assert not fig.data and "no communication" in fig.layout.annotations[0].text


# ---------------------------------------------------------------------------- diff


def diff_doc():
    def k(key, bu, au, status, **extra):
        return {"key": key, "class": "compute", "before_count": 1, "after_count": 1, "before_us": bu,
                "after_us": au, "delta_us": au - bu, "status": status, "matched_from": None, "absorbed": [],
                "absorbed_into": None, **extra}
    metric = {"before": 1000.0, "after": 900.0, "delta": -100.0, "delta_pct": -10.0, "spread": 10.0, "p": 0.01,
              "significant": True}
    return {"schema": "speedtrace.diff/1", "basis": "per_step",
            "units": {"metrics": "mean over steps", "kernels": "per step", "gaps": "per step"},
            "metrics": {"span_us": metric, "select_backward_kernels": {"before": 96, "after": 96},
                        "select_backward_fused_kernels": {"before": 656, "after": 656},
                        "select_backward_us": {"before": 1611.0, "after": 667.0, "spread": 5.0}},
            "kernels": [k("a", 300, 200, "changed"), k("b", 0, 50, "added"),
                        k(HOSTILE, 30, 0, "removed", absorbed_into="c"),
                        k("c", 10, 30, "changed", matched_from="c_old")],
            "gaps": [{"kind": "idle", "phase": SCRIPT, "before": {"count": 1, "total_us": 5.0},
                      "after": {"count": 2, "total_us": 9.0}, "delta_us": 4.0, "status": "changed"}]}


def test_diff_waterfall_by_hand():
    figs = figures.diff_figures(diff_doc())
    assert set(figs) == {"metrics", "kernels", "select_backward", "gaps"}
    bar = figs["kernels"].data[0]
    # Running sum: 0 -100 (a) -> -100; +50 (b) -> -50; -30 (absorbed) -> -80; +20 (renamed) -> -60.
    assert list(bar.base) == [-100.0, -100.0, -80.0, -80.0, -60.0]
    assert list(bar.x) == [100.0, 50.0, 30.0, 20.0, 60.0]
    colors = dict(zip(bar.y, bar.marker.color))
    assert colors["b"] == "#e45756" and colors["&lt;img src=x onerror=alert(1)&gt;"] == "#b279a2"
    assert colors["c"] == "#4c78a8" and colors["net change"] == "#333333"
    for fig in figs.values():
        text = json.dumps(spec(fig), ensure_ascii=False)
        assert "<img" not in text and "</script" not in text


def test_diff_metrics_noise_band():
    fig = figures.diff_figures(diff_doc())["metrics"]
    [bar] = [t for t in fig.data if "span_us" in t.hovertemplate]
    assert list(bar.y) == [1.0, 0.9] and list(bar.error_y.array) == [0, 0.01]
    bands = [s for s in fig.layout.shapes if s.type == "rect"]
    assert any(s.y0 == pytest.approx(0.98) and s.y1 == pytest.approx(1.02) for s in bands)


def test_timeline_pair_aligns_the_step(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    before = step_trace(tmp_path / "a", step=11)
    t = Trace(rank=0)
    t.step(11, 0, 300)
    t.launch_kernel("late", 100, 200, 5, grid=132)
    after = load(t.write(tmp_path / "b" / "rank-0.trace.json"))
    fig = figures.timeline_pair(before, after)
    assert "step 11" in fig.layout.title.text
    starts = sorted(round(min(np.asarray(t.x, float)[~np.isnan(np.asarray(t.x, float))]) * 1000, 6)
                    for t in fig.data if t.mode == "lines" and t.legendgroup == "class:compute")
    assert starts == [0.0, 0.0]
    labels = [x for x in fig.layout.yaxis.ticktext if x]
    assert labels[0].startswith("before · rank 0") and any(x.startswith("after · rank 0") for x in labels)


# ---------------------------------------------------------------------------- scale


def _gpu_events_in_file(path) -> int:
    import gzip

    with gzip.open(path, "rt") as f:
        d = json.load(f)
    return sum(1 for e in d["traceEvents"] if e.get("ph") == "X" and e.get("cat") in
               ("kernel", "gpu_memcpy", "gpu_memset"))


@pytest.mark.slow
def test_bundled_sample_drawn_whole():
    path = os.path.join(SAMPLES, "h200-record")
    fig = figures.timeline(load(path))
    assert fig.layout.meta["events_drawn"] == _gpu_events_in_file(os.path.join(path, "rank-0.trace.json.gz"))
    assert all(t.type == "scattergl" for t in fig.data)
    assert max(len(t.x) for t in fig.data) <= MAX_POINTS


@pytest.mark.slow
def test_eight_rank_set_all_ranks():
    if not os.path.isdir(EIGHT_RANKS):
        pytest.skip(f"the 8-rank NCCL trace set lives outside the repo ({EIGHT_RANKS}); not present here")
    ts = load(EIGHT_RANKS)
    fig = figures.timeline(ts)
    lanes = [t for t in fig.layout.yaxis.ticktext if "stream" in t]
    assert {int(t.split()[1]) for t in lanes} == set(range(8))
    total = sum(_gpu_events_in_file(os.path.join(EIGHT_RANKS, f)) for f in os.listdir(EIGHT_RANKS))
    assert fig.layout.meta["events_drawn"] == total
    assert max(len(t.x) for t in fig.data) <= MAX_POINTS


def test_diff_figures_of_the_samples():
    before = load(os.path.join(SAMPLES, "h200-speedrun"))
    figs = figures.diff_figures(build_diff(before, before))
    assert figs["kernels"].layout.annotations[0].text == "no kernel time changed"
