"""Host time of the training loader's next_batch at the speedrun batch (16,384 tokens a micro-batch).

    python benchmarks/bench_loader.py [--doc-len 24]

Writes one synthetic shard of the Markov source (documents of geometric length, mean --doc-len
content tokens; the GPU runs' shards use 24) to a temporary folder and prints the median over 5
runs of the mean time of 50 consecutive next_batch calls. The loader's host time sits between the
micro-batches, so it counts whenever the host is the critical path (benchmarks/RESULTS.md).
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from speedtrace.trainer.config import speedrun
from speedtrace.trainer.data import MarkovSource, TrainLoader, write_shard


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--doc-len", type=float, default=24.0, help="mean content tokens of a document (24)")
    args = ap.parse_args()
    bos = speedrun().model.bos_id
    with tempfile.TemporaryDirectory() as d:
        shard = Path(d) / "fineweb_train_000001.bin"
        source = MarkovSource(alphabet=256, bos_id=bos, end_prob=1 / args.doc_len, seed=0)
        write_shard(shard, source.generate(8_000_000, np.random.default_rng(1)))
        runs = []
        for _ in range(5):
            loader = TrainLoader([shard], batch_size=8 * 16384, seq_len=2048, micro_batches=8, bos_id=bos)
            for _ in range(3):
                loader.next_batch()
            t0 = time.perf_counter()
            for _ in range(50):
                batch = loader.next_batch()
            runs.append((time.perf_counter() - t0) / 50 * 1e3)
        docs = int((np.diff(batch.cu_seqlens) > 0).sum())
    print(f"next_batch: {statistics.median(runs):.3f} ms (median of 5 runs of 50), {docs} documents a batch")


if __name__ == "__main__":
    main()
