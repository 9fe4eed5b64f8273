# On the GPU machine, from the repository root: the speedrun config's acceptance run.
# 200 steps of stage 1 on synthetic shards, validation at steps 0 and 200, step times between
# torch.cuda.synchronize() calls (the summary JSON line gives their median over steps 10-60).
source dev/gpu_shim.sh
set -o pipefail
python benchmarks/synth_data_parallel.py /tmp/data --train-shards 40 --val-shards 1 >/dev/null
timeout ${TRAIN_TIMEOUT:-480} python -P -m speedtrace train --config speedrun --data /tmp/data --steps ${STEPS:-200} \
  --warmup stage1 --val-every ${VAL_EVERY:-200} --sync-steps --out $OUT/train ${TRAIN_ARGS:-} 2>&1 | tee $OUT/train.log | grep -v "^step:[0-9]*/1490 train_time" | tail -n 25
grep "^step:" $OUT/train.log | sed -n '1p;10p;60p;200p'
ls -la $OUT
