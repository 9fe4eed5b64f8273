"""keep_last: one derived table kept for the last object it came from (analysis/memo.py)."""

from speedtrace.analysis.memo import keep_last


class Obj:
    def __init__(self, events):
        self.events = events


def test_recomputes_only_for_another_object():
    calls = []

    @keep_last(key=lambda o: o.events)
    def derive(o):
        calls.append(o)
        return len(calls)

    a, b = Obj([1]), Obj([1])          # equal contents, different objects
    assert derive(a) == 1 and derive(a) == 1
    assert derive(Obj(a.events)) == 1  # another holder of the same key object: kept
    assert derive(b) == 2              # another key object, though equal: derived again
    assert derive(a) == 3              # only the last one is kept
    assert len(calls) == 3


def test_a_failed_derivation_is_not_kept():
    state = {"fail": True}

    @keep_last()
    def derive(o):
        if state["fail"]:
            raise ValueError("bad")
        return "ok"

    o = object()
    try:
        derive(o)
    except ValueError:
        pass
    state["fail"] = False
    assert derive(o) == "ok"


def test_public_tables_share_one_computation_per_trace_set(monkeypatch):
    import speedtrace.analysis as sa
    from speedtrace.analysis import metrics
    from speedtrace.samples import sample_path

    built = []
    real = metrics.device_timeline
    monkeypatch.setattr(metrics, "device_timeline", lambda *a, **k: built.append(a[1]) or real(*a, **k))
    ts = sa.load(sample_path("nccl-a100"), echo_warnings=False)
    sa.totals(ts), sa.steps(ts), sa.phases(ts), sa.gaps(ts), sa.kernels(ts)
    assert built == [0]                      # one device, one timeline for all five tables
    sa.gaps(ts, min_gap_us=1.0)              # another threshold is another computation
    assert len(built) == 2
