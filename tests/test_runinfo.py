"""run.json has one schema (profiling/runinfo.py): written by capture, read by analysis."""

from __future__ import annotations

import json

import pytest

from speedtrace.analysis.load import load
from speedtrace.cli import main
from speedtrace.profiling import runinfo
from speedtrace.samples import sample_path


def test_every_bundled_run_json_reads_without_a_warning():
    for name in ("h200-record", "h200-parent", "h200-speedrun"):
        data = (sample_path(name) / "run.json").read_bytes()
        info, warnings = runinfo.read(data, name)
        assert warnings == [] and info.schema == runinfo.SCHEMA
    info, _ = runinfo.read((sample_path("h200-record") / "run.json").read_bytes(), "x")
    assert info.config == "speedrun" and info.variant == "record" and info.world_size == 1


def test_top_level_names_are_kept_when_written():
    info = runinfo.RunInfo(schema=runinfo.SCHEMA, config="tiny", variant="parent", world_size=2, mode="full",
                           host_bound=runinfo.HostBound(profiled=True))
    out = runinfo.to_dict(info)
    assert out == {"schema": runinfo.SCHEMA, "config": "tiny", "variant": "parent", "mode": "full",
                   "world_size": 2, "host_bound": {"unprofiled": None, "profiled": True}}


def test_unknown_and_mistyped_fields_warn_and_are_dropped():
    raw = {"schema": runinfo.SCHEMA, "dilation": "1.2", "world_size": 2, "frobnicate": 1, "zeta": []}
    info, warnings = runinfo.from_dict(raw, "run.json")
    assert info.dilation is None and info.world_size == 2
    assert len(warnings) == 2
    assert "unknown fields ignored (frobnicate, zeta)" in warnings[0]
    assert "wrong type ignored (dilation)" in warnings[1]


def test_an_old_run_json_without_newer_fields_reads(tmp_path, capsys):
    src = sample_path("h200-record")
    (tmp_path / "rank-0.trace.json.gz").write_bytes((src / "rank-0.trace.json.gz").read_bytes())
    # Only the fields of the first run.json format; every later one is missing.
    (tmp_path / "run.json").write_text(json.dumps({"schema": runinfo.SCHEMA, "profiled_step_ms": [2.0, 4.0],
                                                   "unprofiled_step_ms": [2.0, 2.0]}))
    ts = load(tmp_path)
    assert ts.warnings == [] and ts.run.mode is None
    assert main(["report", str(tmp_path), "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    # dilation is worked out from the medians when run.json lacks it: 3.0 / 2.0
    assert rep["run"]["dilation"] == pytest.approx(1.5)
    assert rep["run"]["host_bound"] == {"unprofiled": None, "profiled": None}


def test_a_broken_run_json_is_a_warning_in_the_report(tmp_path, capsys):
    src = sample_path("h200-record")
    (tmp_path / "rank-0.trace.json.gz").write_bytes((src / "rank-0.trace.json.gz").read_bytes())
    (tmp_path / "run.json").write_text(json.dumps({"schema": runinfo.SCHEMA, "world_size": "eight",
                                                   "mode": "full", "extra": 1}))
    assert main(["report", str(tmp_path), "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    found = [w for w in rep["warnings"] if "run.json" in w]
    assert len(found) == 2 and rep["run"]["mode"] == "full"


def test_profile_settings_metadata_outside_the_schema_goes_under_metadata():
    info, warnings = runinfo.from_dict({"config": "mine", "metadata": {"lr": 0.1}})
    assert warnings == [] and info.config == "mine" and info.metadata == {"lr": 0.1}
