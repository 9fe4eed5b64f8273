"""`speedtrace diff` on the bundled H200 traces of the trainer: --variant parent before, record after.

The two sample sets were profiled on an H200 with the same steps and mode; the parent reverts the
four kernel changes of PR #233. Expected differences are read from the raw trace JSON here, not
from the analysis code.
"""

import gzip
import json
from collections import Counter

import pytest

import speedtrace.analysis as sa
from speedtrace.analysis.diff import build_diff
from speedtrace.samples import sample_path


def _kernel_names(name):
    with gzip.open(sample_path(name) / "rank-0.trace.json.gz") as f:
        events = json.load(f)["traceEvents"]
    return Counter(e["name"] for e in events if e.get("ph") == "X" and e.get("cat") == "kernel")


@pytest.fixture(scope="module")
def doc():
    return build_diff(sa.load(sample_path("h200-parent")), sa.load(sample_path("h200-record")))


def test_select_backward_time_falls_beyond_noise(doc):
    m = doc["metrics"]["select_backward_us"]
    assert doc["basis"] == "per_step"
    assert m["before"] > 4 * m["after"] > 0 and m["significant"]


def test_mlp_select_backward_kernel_is_removed(doc):
    # mlp-select: the parent's select-based access of the MLP bank costs a dedicated kernel per
    # micro-batch that the record's flattened view does not launch (5 traced steps, 8 each).
    before, after = _kernel_names("h200-parent"), _kernel_names("h200-record")
    name = next(n for n in before if n.startswith("triton_poi_fused_add_select_backward_stack_"))
    assert not any(n.startswith("triton_poi_fused_add_select_backward_stack_") for n in after)
    entry = next(k for k in doc["kernels"] if k["key"] == "triton_poi_fused_add_select_backward_stack")
    assert entry["status"] == "removed" and entry["before_count"] == before[name] / 5


def test_eager_lerp_is_absorbed_into_the_fused_momentum_kernel(doc):
    # fused-nesterov: the parent runs the momentum lerps eagerly (ATen's lerp kernel); the record
    # fuses them into the compiled Polar Express graph.
    assert any("lerp_scalar_kernel" in n for n in _kernel_names("h200-parent"))
    assert not any("lerp_scalar_kernel" in n for n in _kernel_names("h200-record"))
    hosts = [k for k in doc["kernels"] if any("lerp_scalar_kernel" in a for a in k["absorbed"])]
    assert hosts and all("lerp" in k["key"] and k["key"].startswith("triton_") for k in hosts)


def test_parent_tall_path_xxt_kernel_is_removed(doc):
    # tall-polar-express: the parent transposes tall matrices and feeds them to xxt.
    entry = next(k for k in doc["kernels"] if k["key"].endswith("_xxt") and "linalg_vector_norm" in k["key"])
    assert entry["status"] == "removed"
