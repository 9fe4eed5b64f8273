"""Write the notebooks of this folder from the cells below (``python notebooks/make_notebooks.py``).

The notebooks are committed without outputs; this script is their source, so a change to one is
a reviewable diff of Python strings rather than of notebook JSON. Each notebook alternates a
sentence saying why with the cell that does it.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# The first code cell of every notebook ends here: plotly's figures go out as plotly's own JSON
# (JupyterLab, VS Code and nbclient keep it) and as HTML with plotly.js inline for the classic
# notebook (no CDN, so the figures draw offline).
RENDERER = """
pio.renderers.default = "plotly_mimetype+notebook"
pd.set_option("display.max_colwidth", 80)"""

SETUP = """\
import pandas as pd
import plotly.io as pio

import speedtrace.analysis as sa
from speedtrace import samples
from speedtrace.analysis import figures
""" + RENDERER

SETUP_DIFF = """\
import pandas as pd
import plotly.io as pio

import speedtrace.analysis as sa
from speedtrace import samples
from speedtrace.analysis import figures
from speedtrace.analysis.diff import build_diff
""" + RENDERER

SETUP_PROFILE = """\
import tempfile

import pandas as pd
import plotly.io as pio
import torch

import speedtrace.analysis as sa
import speedtrace.profiling as prof
from speedtrace.analysis import figures
""" + RENDERER + """

out_dir = tempfile.mkdtemp(prefix="speedtrace-nb-")"""


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


NB01 = [
    md("""
# A training step, seen whole

This notebook reads the bundled trace of the speedrun trainer (record 233, one H200, five profiled
steps), puts its numbers in DataFrames, and draws the step: where the GPU computed, where it
waited, and why. Everything runs on a CPU from the files inside the package."""),
    md("Plotly figures are shown through plotly's default renderer, set here so that they draw "
       "offline; `speedtrace.analysis` is the API the `speedtrace report` command is built on."),
    code(SETUP),
    md("Load the bundled sample: one columnar table of events per rank (here one rank)."),
    code("""
ts = sa.load(samples.sample_path("h200-record"))
ts.ranks[0].devices, len(ts.ranks[0].events.ts)"""),
    md("The totals of `docs/metrics.md` for each (rank, device): how the traced span splits into "
       "compute, exposed communication, exposed memory traffic and idle time."),
    code("""
totals = sa.totals(ts).to_pandas()
cols = ["rank", "device_id", "span_us", "compute_us", "exposed_comm_us", "exposed_memory_us", "idle_us",
        "kernel_count", "est_sm_efficiency_pct"]
totals[cols]"""),
    md("The same per profiled step: steps should look alike; one that does not is worth a look."),
    code("""
steps = sa.steps(ts).to_pandas()
steps[["step", "step_wall_us", "compute_us", "exposed_memory_us", "idle_us", "kernel_count"]]"""),
    md("As a figure: each step's time split into its four parts."),
    code("figures.breakdown(ts).show()"),
    md("""
The timeline of the first profiled step: one lane per stream, kernels coloured by class, idle
and exposed gaps shaded with their cause in the hover, the phases of the step (data, forward,
backward, optimizer groups) as a band, and the SM usage under the lanes. Zoom with the range
slider; hover a kernel for its launch, grid and occupancy."""),
    code("""
first = int(steps["step"].min())
figures.timeline(ts, steps=(first, first)).show()"""),
    md("Which gaps the GPU sat through, by cause and phase: `host_late` means the CPU had not yet "
       "launched the next kernel; the phase says in which part of the step it happened."),
    code("""
gaps = sa.gaps(ts, min_gap_us=5).to_pandas()
(gaps.groupby(["kind", "cause", "phase"])["dur_us"]
     .agg(count="count", total_us="sum", longest_us="max")
     .sort_values("total_us", ascending=False)
     .head(12))"""),
    md("The gaps over the trace, coloured by cause."),
    code("figures.gaps(ts).show()"),
    md("The kernels that took the time: total time, count and how many blocks each put on an SM."),
    code("""
kernels = sa.kernels(ts).to_pandas()
kernels.sort_values("total_us", ascending=False)[["key", "class", "count", "total_us", "mean_blocks_per_sm"]].head(10)"""),
    md("The same kernels as a chart, with their count and blocks per SM in the hover."),
    code("figures.kernels(ts).show()"),
    md("""
The same report as one offline HTML file, to keep or send:

```bash
speedtrace report --format html -o report.html
speedtrace timeline --steps 62 -o timeline.html
```"""),
]

NB02 = [
    md("""
# Before and after: what PR #233 changed in the step

Two bundled traces of the same trainer on the same H200: `h200-parent` has PR #233's four kernel
changes reverted, `h200-record` has them. This notebook asks what the change did to the step:
which metrics moved beyond the step-to-step noise, which kernels appeared, vanished or were fused,
what happened to the `select_backward` kernels, and how the optimizer phase looks before and after."""),
    md("Setup: plotly's renderer, the analysis API and the diff."),
    code(SETUP_DIFF),
    md("Load both sides and compare them; `build_diff` works per profiled step, so each change "
       "comes with the spread of that metric over the steps."),
    code("""
before = sa.load(samples.sample_path("h200-parent"))
after = sa.load(samples.sample_path("h200-record"))
d = build_diff(before, after)
print(d["verdict"])"""),
    md("Every metric before and after (mean per step), with its change and whether that change is "
       "larger than the noise between steps."),
    code("""
metrics = pd.DataFrame(d["metrics"]).T[["before", "after", "delta", "delta_pct", "spread", "significant"]]
metrics"""),
    md("The same as a figure: each metric before and after, with the per-step noise band; a change "
       "inside the band is not one."),
    code("""
diff_figs = figures.diff_figures(d)   # name -> figure: metrics, kernels, select_backward, gaps
diff_figs["metrics"].show()"""),
    md("The kernel Δµs waterfall: where the time per step went, kernel by kernel; added, removed, "
       "renamed and absorbed (fused) kernels are coloured apart."),
    code('diff_figs["kernels"].show()'),
    md("""
`select_backward` is the gradient of indexing a parameter bank: eager PyTorch gives it dedicated
kernels, Inductor fuses it into neighbours. Dedicated versus fused, before and after:"""),
    code('diff_figs["select_backward"].show()'),
    md("The same numbers per step, from each side's step table:"),
    code("""
def per_step(ts):
    s = sa.steps(ts).to_pandas()
    return s[["select_backward_kernels", "select_backward_us", "select_backward_fused_kernels"]].mean()

pd.DataFrame({"before": per_step(before), "after": per_step(after)})"""),
    md("The kernel changes behind the verdict, largest first (per step); `matched_from` names the "
       "kernel a renamed one replaced, `absorbed` the eager kernels a fused one took in."),
    code("""
kernels = pd.DataFrame(d["kernels"])
changed = kernels[kernels["status"] != "same"].copy()
changed["abs_delta"] = changed["delta_us"].abs()
changed.sort_values("abs_delta", ascending=False)[
    ["key", "status", "before_count", "after_count", "before_us", "after_us", "delta_us", "matched_from"]].head(12)"""),
    md("The optimizer phase: GPU time per optimizer group before and after (the PR changed the "
       "bank updates' kernels)."),
    code("""
def optimizer_phases(ts):
    p = sa.phases(ts).to_pandas()
    p = p[p["phase"].fillna("").str.startswith("optimizer")]
    steps = len(sa.steps(ts))
    return (p.groupby("phase")["gpu_us"].sum() / steps).rename("gpu_us_per_step")

opt = pd.concat({"before": optimizer_phases(before), "after": optimizer_phases(after)}, axis=1).fillna(0)
opt["delta"] = opt["after"] - opt["before"]
opt.sort_values("before", ascending=False)"""),
    md("Side by side as bars, the larger groups first (the small scalar groups take a few µs each)."),
    code("""
import plotly.graph_objects as go

big = opt[opt["before"] > 10].sort_values("before")
fig = go.Figure([go.Bar(y=big.index, x=big[side], name=side, orientation="h") for side in ("before", "after")])
fig.update_layout(barmode="group", title="optimizer phases, GPU µs per step", xaxis_title="µs", height=420)
fig.show()"""),
    md("The two timelines of one step, aligned at the step's start: the optimizer phase is the "
       "band at the end of each step; zoom into it to compare the kernels side by side."),
    code("figures.timeline_pair(before, after).show()"),
    md("""
The same comparison as an offline HTML page:

```bash
speedtrace diff speedtrace/samples/h200-parent speedtrace/samples/h200-record --format html -o diff.html
```"""),
]

NB03 = [
    md("""
# Eight ranks over NCCL: overlap and contention

A real 8×H100 run (modded-nanogpt with NorMuon, four profiled steps per rank; MIT, Keller
Jordan), bundled as the sample `h100x8-normuon`. With several ranks the questions change: does each rank hide its communication
behind compute, does compute leave the SMs NCCL needs, and do ranks wait for one another?"""),
    md("Setup."),
    code(SETUP),
    md("Load all eight ranks (one trace file per rank): a few seconds."),
    code("""
ts = sa.load(samples.sample_path("h100x8-normuon"))
[r.rank for r in ts.ranks]"""),
    md("The breakdown per rank: ranks of one data-parallel job should look alike; one that does "
       "not is where the step is lost."),
    code("""
totals = sa.totals(ts).to_pandas()
totals[["rank", "span_us", "compute_us", "comm_us", "exposed_comm_us", "idle_us", "comp_comm_overlap_pct"]]"""),
    md("As a figure: compute, exposed comm, exposed memory and idle per rank and step."),
    code("figures.breakdown(ts).show()"),
    md("How much of each rank's communication overlaps compute (the rest is exposed: the GPU "
       "waits for the network)."),
    code("figures.overlap(ts).show()"),
    md("""
SM contention: NCCL kernels need SMs of their own. While compute kernels claim every SM
(Σ blocks/SM ≥ 1), communication that runs or is queued is slowed or delayed. Per rank, how long
comm ran on full SMs and how long it queued:"""),
    code("""
totals[["rank", "est_sm_efficiency_pct", "sm_contention_us", "comm_queue_us", "comm_queue_full_sm_us"]]"""),
    md("The timeline of all ranks, one lane per rank and stream, with the SM-usage track under "
       "each rank: the shaded intervals are where comm met full SMs."),
    code("figures.timeline(ts).show()"),
    md("""
Across ranks: each collective waits for the last rank of its group to arrive. speedtrace matches
the collectives of all ranks (by process group and order) and says which rank arrived last and
how long it kept the others waiting; this is the "collectives across ranks" part of the report."""),
    code("""
from speedtrace.analysis.report import build_report

across = build_report(ts)["cross_rank"]
print(across["straggler"])
pd.DataFrame(across["stragglers"]).assign(wait_caused_ms=lambda d: d["wait_caused_us"] / 1000)"""),
    md("How late each rank arrived at the collectives of each step (the sum over the step's "
       "collectives of its start minus the first rank's start): a rank that is late everywhere "
       "is slow on its own; lateness that moves between ranks is noise."),
    code("""
import plotly.graph_objects as go

late = pd.DataFrame(across["lateness"]).pivot(index="rank", columns="step", values="late_total_us") / 1000
go.Figure(go.Heatmap(z=late.values, x=[f"step {s}" for s in late.columns], y=[f"rank {r}" for r in late.index],
                     colorscale="Reds", colorbar_title="ms", hovertemplate="%{y}, %{x}: %{z:.2f} ms late<extra></extra>")
          ).update_layout(title="arrival lateness at the collectives, per rank and step", height=380).show()"""),
    md("""
The same report, with the collectives tables, as one offline page:

```bash
speedtrace report --sample h100x8-normuon --format html -o h100x8.html
```"""),
]

NB04 = [
    md("""
# Profile your own step

`speedtrace.profiling.profile` runs any step function under `torch.profiler` with a schedule that
first times unprofiled steps, so that the trace says how much the profiler itself slowed the step
(its dilation). Here the step is a small MLP on the CPU; on a GPU machine the same cells profile
CUDA kernels and every GPU analysis of the other notebooks applies."""),
    md("Setup: torch for the model, the profiler API, a scratch directory for the trace."),
    code(SETUP_PROFILE),
    md("""
A training step: forward, backward and optimizer, each in a `record_function` range so that the
analysis can say in which phase time went (the bundled trainer uses the same names)."""),
    code("""
torch.manual_seed(0)
device = "cuda" if torch.cuda.is_available() else "cpu"
model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 256)).to(device)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

def step(n: int) -> None:
    x = torch.randn(128, 256, device=device)
    with torch.profiler.record_function("forward"):
        loss = model(x).square().mean()
    with torch.profiler.record_function("backward"):
        loss.backward()
    with torch.profiler.record_function("optimizer"):
        opt.step()
        opt.zero_grad(set_to_none=True)"""),
    md("Warm up first: the first calls of a step pay for memory allocation and kernel selection, "
       "and would make the unprofiled steps look slower than they are."),
    code("""
for n in range(3):
    step(n)"""),
    md("Profile it: 5 unprofiled steps timed first, then 1 wait, 2 warm-up and 4 profiled steps. "
       "The result is a trace set (`rank-0.trace.json.gz` and `run.json`) that every speedtrace "
       "command reads."),
    code("""
run = prof.profile(step, prof.ProfileSettings(out_dir=out_dir, unprofiled=5, active=4),
                   device=device, log=lambda *a: None)
{k: run[k] for k in ("activities", "profiled_steps", "dilation")}"""),
    md("Did the profiler change the step? The step times with and without it, from `run.json`."),
    code("""
import plotly.graph_objects as go

fig = go.Figure([
    go.Box(y=run["unprofiled_step_ms"], name="unprofiled", boxpoints="all"),
    go.Box(y=run["profiled_step_ms"], name="profiled", boxpoints="all"),
])
fig.update_layout(title=f"step time (dilation {run['dilation']})", yaxis_title="ms", height=360)
fig.show()"""),
    md("""
The report of the trace, exactly as `speedtrace report` prints it: the run line with the
dilation, warnings, then per (rank, device) the breakdown, gaps and kernels; a trace without GPU
kernels (this CPU run) gets the host-side step and phase times instead."""),
    code("""
from speedtrace.cli import main as speedtrace

_ = speedtrace(["report", out_dir])   # the exit status, 0"""),
    md("The same analyses as for the bundled samples, from Python. With GPU kernels in the trace "
       "they give the totals and the timeline; without them they are empty, and say so."),
    code("""
ts = sa.load(out_dir)
totals = sa.totals(ts)
if len(totals):
    display(totals.to_pandas())
    figures.timeline(ts, steps=(run["profiled_steps"][0],) * 2).show()
else:
    print("no GPU kernels in this trace: the GPU tables are empty (host-side times below)")"""),
    md("The host side, which every trace has: CPU time per `record_function` phase over the "
       "profiled steps (nested ranges each count their own time)."),
    code("""
from speedtrace.analysis.host import host_report

host = host_report(ts.ranks[0])
phases = pd.DataFrame(host["phases"])
phases["ms_per_step"] = phases["cpu_us"] / 1000 / len(host["steps"])
go.Figure(go.Bar(x=phases["phase"], y=phases["ms_per_step"])).update_layout(
    title="CPU time per phase, per profiled step", yaxis_title="ms", height=340).show()"""),
    md("""
The HTML page of this trace, to keep beside the code that made it:

```bash
speedtrace report OUT_DIR --format html -o mine.html
```"""),
    code("print(out_dir)"),
]

NOTEBOOKS = {
    "01_report_and_timeline.ipynb": NB01,
    "02_before_after_pr233.ipynb": NB02,
    "03_multi_rank_nccl.ipynb": NB03,
    "04_profile_your_step.ipynb": NB04,
}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"}})
        # Fixed cell ids: regenerating a notebook changes only what its cells say.
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"cell-{i:02d}"
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)
        print(HERE / name)


if __name__ == "__main__":
    main()
