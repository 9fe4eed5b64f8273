"""`speedtrace compare-runs`: log parsing, statistics and the CLI.

Fixture logs (tests/fixtures/logs) were written by hand with round numbers; each logs the
training clock at the stage boundaries only. Per run, stage step times (ms) and final result:
  base/a [32, 60, 86, 87] 89.600 s 3.2790   cand/d [30, 58, 84, 85] 86.600 s 3.2760
  base/b [33, 61, 87, 88] 91.100 s 3.2770   cand/e [31, 58, 84, 85] 87.100 s 3.2800
  base/c [31, 59, 85, 86] 88.100 s 3.2780   cand/f [29, 58, 84, 85] 86.100 s 3.2750 (listing on top)
  cand/g_unfinished.txt stops at step 1450: no final validation line.
"""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import shared_path

from speedtrace.analysis.logparse import RunLog, parse_log, parse_log_text, stage_bounds, stage_step_ms
from speedtrace.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "logs"


def run_cli(capsys, *args):
    rc = main(["compare-runs", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def as_json(capsys, *args):
    rc, out, err = run_cli(capsys, *args, "--format", "json")
    assert rc == 0, err
    return json.loads(out), err


def log_text(total, final_ms, loss, progress=()):
    """A minimal log: the step-0 validation line, training lines (step, ms), a final val line."""
    lines = [f"step:0/{total} val_loss:10.8000 train_time:0ms step_avg:0.01ms"]
    lines += [f"step:{s}/{total} train_time:{ms}ms step_avg:{ms / s:.2f}ms" for s, ms in progress]
    if final_ms is not None:
        lines.append(f"step:{total}/{total} val_loss:{loss:.4f} train_time:{final_ms}ms step_avg:1.00ms")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- parsing


def test_listing_at_top_is_not_read():
    run = parse_log(FIXTURES / "cand" / "f.txt")
    assert (run.total_steps, run.final_loss, run.final_time_ms) == (1490, 3.2750, 86100)
    # the listing's example line "step:483/1490 train_time:1ms" must not enter the clock
    assert run.step_ms == {1: 29, 483: 14007, 967: 42079, 1450: 82651, 1490: 86051}


def test_fstring_lines_without_separator_are_not_log_lines():
    listing = (
        '    print0(f"step:{step}/{train_steps} val_loss:{val_loss:.4f} train_time:{t:.0f}ms '
        'step_avg:{t/max(step, 1):.2f}ms")\n'
        '    print0(f"step:{step + 1}/{train_steps} train_time:{t:.0f}ms step_avg:{t/(step + 1):.2f}ms")\n'
        "    # step:20/20 val_loss:9.9999 train_time:5ms step_avg:0.25ms\n"
    )
    run = parse_log_text(listing + log_text(20, 1000, 3.5, [(10, 400), (20, 990)]))
    assert (run.final_loss, run.final_time_ms, run.step_ms) == (3.5, 1000, {10: 400, 20: 990})
    with pytest.raises(Exception, match="no final validation line"):
        parse_log_text(listing)


def test_nothing_before_the_separator_counts():
    # a fully formed final line inside the listing (a docstring, say) must not finish a run
    listing = 'EXAMPLE = """\n' + log_text(20, 5, 1.0) + '"""\n'
    unfinished = log_text(20, None, 0, [(10, 400)])
    with pytest.raises(Exception, match="no final validation line"):
        parse_log_text(listing + "=" * 100 + "\n" + unfinished)
    assert parse_log_text(listing + unfinished).final_time_ms == 5  # the case the separator guards


def test_a_later_run_in_the_same_file_replaces_an_earlier_one():
    text = log_text(20, 1000, 3.5, [(10, 400)]) + log_text(20, 2000, 3.4, [(5, 100)])
    run = parse_log_text(text)
    assert (run.final_loss, run.final_time_ms, run.step_ms) == (3.4, 2000, {5: 100})


def test_nan_final_loss_is_not_a_result():
    with pytest.raises(Exception, match="nan"):
        parse_log_text(log_text(20, 1000, math.nan))


def test_stage_bounds():
    assert stage_bounds(1490) == [(0, 483), (483, 967), (967, 1450), (1450, 1490)]
    # 300 steps: scheduled round(300*1450/1490) = round(291.95) = 292; thirds 97.3, 194.7, 292
    assert stage_bounds(300) == [(0, 97), (97, 195), (195, 292), (292, 300)]


def test_stage_step_times_by_hand():
    run = parse_log(FIXTURES / "base" / "a.txt")
    assert stage_step_ms(run) == pytest.approx([32, 60, 86, 87])
    # sparse clock: the last logged step of stage 1 is 400, of stage 3 is 1400, none in stage 2
    sparse = RunLog(Path("x"), 1490, 3.3, 90000, {100: 3000, 400: 12800, 1400: 80000, 1490: 88000})
    # stage 1: 12800/400; stage 2: no logged step; stage 3 follows an empty stage;
    # extension: (88000 - 80000) / (1490 - 1400)
    assert stage_step_ms(sparse) == pytest.approx([32.0, None, None, 8000 / 90])


# ---------------------------------------------------------------------------- statistics, CLI


def test_fixture_groups(capsys):
    doc, err = as_json(capsys, FIXTURES / "base", FIXTURES / "cand")
    assert doc["schema"] == "speedtrace.runs/1" and doc["target_loss"] == 3.28
    base, cand = doc["groups"]
    assert (base["name"], base["runs"], base["steps"]) == ("base", 3, 1490)
    assert (cand["name"], cand["runs"], cand["steps"]) == ("cand", 3, 1490)

    # the unfinished log is named on stderr and listed as left out
    assert "g_unfinished.txt" in err
    assert [e["file"] for e in cand["left_out"]] == ["g_unfinished.txt"]
    assert [r["file"] for r in cand["logs"]] == ["d.txt", "e.txt", "f.txt"]

    # means and sample deviations worked out by hand (see the module docstring)
    assert base["times_s"] == pytest.approx([89.6, 91.1, 88.1])
    assert base["time_mean_s"] == pytest.approx(89.6)
    assert base["time_std_s"] == pytest.approx(1.5)  # deviations 0, 1.5, -1.5; 4.5 / 2
    assert base["loss_mean"] == pytest.approx(3.278)
    assert base["loss_std"] == pytest.approx(0.001)
    assert (base["time_delta_s"], base["loss_delta"], base["time_p"]) == (0, 0, None)
    assert cand["time_mean_s"] == pytest.approx(86.6)
    assert cand["time_std_s"] == pytest.approx(0.5)
    assert cand["time_delta_s"] == pytest.approx(-3.0)
    assert cand["loss_mean"] == pytest.approx(3.277)
    assert cand["loss_std"] == pytest.approx(math.sqrt(7e-6))  # deviations -1, 3, -2 (1e-3)
    assert cand["loss_delta"] == pytest.approx(-0.001)

    # p-values from the t distribution directly, not through the t-test helpers
    from scipy.stats import t as student

    t_loss = (3.278 - 3.28) / (0.001 / math.sqrt(3))
    assert base["loss_p"] == pytest.approx(student.cdf(t_loss, 2), rel=1e-6)
    va, vb = 0.5**2 / 3, 1.5**2 / 3
    t_time = -3.0 / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    assert cand["time_p"] == pytest.approx(student.cdf(t_time, df), rel=1e-6)

    assert base["stage_step_ms"] == pytest.approx([32, 60, 86, 87])
    assert cand["stage_step_ms"] == pytest.approx([30, 58, 84, 85])
    assert cand["logs"][2]["stage_step_ms"] == pytest.approx([29, 58, 84, 85])
    assert cand["stages"] == [[0, 483], [483, 967], [967, 1450], [1450, 1490]]


def test_welch_against_scipy(capsys):
    from scipy.stats import ttest_ind

    doc, _ = as_json(capsys, FIXTURES / "cand", FIXTURES / "base")
    want = ttest_ind([89.6, 91.1, 88.1], [86.6, 87.1, 86.1], equal_var=False, alternative="less")
    assert doc["groups"][1]["time_p"] == pytest.approx(want.pvalue)
    assert doc["groups"][1]["time_p"] > 0.9  # the slower group is not "faster"


def test_name_glob_arguments_and_target(capsys, monkeypatch):
    monkeypatch.chdir(FIXTURES)
    doc, _ = as_json(capsys, "before=base/*.txt", "after=cand/[de].txt", "--target", "3.27")
    before, after = doc["groups"]
    assert (before["name"], before["runs"], after["name"], after["runs"]) == ("before", 3, "after", 2)
    assert after["left_out"] == []
    from scipy.stats import t as student

    assert doc["target_loss"] == 3.27
    t_loss = (3.278 - 3.27) / (0.001 / math.sqrt(3))
    assert before["loss_p"] == pytest.approx(student.cdf(t_loss, 2), rel=1e-6)


def test_one_run_group_has_no_spread(capsys, tmp_path):
    (tmp_path / "solo").mkdir()
    shutil.copy(FIXTURES / "cand" / "d.txt", tmp_path / "solo")
    doc, _ = as_json(capsys, FIXTURES / "base", tmp_path / "solo")
    solo = doc["groups"][1]
    assert solo["runs"] == 1
    assert (solo["time_std_s"], solo["loss_std"], solo["loss_p"], solo["time_p"]) == (None,) * 4
    assert solo["time_delta_s"] == pytest.approx(86.6 - 89.6)
    rc, out, _ = run_cli(capsys, FIXTURES / "base", tmp_path / "solo")
    row = next(line for line in out.splitlines() if line.startswith("solo"))
    assert row.split()[4:7] == ["n/a", "-3.0000", "n/a"]  # Time σ, Time +/-, Time p


def test_text_and_markdown(capsys):
    rc, out, _ = run_cli(capsys, FIXTURES / "base", FIXTURES / "cand")
    assert rc == 0
    assert out.splitlines()[0].split() == ["Runs", "Steps", "Time", "μ", "Time", "σ", "Time", "+/-",
                                           "Time", "p", "Loss", "μ", "Loss", "σ", "Loss", "+/-", "p"]
    base_row = out.splitlines()[1].split()
    assert base_row[:8] == ["base", "3", "1490", "89.6000", "1.5000", "+0.0000", "n/a", "3.2780"]
    assert "losses = [3.2760, 3.2800, 3.2750]" in out
    assert "times  = [86.6000, 87.1000, 86.1000]" in out
    assert "32.00 [0,483)" in out and "85.00 [1450,1490)" in out
    rc, md, _ = run_cli(capsys, FIXTURES / "base", FIXTURES / "cand", "--format", "md")
    assert rc == 0
    assert "| | Runs | Steps | Time μ | Time σ | Time +/- | Time p | Loss μ | Loss σ | Loss +/- | p |" in md
    assert "| cand | 3 | 1490 | 86.6000 | 0.5000 | -3.0000 |" in md


@pytest.mark.parametrize("case", ["plain file", "missing dir", "empty dir", "glob without match",
                                  "mixed totals", "nothing usable", "duplicate names"])
def test_bad_arguments_exit_2(capsys, tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    base = FIXTURES / "base"
    (tmp_path / "empty").mkdir()
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.txt").write_text(log_text(1490, 90000, 3.27))
    (tmp_path / "mixed" / "b.txt").write_text(log_text(1500, 90500, 3.27))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.txt").write_text(log_text(1490, None, 0))
    (tmp_path / "other" / "base").mkdir(parents=True)
    shutil.copy(base / "a.txt", tmp_path / "other" / "base")
    arg, named = {
        "plain file": (str(base / "a.txt"), "a.txt"),
        "missing dir": ("nowhere", "nowhere"),
        "empty dir": ("empty", "empty"),
        "glob without match": ("x=nothing/*.txt", "nothing/*.txt"),
        "mixed totals": ("mixed", "mixed"),
        "nothing usable": ("broken", "broken"),
        "duplicate names": ("other/base", "base"),
    }[case]
    rc, out, err = run_cli(capsys, base, arg)
    assert rc == 2 and out == ""
    assert named in err.splitlines()[-1] and "Traceback" not in err


def test_scipy_is_not_imported_with_the_module():
    code = ("import sys, speedtrace.analysis.runs, speedtrace.commands.compare_runs; "
            "print('scipy' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


# ---------------------------------------------------------------------------- the record's logs


RECORD = {
    "baseline": dict(runs=4, time=89.7995, time_std=0.0621, dtime=0.0, loss=3.2782, loss_std=0.0016,
                     dloss=0.0, p=0.0601),
    "pr233": dict(runs=4, time=88.8340, time_std=0.0445, dtime=-0.9655, loss=3.2788, loss_std=0.0005,
                  dloss=0.0006, p=0.0097),
}


def check_record(group, want):
    got = dict(runs=group["runs"], time=group["time_mean_s"], time_std=group["time_std_s"],
               dtime=group["time_delta_s"], loss=group["loss_mean"], loss_std=group["loss_std"],
               dloss=group["loss_delta"], p=group["loss_p"])
    assert {k: round(v, 4) for k, v in got.items()} == want
    assert group["steps"] == 1490 and group["left_out"] == []


def test_record_logs_reproduce_the_readme(capsys):
    logs = shared_path("record-233-logs")
    doc, err = as_json(capsys, logs / "baseline", logs / "pr233")
    assert err == ""
    for group in doc["groups"]:
        check_record(group, RECORD[group["name"]])
    assert sorted(doc["groups"][1]["losses"]) == [3.2783, 3.2786, 3.2789, 3.2795]
    # trainer-record-233.md §9: log d395c2 runs about 32.4, 58.7, 85.4 and 85.8 ms per step
    d395c2 = next(r for r in doc["groups"][1]["logs"] if "d395c2" in r["file"])
    assert [round(x, 1) for x in d395c2["stage_step_ms"]] == [32.4, 58.7, 85.4, 85.8]
    assert doc["groups"][1]["time_p"] < 1e-4

    rc, out, _ = run_cli(capsys, logs / "baseline", logs / "pr233")
    assert "88.8340" in out and "-0.9655" in out and "0.0097" in out and "0.0601" in out


def test_record_logs_by_name_glob(capsys, monkeypatch):
    logs = shared_path("record-233-logs")
    monkeypatch.chdir(logs)
    doc, _ = as_json(capsys, "baseline=baseline/*.txt", "pr233=pr233/*_F-inject-*.txt")
    for group in doc["groups"]:
        check_record(group, RECORD[group["name"]])
