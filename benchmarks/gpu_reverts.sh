# On the GPU machine, from the repository root: the record variant and each single --revert,
# compiled side by side (one process each), then profiled one after another (CPU+CUDA, 10
# unprofiled + 2 warm-up + 4 traced steps from step 10), then checked by check_reverts.py.
source benchmarks/gpu_shim.sh
python benchmarks/synth_data_parallel.py /tmp/data --train-shards 24 >/dev/null
prev=""
for v in record transpose-kernels mlp-select tall-polar-express fused-nesterov; do
  rm -f /tmp/$v.done
  if [ "$v" = record ]; then sel=""; else sel="--revert $v"; fi
  timeout ${REVERTS_TIMEOUT:-540} python -P benchmarks/bench_dilation.py --data /tmp/data --out /tmp/rev/$v.run $sel \
    --configs cpu+cuda --unprofiled 10 --active 4 --done /tmp/$v.done ${prev:+--wait-for /tmp/$prev.done} > $OUT/$v.log 2>&1 &
  prev=$v
done
wait
mkdir -p /tmp/rev/check
for v in record transpose-kernels mlp-select tall-polar-express fused-nesterov; do
  ln -sfn /tmp/rev/$v.run/cpu_cuda /tmp/rev/check/$v; grep "dilation\|unprofiled:" $OUT/$v.log | tail -n 2
done
python -P benchmarks/check_reverts.py /tmp/rev/check | tee $OUT/check_reverts.txt
