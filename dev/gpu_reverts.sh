# On the GPU machine, from the repository root: each single --revert and the record variant,
# compiled side by side (one process each), then profiled one after another in the order below
# (CPU+CUDA, 10 unprofiled + 2 warm-up + 4 traced steps from step 10), then checked by
# check_reverts.py. The record goes last, on a quiet host; the earlier ones are profiled while the
# later ones still compile, so their step times (not their kernels) are distorted.
source dev/gpu_shim.sh
python benchmarks/synth_data_parallel.py /tmp/data --train-shards 24 >/dev/null
mkdir -p $OUT/logs; rm -f /tmp/*.done
prev=""
for v in transpose-kernels mlp-select tall-polar-express fused-nesterov record; do
  if [ "$v" = record ]; then sel=""; else sel="--revert $v"; fi
  ( timeout ${REVERTS_TIMEOUT:-520} python -P benchmarks/bench_dilation.py --data /tmp/data --out /tmp/rev/$v.run $sel \
      --configs cpu+cuda --unprofiled 10 --active 4 --done /tmp/$v.done ${prev:+--wait-for /tmp/$prev.done} \
      > $OUT/logs/$v.log 2>&1; touch /tmp/$v.done ) &
  prev=$v
done
wait
mkdir -p /tmp/rev/check
for v in record transpose-kernels mlp-select tall-polar-express fused-nesterov; do
  ln -sfn /tmp/rev/$v.run/cpu_cuda /tmp/rev/check/$v
  echo "$v: $(grep -A4 '==== profiler' $OUT/logs/$v.log | tail -n 1)"
  cp /tmp/rev/$v.run/cpu_cuda/rank-0.trace.json.gz $OUT/$v.trace.json.gz   # at most 8 files come back
done
python -P dev/check_reverts.py /tmp/rev/check | tee $OUT/logs/check_reverts.txt
tar czf $OUT/logs.tgz -C $OUT logs && rm -rf $OUT/logs
