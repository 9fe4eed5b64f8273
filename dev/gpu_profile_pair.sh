# On the GPU machine, from the repository root: record and parent variants compiled side by side,
# then profiled one after the other on a quiet host (the record waits until the parent is warmed
# up; record: 50 unprofiled steps, then full mode (CPU+CUDA) and timing mode (CPU+CUDA with
# CUDA-graph micro-batches); parent: the same two). RECORD_CONFIGS / PARENT_CONFIGS override the
# lists (bench_dilation.py --configs). Traces land in $OUT/record and $OUT/parent; the tables are
# printed last.
source dev/gpu_shim.sh
python benchmarks/synth_data_parallel.py /tmp/data --train-shards 24 >/dev/null
rm -f /tmp/record.done /tmp/parent.ready
( timeout ${PAIR_TIMEOUT:-480} python -P benchmarks/bench_dilation.py --data /tmp/data --out $OUT/record \
    --configs ${RECORD_CONFIGS:-cpu+cuda,cpu+cuda+graphs} \
    --wait-for /tmp/parent.ready --done /tmp/record.done > $OUT/record.log 2>&1; touch /tmp/record.done ) &
( timeout ${PAIR_TIMEOUT:-480} python -P benchmarks/bench_dilation.py --data /tmp/data --out $OUT/parent \
    --variant parent --configs ${PARENT_CONFIGS:-cpu+cuda,cpu+cuda+graphs} --unprofiled 10 --ready /tmp/parent.ready --wait-for /tmp/record.done \
    > $OUT/parent.log 2>&1; touch /tmp/parent.ready ) &
wait
for v in record parent; do echo "== $v"; grep -v "USDT\|UserWarning\|_warn_once" $OUT/$v.log | tail -n 5; done
