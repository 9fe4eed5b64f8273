"""The JSON of ``report`` and ``diff`` on the bundled samples, pinned.

The golden files in tests/fixtures/golden were written by the code before the analysis layer was
reorganised around one metrics record and one section model; a refactor must leave every byte
of them as it was. A change that is meant to alter these numbers updates the golden file in the
same commit and says why in its message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speedtrace.cli import main
from speedtrace.samples import sample_path

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
SAMPLES_DIR = sample_path("h200-record").parent

REPORTS = {
    "report-h200-record.json": ["--sample", "h200-record"],
    "report-h200-parent.json": ["--sample", "h200-parent"],
    "report-h200-speedrun.json": ["--sample", "h200-speedrun"],
    "report-nccl-a100.json": ["--sample", "nccl-a100"],
    "report-nccl-a100-top50.json": ["--sample", "nccl-a100", "--top", "50", "--min-gap-us", "1"],
    "report-h200-record-steps.json": ["--sample", "h200-record", "--steps", "63-64", "--top", "50",
                                      "--min-gap-us", "1"],
}
DIFFS = {
    "diff-parent-record.json": ["h200-parent", "h200-record"],
    "diff-record-parent.json": ["h200-record", "h200-parent"],
}


def _normalised(text: str) -> str:
    """The JSON with this checkout's sample directory written as the golden files have it."""
    return text.replace(str(SAMPLES_DIR), "/work/main/speedtrace/samples")


def _run(args, capsys) -> str:
    assert main(args) == 0
    return _normalised(capsys.readouterr().out)


@pytest.mark.parametrize("golden", sorted(REPORTS))
def test_report_json_is_pinned(golden, capsys):
    out = _run(["report", "--format", "json", *REPORTS[golden]], capsys)
    expected = (GOLDEN / golden).read_text()
    assert json.loads(out) == json.loads(expected)
    assert out == expected


@pytest.mark.parametrize("golden", sorted(DIFFS))
def test_diff_json_is_pinned(golden, capsys, monkeypatch):
    # The golden diffs name the sides as relative paths from the repository root.
    monkeypatch.chdir(SAMPLES_DIR.parent.parent)
    before, after = (f"speedtrace/samples/{n}" for n in DIFFS[golden])
    out = _run(["diff", before, after, "--format", "json"], capsys)
    expected = (GOLDEN / golden).read_text()
    assert json.loads(out) == json.loads(expected)
    assert out == expected
