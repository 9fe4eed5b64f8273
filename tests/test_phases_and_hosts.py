"""Phases skip Inductor's graph-call ranges; traces without GPU activity still time their steps."""

import json

from synth import Trace

import speedtrace.analysis as sa
from speedtrace.analysis.render import render_text
from speedtrace.analysis.report import build_report
from speedtrace.analysis.report_sections import report_sections
from speedtrace.cli import main


def test_inductor_graph_ranges_are_not_phases(tmp_path):
    t = Trace()
    t.step(1, 0, 100)
    t.annotation("forward", 1, 40)
    # Inductor wraps the compiled graph's launches in a range of its own, inside "forward".
    t.annotation("## Call CompiledFxGraph fly3c4t7rapjaw653kmost6gkacelgalnvuv2suesqjzru5clipe ##", 2, 30)
    t.launch_kernel("triton_poi_fused_add_0", launch_at=3, start=10, dur=5)
    # A user's own "## backward ##" range (the style of the HTA sample) stays a phase.
    t.annotation("## backward ##", 50, 40)
    t.launch_kernel("gemm", launch_at=51, start=60, dur=7)
    ts = sa.load(t.write(tmp_path / "rank-0.trace.json"))
    phases = {p["phase"]: p for p in sa.phases(ts)}
    assert set(phases) == {"forward", "## backward ##"}
    assert phases["forward"]["gpu_us"] == 5.0 and phases["## backward ##"]["gpu_us"] == 7.0


def _cpu_only_trace(tmp_path):
    t = Trace()
    t.step(7, 0, 1000)
    t.annotation("forward", 10, 300)
    t.annotation("backward", 320, 500)
    t.step(8, 1000, 1500)
    t.annotation("forward", 1010, 400)
    t.annotation("backward", 1420, 900)
    return t.write(tmp_path / "rank-0.trace.json")


def test_cpu_only_trace_reports_step_and_phase_cpu_times(tmp_path):
    report = build_report(sa.load(_cpu_only_trace(tmp_path)))
    assert report["ranks"] == []
    (host,) = report["hosts"]
    assert host["step_source"] == "cpu_annotation"
    assert [(s["step"], s["step_wall_us"]) for s in host["steps"]] == [(7, 1000.0), (8, 1500.0)]
    phases = {p["phase"]: (p["count"], p["cpu_us"]) for p in host["phases"]}
    assert phases == {"backward": (2, 1400.0), "forward": (2, 700.0)}
    text = render_text(report_sections(report))
    assert "no GPU activity" in text and "1.50" in text  # step 8: 1.50 ms


def test_cpu_only_trace_cli_json(tmp_path, capsys):
    path = _cpu_only_trace(tmp_path)
    assert main(["report", str(path), "--format", "json", "--steps", "8"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["step"] for s in doc["hosts"][0]["steps"]] == [8]
