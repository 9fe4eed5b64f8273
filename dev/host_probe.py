"""A yardstick for the host's own speed, run beside a benchmark on the GPU machine.

Every 50 ms it times 200,000 random reads over a 1 GiB array (memory latency, which the launch path
of a compiled step depends on) and appends ``unix_time memory_ms`` to FILE, until it is killed. It
pins itself to the last CPU. When this process slows down at the same time as the benchmark's
steps, the machine, not the benchmark, got slower (dev/LOG.md, "Sixth session").

    python dev/host_probe.py FILE &
    python -P benchmarks/bench_dilation.py ... --host-stats --probe-log FILE
"""

import os
import sys
import time

import numpy as np


def main(path: str) -> None:
    os.sched_setaffinity(0, {os.cpu_count() - 1})
    data = np.ones(1 << 27, dtype=np.int64)
    index = np.random.default_rng(0).integers(0, data.size, 200_000)
    with open(path, "w", buffering=1) as out:
        while True:
            t0 = time.perf_counter()
            data[index].sum()
            out.write(f"{time.time():.3f} {(time.perf_counter() - t0) * 1e3:.3f}\n")
            time.sleep(0.05)


if __name__ == "__main__":
    main(sys.argv[1])
