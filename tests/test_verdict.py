"""profiling.verdict: the modes' dilation targets and whether the host set the steps' length."""

import pytest

from speedtrace.profiling.verdict import dilation_note, host_bound, host_times, steal_text


@pytest.mark.parametrize("host, step, expected", [
    ([95.0, 1.0, 99.0], [100.0, 100.0, 100.0], True),    # median host 95.0 = 0.95 x 100
    ([94.9, 94.9], [100.0, 100.0], False),
    ([200.0, 199.0, 10.0], [200.0, 201.0, 199.0], True),  # medians 199 and 200
    ([], [100.0], None),
    ([90.0], [], None),
])
def test_host_bound_compares_medians(host, step, expected):
    assert host_bound(host, step) is expected


def _run(mode="full", dilation=1.10, unprofiled=False, profiled=True, graphs=False):
    # Step medians 220.0 (unprofiled) and 242.0 (profiled); host medians 190.0 and 240.0.
    return {"mode": mode, "dilation": dilation, "cuda_graphs": graphs,
            "unprofiled_step_ms": [219.0, 220.0, 221.0], "unprofiled_host_ms": [189.0, 190.0, 250.0],
            "profiled_step_ms": [242.0, 241.0, 243.0], "profiled_host_ms": [240.0, 239.0, 241.0],
            "host_bound": {"unprofiled": unprofiled, "profiled": profiled}}


def test_host_times_reads_the_medians():
    assert host_times(_run(), "profiled") == "the step function returned 240.0 ms into each 242.0 ms profiled step"
    assert host_times(_run(), "unprofiled") == "the step function returned 190.0 ms into each 220.0 ms unprofiled step"
    # A run.json whose verdict came without its times is named, not a traceback.
    assert host_times({"profiled_step_ms": [1.0]}, "profiled") == "run.json has no profiled host and step times"


@pytest.mark.parametrize("run", [
    _run(dilation=1.05),                       # full mode's target is 1.05: not above it
    _run(mode="timing", dilation=1.03),
    _run(mode="other"),                        # no target for an unknown mode
    _run(dilation=None),
    _run(profiled=None, unprofiled=None),      # a CPU run: no host verdict
])
def test_no_note_within_target_or_without_a_verdict(run):
    assert dilation_note(run) is None


def test_note_when_the_profiled_steps_were_host_bound():
    note = dilation_note(_run())
    assert note.startswith("dilation 1.100 is above full mode's target 1.05: the profiled steps were host-bound")
    assert "returned 240.0 ms into each 242.0 ms profiled step" in note
    assert "returned 190.0 ms into each 220.0 ms unprofiled step" in note
    assert "CUDA graphs" in note
    # A graphed step is told nothing about graphs.
    assert "CUDA graphs" not in dilation_note(_run(mode="timing", dilation=1.04, graphs=True))


def test_note_when_even_the_unprofiled_steps_were_host_bound():
    note = dilation_note(_run(unprofiled=True))
    assert "even the unprofiled steps were host-bound" in note and "190.0 ms into each 220.0 ms" in note
    assert "run again" in note


def test_note_when_the_host_was_not_the_critical_path():
    note = dilation_note(_run(mode="timing", dilation=1.031, profiled=False))
    assert note.startswith("dilation 1.031 is above timing mode's target 1.03; the host was not the critical path")


def test_steal_time_is_named_when_the_hypervisor_took_cpu():
    assert steal_text(_run()) == ""                                          # no steal_ms at all
    assert steal_text({**_run(), "steal_ms": {"unprofiled": 0.0, "profiled": 0.0}}) == ""
    run = {**_run(), "steal_ms": {"unprofiled": 10.0, "profiled": 70.0}}
    assert steal_text(run) == ("steal time (CPU the hypervisor took from this machine): 10 ms during the "
                               "unprofiled steps, 70 ms during the profiled ones")
    assert dilation_note(run).startswith("dilation 1.100 is above full mode's target 1.05 (steal time")
    assert "?" in steal_text({**_run(), "steal_ms": {"unprofiled": None, "profiled": 30.0}})


def test_cpu_steal_is_read_from_proc_stat(tmp_path):
    import os

    from speedtrace.profiling.runmeta import cpu_steal_ms

    stat = tmp_path / "stat"
    # cpu user nice system idle iowait irq softirq steal ...
    stat.write_text("cpu  100 0 50 900 7 0 2 25 0 0\ncpu0 1 2 3\n")
    assert cpu_steal_ms(str(stat)) == 25 * 1000 / os.sysconf("SC_CLK_TCK")
    stat.write_text("cpu  100 0 50\n")             # a kernel without the column
    assert cpu_steal_ms(str(stat)) is None
    assert cpu_steal_ms(str(tmp_path / "missing")) is None
