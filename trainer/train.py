"""The training loop of record 233 as a reusable ``Trainer``, and the data a run trains on.

One ``Trainer`` owns the model, the optimizer, the schedule and the loaders of one rank:

    trainer = Trainer(get_config("tiny"), "cpu", data_dir, out_dir)
    trainer.warmup("full")        # compile every graph variant, then reset to a fresh start
    summary = trainer.run()       # train and validate, logging in the record's format

``train_step(step)`` is one full step (its micro-batches' forwards and backwards, then the
optimizer), annotated ``data`` / ``forward`` / ``backward`` / ``optimizer`` for torch.profiler; the
profiler wraps single calls of it. Schedule state (windows, YaRN, batch size and sequence
length) follows the step number given, so steps can be taken in any order, as the warm-up does.
The commands ``speedtrace train`` and ``speedtrace profile`` (speedtrace.commands) drive it.
"""

from __future__ import annotations

import copy
import gc
import json
import math
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.profiler import record_function

from speedtrace.errors import SpeedtraceError
from speedtrace.trainer import inductor_launch
from speedtrace.trainer.config import TrainConfig, check_start_step
from speedtrace.trainer.data import TrainLoader, ValLoader, find_shards, synth
from speedtrace.trainer.distributed import Place, check_world_size
from speedtrace.trainer.graphs import CudaCapture, MicroBatchGraphs
from speedtrace.trainer.logs import RunLog, memory_line, train_line, val_line
from speedtrace.trainer.model import GPT
from speedtrace.trainer.optimizer import NorMuonAndAdam
from speedtrace.trainer.schedule import Schedule

RECOMPILE_LIMIT = 64
# The acceptance figure for step time: the median over these steps of a run (counted from its
# first trained step), when the run is long enough; stage 1 for a run from step 0.
SYNC_MEDIAN_STEPS = (10, 60)


class Trainer:
    """Model, optimizer, schedule and data of one rank.

    cfg: the TrainConfig (``cfg.reverts`` selects parent behaviours).
    device: "cpu", "cuda" or a torch.device.
    data_dir: a directory of ``*train_*.bin`` / ``*val_*.bin`` shards.
    out_dir: where ``logs/<uuid>.txt`` goes (rank 0); None for no log file.
    rank, world_size, process_group: this rank's place (world_size 1 needs no group).
    compile: torch.compile the model (default: on CUDA only).
    val_every: validate every N steps and at the end; 0: only at the end; negative: never
        (and the warm-up skips its validation forwards). Default: the config's.
    sync_steps: synchronize around every training step and keep its time (``step_times_ms``).
    start_step: the step training starts at, from fresh weights with that step's schedule state.
    cuda_graphs: replay each micro-batch's forward and backward as CUDA graphs (trainer.graphs);
        CUDA only. The optimizer then zeroes gradients instead of dropping them.
    """

    def __init__(self, cfg: TrainConfig, device="cpu", data_dir=None, out_dir=None, *, rank: int = 0,
                 world_size: int = 1, process_group=None, compile: bool | None = None,
                 val_every: int | None = None, sync_steps: bool = False, start_step: int = 0,
                 seed: int = 0, log: RunLog | None = None, cuda_graphs: bool = False):
        self.cfg = cfg
        self.device = torch.device(device)
        self.rank, self.world_size, self.group = rank, world_size, process_group
        self.grad_accum = check_world_size(world_size, cfg.micro_batches)
        self.grad_scale = 1.0 / self.grad_accum
        self.schedule = Schedule(cfg)
        check_start_step(cfg, start_step)
        self.start_step = start_step
        self.val_every = cfg.val_every if val_every is None else val_every
        self.sync_steps = sync_steps
        self.log = log if log is not None else RunLog(None, enabled=rank == 0, echo=False)
        if data_dir is None:
            raise SpeedtraceError(f"the {cfg.name} config needs --data (a directory of token shards)")
        self.train_files = find_shards(data_dir, "train")
        self.val_files = find_shards(data_dir, "val") if self.val_every >= 0 else []
        if cfg.val_tokens % cfg.val_batch_size:
            raise SpeedtraceError(f"val_tokens {cfg.val_tokens} is not a multiple of val_batch_size {cfg.val_batch_size}")

        torch.manual_seed(seed)
        with torch.device(self.device):
            self.model = GPT.for_training(cfg, world_size=world_size)
        if world_size > 1:
            for p in self.model.parameters():
                dist.broadcast(p.detach(), 0, group=process_group)
        if compile is None:
            compile = self.device.type == "cuda"
        self.compiled = compile
        if compile:
            torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
            inductor_launch.install()
            self.forward = torch.compile(self.model, dynamic=False, fullgraph=True)
            self.eval_forward = torch.compile(self.model.eval_loss, dynamic=False, fullgraph=True)
        else:
            self.forward, self.eval_forward = self.model, self.model.eval_loss
        self.optimizer = NorMuonAndAdam(self.model, cfg, rank=rank, world_size=world_size,
                                        grad_accum=self.grad_accum, process_group=process_group,
                                        compile=compile)
        self._mtp: dict[int, torch.Tensor] = {}
        self.step_times_ms: dict[int, float] = {}
        self.graphs: MicroBatchGraphs | None = None
        self._graph_mtp: dict[int, torch.Tensor] = {}   # static MTP weights per length
        if cuda_graphs:
            self.set_cuda_graphs(True)
        self._restart()

    def set_cuda_graphs(self, on: bool, capture=None) -> None:
        """Turn CUDA-graph replays of the micro-batches on or off (dropping any captured graphs).

        capture: how graphs are recorded; default ``CudaCapture`` on this trainer's device (tests
        pass a stand-in to run the same bookkeeping on the CPU).
        """
        if on and capture is None:
            if self.device.type != "cuda":
                raise SpeedtraceError("CUDA graphs need a CUDA device")
            capture = CudaCapture(self.device)
        if self.graphs is not None:
            self.graphs.clear()
        self.graphs = MicroBatchGraphs(self.model.parameters(), capture) if on else None
        self.optimizer.keep_grads = on

    # -- schedule state ----------------------------------------------------------------------
    def _loader_args(self) -> dict:
        m = self.cfg.model
        return dict(micro_batches=self.cfg.micro_batches, rank=self.rank, world_size=self.world_size,
                    bos_id=m.bos_id, bigram_vocab=m.bigram_vocab, hash_muls=(m.bigram_mul_a, m.bigram_mul_b))

    def _restart(self) -> None:
        """Schedule state and loader of a fresh start at ``start_step`` (weights untouched).

        YaRN updates are applied one after another, as a run from step 0 would have applied
        them, and the embed split is redone if the start lies past the split step.
        """
        s = self.start_step
        self.model.reset_yarn()
        for old, new in self.schedule.yarn_history(s):
            self.model.apply_yarn(old, new)
        self.long_window = self.schedule.windows_blocks(s)[1]
        if s > self.schedule.split_step:
            self.optimizer.split_embed()
        self.loader = TrainLoader(self.train_files, batch_size=self.schedule.batch_size(s),
                                  seq_len=self.schedule.seq_len(s), **self._loader_args())
        self._advance(s)

    def _advance(self, step: int) -> None:
        """Bring windows, YaRN, batch size and sequence length to ``step``'s values."""
        sched, block = self.schedule, self.cfg.block_size
        short, long = sched.windows_blocks(step)
        if long != self.long_window:
            self.model.apply_yarn(self.long_window * block, long * block)
            self.long_window = long
        self.windows = (short * block, long * block)
        batch, seq = sched.batch_size(step), sched.seq_len(step)
        if (batch, seq) != (self.loader.batch_size, self.loader.seq_len):
            self.loader.set_batch(batch, seq)
        self.max_seq_len = seq

    def mtp_weights(self, step: int) -> torch.Tensor:
        if step not in self._mtp:
            self._mtp[step] = torch.tensor(self.schedule.mtp_weights(step), dtype=torch.float32, device=self.device)
        return self._mtp[step]

    # -- one step ----------------------------------------------------------------------------
    def train_step(self, step: int) -> None:
        """One training step: all micro-batches (forward, backward), then the optimizer."""
        self._advance(step)
        mtp = self.mtp_weights(step)
        if self.graphs is not None:
            # Graphs read the weights from one tensor per length; the values change every step.
            if len(mtp) not in self._graph_mtp:
                self._graph_mtp[len(mtp)] = torch.empty_like(mtp)
            mtp = self._graph_mtp[len(mtp)].copy_(mtp)
        for _ in range(self.grad_accum):
            # Named so that a GPU gap waiting on the next batch's copy says where it came from.
            with record_function("data"):
                batch = self.loader.next_batch()
                tensors = batch.to(self.device)
            self.optimizer.sparse_before_forward(batch.bigram_ids, step)
            if self.graphs is not None:
                key = (self.windows, self.max_seq_len, len(mtp), *(tuple(t.shape) for t in tensors))
                self.graphs.micro_batch(key, tensors, self._loss_fn(mtp))
                # The sparse exchange (8 ranks) needs only the host's row ids, not the forward.
                self.optimizer.sparse_after_forward()
                continue
            with record_function("forward"):
                loss = self._loss_fn(mtp)(*tensors)
            self.optimizer.sparse_after_forward()
            with record_function("backward"):
                loss.backward()
            del loss
        with record_function("optimizer"):
            self.optimizer.step(step, self.schedule.lr_factor(step), self.schedule.momentum(step))
        if step == self.schedule.split_step:
            self.optimizer.split_embed()

    def _loss_fn(self, mtp: torch.Tensor):
        windows, max_seq_len, scale = self.windows, self.max_seq_len, self.grad_scale

        def loss(inputs, targets, cu_seqlens, bigram_ids):
            return self.forward(inputs, targets, cu_seqlens, bigram_ids, windows, max_seq_len, mtp, scale)

        return loss

    def _val_windows(self, step: int) -> tuple[int, int]:
        self._advance(step)
        # The final validation widens the long window without another YaRN update.
        return self.schedule.final_windows_tokens() if step == self.schedule.total_steps else self.windows

    def _val_loader(self) -> ValLoader:
        return ValLoader(self.val_files, batch_size=self.cfg.val_batch_size, **self._loader_args())

    @torch.no_grad()
    def validate(self, step: int) -> float:
        """Mean validation loss over ``cfg.val_tokens`` tokens, averaged over ranks."""
        if not self.val_files:
            raise SpeedtraceError("validation is off (val_every < 0)")
        windows = self._val_windows(step)
        loader = self._val_loader()
        micro_steps = self.grad_accum * self.cfg.val_tokens // self.cfg.val_batch_size
        total = torch.zeros((), dtype=torch.float32, device=self.device)
        for _ in range(micro_steps):
            inputs, targets, cu_seqlens, bigram_ids = loader.next_batch().to(self.device)
            total += self.eval_forward(inputs, targets, cu_seqlens, bigram_ids, windows, loader.per_rank_tokens)
        total /= micro_steps
        if self.world_size > 1:
            dist.all_reduce(total, group=self.group)   # SUM then divide: gloo has no AVG
            total /= self.world_size
        return float(total)

    # -- warm-up and reset -------------------------------------------------------------------
    def warmup(self, mode: str = "full") -> list[int]:
        """Run the record's compile warm-up steps, then restore a fresh start; returns the steps.

        Each warm-up step does one validation forward (unless validation is off), a training
        step and an optimizer step, so every graph and shape variant is compiled before the
        clock starts. Afterwards weights, optimizer state, schedule state and the train loader
        are those of a fresh start.
        """
        steps = self.schedule.warmup_steps(mode, self.start_step)
        if not steps:
            return steps
        # The record's own log lines, kept word for word so that one parser reads both logs.
        self.log("Compiling model and warming up kernels (~7 minutes on first execution)")
        self.log(f"Sampling steps {steps} for warmup")
        initial = copy.deepcopy(self.model.state_dict())
        val_loader = self._val_loader() if self.val_files else None
        for step in steps:
            if val_loader is not None:
                windows = self._val_windows(step)
                with torch.no_grad():
                    inputs, targets, cu_seqlens, bigram_ids = val_loader.next_batch().to(self.device)
                    self.eval_forward(inputs, targets, cu_seqlens, bigram_ids, windows, val_loader.per_rank_tokens)
            self.train_step(step)
        self.log("Resetting Model")
        self.reset(initial)
        del initial, val_loader
        gc.collect()
        return steps

    def reset(self, weights: dict) -> None:
        """A fresh start at ``start_step`` from ``weights`` (a state_dict): optimizer state zeroed,
        gradients dropped (zeroed in place while graphs are on), schedule state and train loader
        of that step."""
        # Captured graphs accumulate into the existing gradients: zero them, keep the tensors.
        self.model.zero_grad(set_to_none=self.graphs is None)
        self.model.load_state_dict(weights)
        self.optimizer.reset()
        self._restart()

    # -- the loop ----------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, steps: int | None = None) -> dict:
        """Train from ``start_step`` for ``steps`` steps (default: to the end of the schedule).

        Validates every ``val_every`` steps and after the last step. Returns the summary (also
        logged as one JSON line): final validation loss, train time, the median synchronized step
        time (with ``sync_steps``), peak memory.
        """
        total = self.schedule.total_steps
        start = self.start_step
        end = total if steps is None else min(total, start + steps)
        cuda = self.device.type == "cuda"
        if cuda:
            peak_before = (torch.cuda.max_memory_allocated(self.device), torch.cuda.max_memory_reserved(self.device))
            torch.cuda.reset_peak_memory_stats(self.device)
        val_loss, train_peak = None, None
        train_ms = 0.0
        self._sync()
        t0 = time.perf_counter()
        for step in range(start, end + 1):
            last = step == end
            if last and cuda:
                train_peak = torch.cuda.max_memory_allocated(self.device)
            if self.val_every >= 0 and (last or (self.val_every > 0 and step % self.val_every == 0)):
                self._sync()
                train_ms += 1000 * (time.perf_counter() - t0)
                val_loss = self.validate(step)
                self.log(val_line(step, total, val_loss, train_ms, step - start))
                self._sync()
                t0 = time.perf_counter()
            if last:
                break
            if self.sync_steps:
                self._sync()
                t_step = time.perf_counter()
            self.train_step(step)
            if self.sync_steps:
                self._sync()
                self.step_times_ms[step] = 1000 * (time.perf_counter() - t_step)
            approx_ms = train_ms + 1000 * (time.perf_counter() - t0)
            self.log(train_line(step, total, approx_ms, step + 1 - start))
        if self.val_every < 0:   # no final validation stopped the clock
            self._sync()
            train_ms += 1000 * (time.perf_counter() - t0)
        summary = dict(config=self.cfg.name, device=self.device.type, world_size=self.world_size,
                       reverts=sorted(self.cfg.reverts), start_step=start, end_step=end,
                       final_val_loss=val_loss, train_time_ms=round(train_ms, 3))
        summary.update(self._step_time_summary(start, end))
        if cuda:
            alloc = max(peak_before[0], torch.cuda.max_memory_allocated(self.device))
            reserved = max(peak_before[1], torch.cuda.max_memory_reserved(self.device))
            summary.update(peak_allocated_mib=alloc // 2**20, peak_reserved_mib=reserved // 2**20,
                           peak_allocated_train_mib=(train_peak or 0) // 2**20)
            self.log(memory_line(alloc, reserved))
        self.log(json.dumps(summary))
        return summary

    def _step_time_summary(self, start: int, end: int) -> dict:
        if not self.step_times_ms:
            return dict(sync_step_ms_median=None)
        lo, hi = start + SYNC_MEDIAN_STEPS[0], min(end - 1, start + SYNC_MEDIAN_STEPS[1])
        if hi < lo:
            lo, hi = start, end - 1
        times = [self.step_times_ms[s] for s in range(lo, hi + 1) if s in self.step_times_ms]
        return dict(sync_step_ms_median=round(statistics.median(times), 3), sync_steps=[lo, hi])


# -- data for a run ------------------------------------------------------------------------------
def tiny_data(cfg: TrainConfig, directory: Path) -> Path:
    """Synthetic shards for ``cfg`` in ``directory`` (made once, reused while their facts match)."""
    sched = Schedule(cfg)
    # Enough for the whole schedule with a margin for the pieces the aligned loader drops.
    needed = sum(sched.batch_size(s) for s in range(sched.total_steps))
    shard = 131_072
    want = dict(alphabet=256, bos_id=cfg.model.bos_id, seed=0, train_tokens=math.ceil(1.5 * needed / shard) * shard,
                val_tokens=cfg.val_tokens + cfg.val_batch_size, shard_tokens=shard)
    facts_path = directory / "synth.json"
    if facts_path.exists():
        try:
            facts = json.loads(facts_path.read_text())
            if all(facts.get(k) == v for k, v in want.items()):
                return directory
        except (OSError, ValueError):
            pass
    facts = synth(directory, **want)
    print(f"wrote synthetic data to {directory}: entropy rate {facts['entropy_rate']:.4f}, "
          f"unigram entropy {facts['unigram_entropy']:.4f} nats/token", flush=True)
    return directory


def resolve_data(cfg: TrainConfig, data, out: Path, place: Place) -> Path:
    """The shard directory to train on: ``data``, or for the tiny config synthetic shards that
    rank 0 writes to ``out/tiny-data`` (the other ranks wait for them)."""
    if data is not None:
        return Path(data)
    if cfg.name != "tiny":
        raise SpeedtraceError(f"the {cfg.name} config needs --data DIR (fineweb_train_*.bin and "
                              "fineweb_val_*.bin shards, or `speedtrace data synth DIR`)")
    data = out / "tiny-data"
    if place.is_main:
        tiny_data(cfg, data)
    if place.group is not None:
        dist.barrier()
    return data
