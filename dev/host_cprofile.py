"""Where the trainer's host time goes: cProfile over three stage-1 steps after warm-up (GPU machine).

    source dev/gpu_shim.sh
    python -P dev/host_cprofile.py DATA_DIR OUT.txt     # also writes OUT.txt.pstats

Prints five synchronised steps' host time (when train_step returned) beside their step time, then
profiles three more. On Python 3.12 cProfile sees every thread (the autograd engine's too), and a
function's own time includes waits for the GIL, so read call counts and per-call costs of C calls.
"""
import cProfile
import io
import pstats
import sys
import time

import torch

from speedtrace.trainer.config import get_config
from speedtrace.trainer.train import Trainer


def main():
    data, out = sys.argv[1], sys.argv[2]
    cfg = get_config("speedrun")
    torch.empty(1, device="cuda", requires_grad=True).backward()
    trainer = Trainer(cfg, "cuda", data, None, val_every=-1, start_step=10)
    trainer.warmup("stage1")
    step = 10
    for _ in range(5):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.train_step(step)
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        print(f"step {step}: host {1e3 * (t1 - t0):.1f} ms, step {1e3 * (t2 - t0):.1f} ms", flush=True)
        step += 1
    prof = cProfile.Profile()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(3):
        trainer.train_step(step)
        step += 1
    prof.disable()
    torch.cuda.synchronize()
    print(f"3 steps under cProfile: {1e3 * (time.perf_counter() - t0) / 3:.1f} ms per step")
    s = io.StringIO()
    st = pstats.Stats(prof, stream=s)
    st.sort_stats("tottime").print_stats(45)
    st.sort_stats("cumulative").print_stats(60)
    with open(out, "w") as f:
        f.write(s.getvalue())
    prof.dump_stats(out + ".pstats")


if __name__ == "__main__":
    main()
