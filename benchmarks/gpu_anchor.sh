# On the GPU machine, from the repository root: both anchors in one call.
#   ANCHOR=DIR PARENT_ANCHOR=DIR bash benchmarks/gpu_anchor.sh
# DIR: modded-nanogpt checkouts at 20dd1582 (the record) and 699e93c8 (its parent); see the
# --help of benchmarks/anchor_trainer.py for the commands that fetch them.
# The three trainers (ours, the original record, the original parent) compile side by side while
# the kernel harness compiles; then, the trainers idle, the kernels are checked and timed; then
# each trainer in turn times and profiles its stage-1 steps; the diffs and tables come last.
# Shards: web-text-like document lengths (speedtrace data synth's default, lognormal mean 650).
set -o pipefail
# The checkout installed in place (README "Running from a checkout"), plus wheels carried in .whl/
# (msgspec, where the image lacks it).
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 2
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps .whl/*.whl || exit 2
fi
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
work=${WORK:-/tmp/anchor-run}
rm -rf "$work" && mkdir -p "$work"
python -P benchmarks/synth_data_parallel.py "$work/data" --train-shards ${SHARDS:-24} --val-shards 0 \
  > "$work/data.json"
( timeout ${TRAINER_TIMEOUT:-560} python -P benchmarks/anchor_trainer.py --anchor "$ANCHOR" \
    ${PARENT_ANCHOR:+--parent-anchor "$PARENT_ANCHOR"} --data "$work/data" --out "$work/trainer" \
    --ready "$work/trainers.ready" --wait-for "$work/kernels.done" --timeout ${ORCH_TIMEOUT:-540} \
    > "$work/trainer.log" 2>&1; touch "$work/trainers.ready" ) &
timeout ${KERNEL_TIMEOUT:-540} python -P benchmarks/anchor_kernels.py --anchor "$ANCHOR" ${KERNEL_ARGS:---variants} \
  --json "$work/kernels.json" --wait-for "$work/trainers.ready" --done "$work/kernels.done" > "$work/kernels.log" 2>&1
touch "$work/kernels.done"
wait
if [ -n "$OUT" ]; then
  { nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv; cat "$work/data.json";
    for s in ours record parent; do echo "==== $s.log (tail)"; tail -n 40 "$work/trainer/$s.log" 2>/dev/null; done
  } > "$OUT/env_and_sides.log"
  cp "$work/kernels.log" "$work/trainer.log" "$OUT/" 2>/dev/null
  cp "$work/kernels.json" "$work/trainer/anchor_trainer.json" "$work/trainer"/diff_*.md "$OUT/" 2>/dev/null
fi
echo "==== kernels"; grep -v "Warning\|warn(" "$work/kernels.log" | tail -n 60
echo "==== trainers"; tail -n 14 "$work/trainer.log"
