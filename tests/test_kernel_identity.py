"""Kernel identity: name and launch configuration (metrics.md "Kernels")."""

import gzip
import json
from collections import Counter

import numpy as np
import pytest
from synth import Trace

from speedtrace.analysis import kernel_match as km
from speedtrace.analysis.fmt import kernel_name
from speedtrace.analysis.kernels import config_text, display_keys, kernel_table, key_index, split_key
from speedtrace.analysis.load import load, load_rank_file
from speedtrace.analysis.timeline import device_timeline
from speedtrace.samples import sample_path


def test_config_text_and_split():
    assert config_text((2358, 1, 1), (256, 1, 1)) == "<<<2358, 256>>>"
    assert config_text((256, 1, 6), (256, 1, 1)) == "<<<(256, 1, 6), 256>>>"
    assert config_text((48, 288, 1), None) == "<<<(48, 288), ?>>>"
    assert split_key("transpose_kernel<<<2358, 256>>>") == ("transpose_kernel", "<<<2358, 256>>>")
    assert split_key("void f<float>(int)") == ("void f<float>(int)", "")


def test_display_keys_show_the_configuration_only_where_a_name_has_several():
    shown = display_keys(["t<<<1, 2>>>", "t<<<3, 2>>>", "u<<<1, 2>>>", "Memset (Device)"])
    assert shown == {"t<<<1, 2>>>": "t<<<1, 2>>>", "t<<<3, 2>>>": "t<<<3, 2>>>", "u<<<1, 2>>>": "u",
                     "Memset (Device)": "Memset (Device)"}


def test_shortened_names_keep_the_configuration():
    key = "triton_per_fused__to_copy_linalg_vector_norm_transpose<<<55968, 32>>>"
    short = kernel_name(key, 40)
    assert len(short) == 40 and short.endswith("…<<<55968, 32>>>") and short.startswith("triton_per_fused")
    cpp = "void at::native::elementwise_kernel<128, 4>(int, at::native::Loop<float> const&)<<<1024, 128>>>"
    assert kernel_name(cpp, 60) == "at::native::elementwise_kernel<128, 4>(…)<<<1024, 128>>>"
    assert kernel_name("short<<<1, 2>>>", 40) == "short<<<1, 2>>>"
    assert kernel_name("a" * 50, 10) == "a" * 9 + "…"


def test_kernel_table_splits_a_name_by_launch_configuration(tmp_path):
    """transpose_kernel at grid 2358 × block 256 (twice, 10 µs each) and at grid 201216 × block
    128 (once, 50 µs); gemm at one configuration; a memset with none."""
    t = Trace()
    t.step(1, 0, 1000)
    t.launch_kernel("transpose_kernel", 1, 10, 10, grid=2358, block=(256, 1, 1))
    t.launch_kernel("transpose_kernel", 2, 30, 10, grid=2358, block=(256, 1, 1))
    t.launch_kernel("transpose_kernel", 3, 50, 50, grid=201216, block=(128, 1, 1))
    t.launch_kernel("gemm", 4, 110, 5, grid=(4, 8, 1), block=(128, 1, 1))
    t.memset(120, 1, launch_at=5)
    tl = device_timeline(load_rank_file(t.write(tmp_path / "rank-0.trace.json.gz")), 0)
    table = {k["key"]: k for k in kernel_table(tl, np.ones(len(tl.rows), bool))}
    assert set(table) == {"transpose_kernel<<<2358, 256>>>", "transpose_kernel<<<201216, 128>>>", "gemm",
                          "Memset (Device)"}
    small = table["transpose_kernel<<<2358, 256>>>"]
    assert small["count"] == 2 and small["total_us"] == pytest.approx(20)
    assert small["grid"] == [2358, 1, 1] and small["block"] == [256, 1, 1]
    assert table["transpose_kernel<<<201216, 128>>>"]["count"] == 1
    assert table["gemm"]["grid"] == [4, 8, 1]
    assert table["Memset (Device)"]["grid"] is None and table["Memset (Device)"]["block"] is None


def _configs(name):
    """(name, grid, block) counts of the kernels in a sample, from the raw JSON."""
    with gzip.open(sample_path(name) / "rank-0.trace.json.gz") as f:
        events = json.load(f)["traceEvents"]
    return Counter((e["name"], tuple(e["args"]["grid"]), tuple(e["args"]["block"])) for e in events
                   if e.get("ph") == "X" and e.get("cat") == "kernel" and "grid" in e.get("args", {}))


def test_the_transpose_pr_233_added_has_a_key_of_its_own():
    before, after = _configs("h200-parent"), _configs("h200-record")
    added = {c for c in after if c not in before and c[0] == "transpose_kernel"}
    assert added == {("transpose_kernel", (2358, 1, 1), (256, 1, 1))}
    keys = {}
    for name in ("h200-parent", "h200-record"):
        rt = load(str(sample_path(name))).ranks[0]
        tl = device_timeline(rt, 0)
        full, _ = key_index(rt, tl.rows)
        keys[name] = {k for k in full if k.startswith("transpose_kernel")}
    assert keys["h200-record"] - keys["h200-parent"] == {"transpose_kernel<<<2358, 256>>>"}


def test_renamed_pairs_read_the_name_part_and_prefer_one_configuration():
    assert km.fused_kind("triton_poi_fused_add_mul<<<55296, 128>>>") == "poi"
    assert km.fused_ops("triton_poi_fused_add_mul<<<55296, 128>>>") == {"add", "mul"}
    removed = ["triton_poi_fused_add_mul<<<8, 128>>>", "triton_poi_fused_add_mul<<<4, 128>>>"]
    added = ["triton_poi_fused_add_div_mul<<<4, 128>>>", "triton_poi_fused_add_div_mul<<<8, 128>>>"]
    pairs = {(r, a) for r, a, _ in km.pair_renamed(removed, added)}
    assert pairs == {(removed[0], added[1]), (removed[1], added[0])}


def test_diff_of_the_samples_shows_the_added_transpose():
    from speedtrace.analysis.diff import build_diff

    doc = build_diff(load(str(sample_path("h200-parent"))), load(str(sample_path("h200-record"))))
    entry = next(k for k in doc["kernels"] if k["key"] == "transpose_kernel<<<2358, 256>>>")
    assert entry["status"] == "added" and entry["before_count"] == 0
    same = next(k for k in doc["kernels"] if k["key"] == "transpose_kernel<<<201216, 128>>>")
    assert same["before_count"] == same["after_count"]
