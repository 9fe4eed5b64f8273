# On the GPU machine, from the repository root: record and parent variants compiled side by side,
# then profiled one after the other (record: 50 unprofiled steps, CPU+CUDA and CUDA-only; parent:
# CPU+CUDA). Traces land in $OUT/record and $OUT/parent.
source benchmarks/gpu_shim.sh
python benchmarks/synth_data_parallel.py /tmp/data --train-shards 24 >/dev/null
rm -f /tmp/record.done
timeout ${PAIR_TIMEOUT:-520} python -P benchmarks/bench_dilation.py --data /tmp/data --out $OUT/record \
  --done /tmp/record.done > $OUT/record.log 2>&1 &
timeout ${PAIR_TIMEOUT:-520} python -P benchmarks/bench_dilation.py --data /tmp/data --out $OUT/parent \
  --variant parent --configs cpu+cuda --unprofiled 10 --wait-for /tmp/record.done > $OUT/parent.log 2>&1 &
wait
for v in record parent; do echo "== $v"; grep -v "USDT\|UserWarning\|_warn_once" $OUT/$v.log | tail -n 12; done
