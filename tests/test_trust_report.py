"""Numbers and words a reader can trust (issue "Trust every number"), on the report and diff side:
occupancy that Kineto could not estimate, warnings printed once, a short verdict, warnings for
diffs across GPU models or with GPU time outside the steps, and names that cannot break a table."""

from __future__ import annotations

import json
import re

import pytest
from synth import Trace

from speedtrace.cli import main


def _report_json(capsys, path) -> dict:
    assert main(["report", str(path), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_kineto_zero_occupancy_means_not_estimated(tmp_path, capsys):
    t = Trace()
    t.step(1, 0, 200)
    # Two compute kernels with an estimate (60% for 30 µs, 80% for 10 µs) and one cuBLAS-like
    # kernel for which Kineto wrote 0 (not estimated), 60 µs long.
    t.launch_kernel("gemm_estimated", 1, 10, 30, grid=132, occupancy=60.0)
    t.launch_kernel("other_estimated", 2, 50, 10, grid=132, occupancy=80.0)
    t.launch_kernel("nvjet_unestimated", 3, 70, 60, grid=132, occupancy=0.0)
    rep = _report_json(capsys, t.write(tmp_path / "rank-0.trace.json"))
    totals = rep["ranks"][0]["totals"]
    # (60·30 + 80·10) / (30 + 10) = 65, not (60·30 + 80·10 + 0·60) / 100 = 26
    assert totals["achieved_occupancy_pct"] == pytest.approx(65.0)
    assert totals["achieved_occupancy_coverage_pct"] == pytest.approx(100 * 40 / 100)
    by_key = {k["key"]: k for k in rep["ranks"][0]["kernels"]}
    assert by_key["nvjet_unestimated"]["mean_occupancy_pct"] is None
    assert main(["report", str(tmp_path / "rank-0.trace.json")]) == 0
    out = capsys.readouterr().out
    assert "achieved occupancy 65.0% (estimated for 40.0% of compute kernel time)" in out
    row = next(line for line in out.splitlines() if "nvjet_unestimated" in line)
    assert row.split()[-1] == "n/a"


def _two_rank_world_with_one_file(tmp_path):
    t = Trace(rank=0, world_size=2)
    t.step(1, 0, 100)
    t.launch_kernel("k", 1, 5, 10, grid=132)
    d = tmp_path / "run"
    d.mkdir()
    t.write(d / "rank-0.trace.json")
    return d


@pytest.mark.parametrize("fmt", ["text", "md", "json"])
def test_each_warning_is_printed_once(tmp_path, capsys, fmt):
    d = _two_rank_world_with_one_file(tmp_path)
    assert main(["report", str(d), "--format", fmt]) == 0
    out, err = capsys.readouterr()
    if fmt == "json":
        # the JSON carries it as data; the terminal shows it once, on stderr
        assert sum("missing 1" in w for w in json.loads(out)["warnings"]) == 1
        out = ""
    assert (out + err).count("missing 1") == 1


def _long_names_pair(tmp_path):
    """Before and after with twelve long templated kernels whose time changes a lot."""
    sides = []
    for side, scale in (("before", 1.0), ("after", 3.0)):
        d = tmp_path / side
        d.mkdir()
        t = Trace()
        for s in range(3):
            base = s * 2000
            t.step(s + 1, base, 1900)
            for i in range(12):
                name = f"void ns::kernel_{i}<" + ", ".join(f"cfg{j}" for j in range(40)) + ">(float*, int)"
                t.launch_kernel(name, base + 1 + i, base + 10 + i * 120, 50 * scale if i < 12 else 50,
                                grid=132)
        t.write(d / "rank-0.trace.json")
        sides.append(d)
    return sides


def test_verdict_is_short(tmp_path, capsys):
    before, after = _long_names_pair(tmp_path)
    assert main(["diff", str(before), str(after), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    v = doc["verdict"]
    sentences = [s for s in re.split(r"(?<=\.)\s+", v.replace("\n", " ")) if s]
    assert len(sentences) <= 5
    assert len(v) < 800
    assert "cfg39" not in v                       # names shortened in the sentence ...
    assert any("cfg39" in k["key"] for k in doc["kernels"])   # ... but whole in the table


def test_diff_warns_about_different_gpu_models(tmp_path, capsys):
    paths = []
    for side, gpu in (("before", "NVIDIA H100 80GB HBM3"), ("after", "NVIDIA H200")):
        t = Trace()
        t.step(1, 0, 100)
        t.launch_kernel("k", 1, 5, 10, grid=132)
        data = t.to_dict()
        data["deviceProperties"][0]["name"] = gpu
        p = tmp_path / f"{side}.json"
        p.write_text(json.dumps(data))
        paths.append(p)
    assert main(["diff", *map(str, paths), "--format", "json"]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    found = [w for w in warnings if "different GPU models" in w]
    assert len(found) == 1 and "NVIDIA H100 80GB HBM3" in found[0] and "NVIDIA H200" in found[0]


def test_diff_warns_when_most_gpu_time_is_outside_the_steps(tmp_path, capsys):
    paths = []
    for side in ("before", "after"):
        t = Trace()
        t.step(1, 0, 10)
        t.launch_kernel("inside", 1, 2, 4, grid=132)          # 4 µs inside step 1
        t.launch_kernel("outside", 20, 30, 1686, grid=132)    # 1,686 µs after it
        p = tmp_path / f"{side}.json"
        t.write(p)
        paths.append(p)
    assert main(["diff", *map(str, paths), "--format", "json"]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    found = [w for w in warnings if "outside the profiler steps" in w]
    # one per side: 1,686 of 1,690 µs busy is outside (100%)
    assert len(found) == 2 and "1.69 ms" in found[0] and "(100%)" in found[0]


HOSTILE = ["gemm\nfake row", "evil\u202eeman", "tick`tock", "pipe|kernel", "<img src=x onerror=alert(1)>"]


def _hostile_trace(tmp_path):
    t = Trace()
    t.step(1, 0, 1000)
    for i, name in enumerate(HOSTILE):
        t.launch_kernel(name, 1 + i, 10 + 100 * i, 50 + i, grid=132)
    return t.write(tmp_path / "rank-0.trace.json")


def test_hostile_names_cannot_break_text(tmp_path, capsys):
    path = _hostile_trace(tmp_path)
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\u202e" not in out and "\\u202e" in out
    assert "gemm\\x0afake row" in out and "\nfake row" not in out
    table = out[out.index("top kernels:"):].splitlines()[1:]
    assert len(table) == 1 + len(HOSTILE)          # header + one line per kernel, none split


def test_hostile_names_cannot_break_markdown(tmp_path, capsys):
    path = _hostile_trace(tmp_path)
    assert main(["report", str(path), "--format", "md"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out[out.index("### Top kernels"):].splitlines() if line.startswith("|")]
    assert len(rows) == 2 + len(HOSTILE)
    # every row has the header's number of cells: no pipe or newline split one
    cells = [len(re.split(r"(?<!\\)\|", r)) for r in rows]
    assert len(set(cells)) == 1
    assert "`` tick`tock ``" in out and "`pipe\\|kernel`" in out
    # HTML only inside code spans, where markdown shows it as text
    assert out.count("<img") == out.count("`<img src=x onerror=alert(1)>`") == 1


# ------------------------------------------------------------------ the same rules on real traces

def test_occupancy_on_a_real_h200_trace_matches_the_raw_json(capsys):
    """Σ occ·dur / Σ dur over the compute kernels with an estimate, and their share of compute
    kernel time, worked out from the raw JSON with the json module alone."""
    import gzip

    from speedtrace.samples import sample_path

    path = sample_path("h200-record")
    with gzip.open(path / "rank-0.trace.json.gz", "rt") as f:
        events = json.load(f)["traceEvents"]
    kernels = [e for e in events if e.get("ph") == "X" and e.get("cat") == "kernel"
               and not re.search("nccl|rccl", e["name"], re.I)]
    with_occ = [e for e in kernels if (e.get("args") or {}).get("est. achieved occupancy %", 0) > 0]
    weighted = sum(e["args"]["est. achieved occupancy %"] * e["dur"] for e in with_occ)
    expected = weighted / sum(e["dur"] for e in with_occ)
    coverage = 100 * sum(e["dur"] for e in with_occ) / sum(e["dur"] for e in kernels)
    rep = _report_json(capsys, path)
    totals = rep["ranks"][0]["totals"]
    assert totals["achieved_occupancy_pct"] == pytest.approx(expected, rel=1e-9)
    assert totals["achieved_occupancy_coverage_pct"] == pytest.approx(coverage, rel=1e-9)
    assert 0 < len(with_occ) < len(kernels)        # the sample has both kinds


def test_diff_of_real_traces_from_two_gpu_models_warns(tmp_path, capsys):
    import gzip
    import shutil

    from speedtrace.samples import sample_path

    before = tmp_path / "parent"
    shutil.copytree(sample_path("h200-parent"), before)
    after = tmp_path / "record"
    shutil.copytree(sample_path("h200-record"), after)
    trace = after / "rank-0.trace.json.gz"
    with gzip.open(trace, "rt") as f:
        data = json.load(f)
    for d in data["deviceProperties"]:
        d["name"] = "NVIDIA H100 80GB HBM3"
    with gzip.open(trace, "wt") as f:
        json.dump(data, f)
    assert main(["diff", str(before), str(after), "--format", "json"]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert sum("different GPU models (before: NVIDIA H200; after: NVIDIA H100 80GB HBM3)" in w
               for w in warnings) == 1


def test_hta_trace_compare_gpu_time_outside_the_steps_is_named(tmp_path, capsys):
    """HTA's trace_compare trace: about 1,686 µs of GPU time outside its profiler steps and 4 µs
    inside (the issue's figures); comparing it per step must say so."""
    import shutil

    src = __import__("pathlib").Path(__file__).parent / "fixtures" / "hta" / "trace_compare_base.json.gz"
    sides = []
    for name in ("before", "after"):
        (tmp_path / name).mkdir()
        shutil.copy(src, tmp_path / name / src.name)
        sides.append(str(tmp_path / name))
    assert main(["diff", *sides, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["basis"] == "per_step"
    found = [w for w in doc["warnings"] if "outside the profiler steps" in w]
    assert len(found) == 2 and all("1.69 ms" in w and "(100%)" in w for w in found)
