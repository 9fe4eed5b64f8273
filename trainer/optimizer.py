"""NorMuonAndAdam: the record's single optimizer object with an explicit communication schedule.

One ``step`` runs three phases over the model's fifteen labelled parameters:

1. scatter, in ``SCATTER_ORDER``: launch each gradient's collective (all_reduce for replicated
   parameters, reduce_scatter for sharded ones, an all_to_all of touched rows for the sparse
   bigram table);
2. work, in ``WORK_ORDER``: wait for that collective, update the local slice (Adam or NorMuon),
   launch the all_gather of sharded slices;
3. wait for lm_head's gather, refresh the tied embed from it, wait for the rest, drop the grads
   (or zero them in place, for CUDA-graph replays: ``keep_grads``).

Adam parameters move only on odd steps; their gradients of the even step are kept, so each Adam
update sees two steps' gradients. NorMuon (the two weight banks) moves every step. Learning rate,
weight decay and momentum reach the compiled functions as 0-D CPU fp32 tensors so that the
schedule never triggers a recompile. The contract: docs/trainer.md, "The optimizer".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.profiler import record_function

from speedtrace.kernels import polar_express, transpose_add, transpose_copy
from speedtrace.trainer.comms import Comms, Pending
from speedtrace.trainer.config import TrainConfig


@dataclass(frozen=True)
class ParamSpec:
    optim: str                                # "adam" | "normuon"
    comms: str                                # "repl" | "sharded" | "sharded_sparse"
    betas: tuple[float, float] | None = None  # Adam only
    lr_mul: float = 1.0
    wd_mul: float = 1.0


def _adam(comms, b1, b2, lr_mul=1.0, wd_mul=1.0):
    return ParamSpec("adam", comms, (b1, b2), lr_mul, wd_mul)


# docs/trainer.md, "Parameters and their treatment". The insertion order is the scatter order: the
# banks' big reductions start first.
PARAM_TABLE: dict[str, ParamSpec] = {
    "attn_bank": ParamSpec("normuon", "sharded"),
    "mlp_bank": ParamSpec("normuon", "sharded"),
    "scalars": _adam("repl", 0.9, 0.99, lr_mul=5.0, wd_mul=0.0),
    "smear_gate": _adam("repl", 0.9, 0.99, lr_mul=0.01, wd_mul=0.0),
    "skip_gate": _adam("repl", 0.9, 0.99, lr_mul=0.05, wd_mul=0.0),
    "attn_gate_bank": _adam("repl", 0.9, 0.99),
    "ve_gate_bank": _adam("repl", 0.9, 0.99),
    "lm_head": _adam("sharded", 0.5, 0.95, wd_mul=150.0),
    "bigram_embed": _adam("sharded_sparse", 0.75, 0.95, lr_mul=75.0, wd_mul=5.0),
    "post_lambdas": _adam("repl", 0.9, 0.95, wd_mul=0.0),
    "x0_lambdas": _adam("repl", 0.9, 0.95, wd_mul=0.0),
    "bigram_lambdas": _adam("repl", 0.9, 0.95, wd_mul=0.0),
    "resid_lambdas": _adam("repl", 0.9, 0.95, lr_mul=5.0, wd_mul=0.0),
    "value_embeds": _adam("sharded", 0.75, 0.95, lr_mul=75.0, wd_mul=5.0),
    "embed": _adam("sharded", 0.5, 0.95, wd_mul=150.0),
}
SCATTER_ORDER: tuple[str, ...] = tuple(PARAM_TABLE)
# Small replicated tensors first while the big reductions are in flight; lm_head before embed
# (the tied embed is copied from it); the Polar Express banks last to overlap the most.
WORK_ORDER: tuple[str, ...] = (
    "scalars", "smear_gate", "skip_gate", "attn_gate_bank", "ve_gate_bank",
    "post_lambdas", "x0_lambdas", "bigram_lambdas", "resid_lambdas",
    "value_embeds", "bigram_embed",
    "lm_head", "embed",
    "attn_bank", "mlp_bank",
)
# Sparse bigram gradients only pay off with one micro-batch on each of 8 ranks (docs/trainer.md,
# "Sparse bigram gradients").
SPARSE_WORLD_SIZE = 8


def label_of(name: str) -> str:
    """A parameter's label: its name without a compile wrapper prefix and without ".weight"."""
    return name.removeprefix("_orig_mod.").removesuffix(".weight")


def sharding_view(label: str, shape) -> tuple[int, ...]:
    """The (matrices, rows, cols) view NorMuon orthogonalises and shards a bank in.

    attn_bank (layers, 4·d, d) holds square Q/K/V/O blocks: (4·layers, d, d) = (40, 768, 768).
    mlp_bank (layers, 2, hidden, d) holds c_fc, c_proj alternately: (2·layers, hidden, d) =
    (24, 3072, 768), so an odd matrix index is a c_proj.
    """
    shape = tuple(shape)
    if label == "attn_bank":
        d = shape[-1]
        return (math.prod(shape) // (d * d), d, d)
    if label == "mlp_bank":
        return (math.prod(shape[:-2]), shape[-2], shape[-1])
    raise ValueError(f"{label} is not a NorMuon bank")


def effective_comms(spec: ParamSpec, world_size: int, grad_accum: int) -> str:
    """The comms mode a parameter really uses: "none" alone, "sparse" only where it pays."""
    if world_size == 1:
        return "none"
    if spec.comms == "sharded_sparse" and not (world_size == SPARSE_WORLD_SIZE and grad_accum == 1):
        return "sharded"
    return spec.comms


def _labelled(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    found = {}
    for name, p in model.named_parameters():
        label = label_of(name)
        if label not in PARAM_TABLE:
            raise ValueError(f"parameter {name!r} has no entry in the optimizer's table "
                             f"(labels: {', '.join(PARAM_TABLE)})")
        if label in found:
            raise ValueError(f"two parameters share the label {label!r}")
        found[label] = p
    return [(label, found[label]) for label in SCATTER_ORDER if label in found]


def param_rows(model: nn.Module, *, world_size: int = 1, grad_accum: int = 8) -> list[dict]:
    """One row per parameter (scatter order) for ``--dry-run``: label, shape, count, optim, comms."""
    return [
        dict(label=label, shape=tuple(p.shape), count=p.numel(), optim=PARAM_TABLE[label].optim,
             comms=effective_comms(PARAM_TABLE[label], world_size, grad_accum))
        for label, p in _labelled(model)
    ]


# ---------------------------------------------------------------------------------------------
# The element-wise math, compiled fullgraph on CUDA. Scalars that change every step come in as
# 0-D CPU fp32 tensors; betas and eps are per-parameter constants.


def adam_update_(p, g, exp_avg, exp_avg_sq, beta1: float, beta2: float, eps: float, step_size, decay):
    """Adam with cautious weight decay, in place on the slice ``p``.

    step_size = lr·√(1−β2ᵗ)/(1−β1ᵗ); decay = lr²·wd·wd_mul (the decay scales with lr squared).
    Decay applies only where the update and the weight agree in sign (strictly).
    """
    exp_avg.mul_(beta1).add_(g, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    u = exp_avg / (exp_avg_sq.sqrt() + eps) * step_size
    mask = (u * p) > 0
    u = u + p * mask * decay
    p.sub_(u)


def join_fp32(hi: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
    """fp32 whose top 16 bits are the bf16 ``hi`` and bottom 16 bits the uint16 ``lo``.

    Written with int32 (not uint32) bit arithmetic, which eager CPU PyTorch supports.
    """
    top = hi.view(torch.int16).to(torch.int32) << 16
    bottom = lo.view(torch.int16).to(torch.int32) & 0xFFFF
    return (top | bottom).view(torch.float32)


def split_fp32_(x: torch.Tensor, hi: torch.Tensor, lo: torch.Tensor) -> None:
    """Write fp32 ``x``'s top 16 bits to bf16 ``hi`` (truncation) and bottom 16 to uint16 ``lo``."""
    bits = x.view(torch.int32)
    hi.view(torch.int16).copy_((bits >> 16).to(torch.int16))
    lo.view(torch.int16).copy_(bits.to(torch.int16))


def cautious_update_(p, mantissa, v, decay, lr, lr_muls):
    """p ← p − p·mask·decay·lr − v·lr on the fp32 rebuilt from bf16 ``p`` and its ``mantissa``.

    mask = (v·p ≥ 0): decay also applies where the update is zero. decay = wd·lr_base, and the
    matrix's effective lr = lr·lr_muls, with lr_muls (matrices, 1, 1) on the device, so that the
    shape and c_proj multipliers enter the decay once, via lr, and a bank whose matrices differ
    in lr is still one call (at world size 1 the mlp bank's 24 matrices were 24 calls).
    """
    lr = lr * lr_muls
    x = join_fp32(p, mantissa)
    v = v.float()
    mask = (v * x) >= 0
    x = x - x * mask * decay * lr - v * lr
    split_fp32_(x, p, mantissa)


def normuon_variance_(v, second_moment, beta2: float, red_dim: int):
    """Scale each row (``red_dim=-1``) or column of ``v`` by 1/√(its running second moment),
    then rescale every matrix back to its own Frobenius norm. Updates ``second_moment``."""
    row_mean_sq = v.float().square().mean(dim=red_dim, keepdim=True)
    n = v.size(red_dim)
    norm = (row_mean_sq.sum(dim=(-2, -1), keepdim=True) * n).sqrt()
    second_moment.lerp_(row_mean_sq, 1 - beta2)
    scale = second_moment.clamp_min(1e-10).rsqrt()
    new_norm = ((row_mean_sq * n) * scale.square()).sum(dim=(-2, -1), keepdim=True).sqrt()
    return v.mul_((scale * (norm / new_norm.clamp_min(1e-10))).to(v.dtype))


# ---------------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One parameter as the optimizer sees it: its spec, comms, slice and state."""

    label: str
    param: nn.Parameter
    spec: ParamSpec
    comms: str
    rows: int                                  # rows of the local slice (dim 0, or matrices)
    view: tuple[int, ...] | None = None        # NorMuon's (matrices, r, c) view
    lr_muls: tuple[float, ...] = ()            # NorMuon: per local matrix, shape × c_proj
    lr_muls_t: torch.Tensor | None = None      # the same as an fp32 (matrices, 1, 1) device tensor
    state: dict = field(default_factory=dict)

    @property
    def sharded(self) -> bool:
        return self.comms.startswith("sharded")


class NorMuonAndAdam:
    """The record's optimizer: NorMuon for the two weight banks, Adam for everything else.

    model: parameters named ``<label>`` or ``<label>.weight`` (labels in ``PARAM_TABLE``).
    rank, world_size, grad_accum: this process's place; world_size 1 needs no process group.
    compile: compile the element-wise updates (default: True when the model is on CUDA).
    keep_grads: zero used gradients in place instead of setting them to None, so that CUDA-graph
        replays of the backward (trainer.graphs) keep accumulating into the same tensors.
    Reverts read from ``cfg.reverts``: "transpose-kernels", "tall-polar-express",
    "fused-nesterov" (the parent record's behaviour for each).
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, *, rank: int = 0, world_size: int = 1,
                 grad_accum: int = 8, process_group=None, compile: bool | None = None,
                 keep_grads: bool = False):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        self.cfg = cfg
        self.rank, self.world_size, self.grad_accum = rank, world_size, grad_accum
        self.comms = Comms(rank, world_size, process_group)
        self.reverts = frozenset(cfg.reverts)
        self.tall_path = "transpose" if "tall-polar-express" in self.reverts else "xtx"
        self.fused_nesterov = "fused-nesterov" not in self.reverts
        self.transpose_kernels = "transpose-kernels" not in self.reverts
        self.keep_grads = keep_grads

        self.slots: dict[str, _Slot] = {label: self._make_slot(label, p) for label, p in _labelled(model)}
        self.scatter_order = [label for label in SCATTER_ORDER if label in self.slots]
        self.work_order = [label for label in WORK_ORDER if label in self.slots]
        self.is_split = False
        self.tie = "lm_head" in self.slots and "embed" in self.slots
        self.sparse = any(s.comms == "sharded_sparse" for s in self.slots.values())

        on_cuda = any(s.param.is_cuda for s in self.slots.values())
        if compile is None:
            compile = on_cuda
        if compile:
            # One graph per shape, dtype and betas: about 20 here, past Dynamo's default limit of 8
            # (the record raises it to 64 for the same reason).
            dynamo = torch._dynamo.config
            dynamo.recompile_limit = max(dynamo.recompile_limit, 64)
        wrap = (lambda f: torch.compile(f, fullgraph=True, dynamic=False)) if compile else (lambda f: f)
        self._adam = wrap(adam_update_)
        self._cautious = wrap(cautious_update_)
        self._variance = wrap(normuon_variance_)

        self._step_size_t = torch.zeros((), dtype=torch.float32)
        self._decay_t = torch.zeros((), dtype=torch.float32)
        self._lr_t = torch.zeros((), dtype=torch.float32)
        self._momentum_t = torch.zeros((), dtype=torch.float32)

        if self.sparse:
            bigram = self.slots["bigram_embed"].param
            self._row_mask = np.zeros(bigram.shape[0], dtype=np.uint8)
            self._send_buffer = torch.empty(bigram.shape[0], dtype=torch.int32, pin_memory=bigram.is_cuda)
        self._counts = None        # in flight between sparse_before_forward and sparse_after_forward
        self._exchange = None      # row indices in flight until the optimizer step

    # -------------------------------------------------------------------------------------
    # Construction

    def _make_slot(self, label: str, p: nn.Parameter) -> _Slot:
        spec = PARAM_TABLE[label]
        comms = effective_comms(spec, self.world_size, self.grad_accum)
        ws = self.world_size if comms.startswith("sharded") else 1
        if spec.optim == "adam":
            if p.shape[0] % ws:
                raise ValueError(f"{label}: {p.shape[0]} rows do not split over {ws} ranks")
            rows = p.shape[0] // ws
            local = p[:rows] if ws > 1 else p
            exp_avg = torch.zeros(local.shape, dtype=torch.float32, device=p.device)
            state = dict(step=0, exp_avg=exp_avg, exp_avg_sq=torch.zeros_like(exp_avg))
            return _Slot(label, p, spec, comms, rows, state=state)
        if p.dtype != torch.bfloat16:
            raise ValueError(f"{label}: NorMuon keeps a bf16 weight plus a 16-bit mantissa, got {p.dtype}")
        view = sharding_view(label, p.shape)
        if view[0] % ws:
            raise ValueError(f"{label}: {view[0]} matrices do not split over {ws} ranks")
        rows = view[0] // ws
        r, c = view[1:]
        shape_mul = max(1.0, r / c) ** 0.5
        first = self.rank * rows if ws > 1 else 0
        # c_proj (odd global index in the mlp bank) trains at twice the lr of c_fc.
        lr_muls = tuple(shape_mul * spec.lr_mul * (2.0 if label == "mlp_bank" and (first + i) % 2 else 1.0)
                        for i in range(rows))
        chunk = (rows, r, c)
        moment_shape = (rows, r, 1) if r >= c else (rows, 1, c)
        state = dict(
            momentum_buffer=torch.zeros(chunk, dtype=torch.float32, device=p.device),
            second_momentum_buffer=torch.zeros(moment_shape, dtype=torch.float32, device=p.device),
            mantissa=torch.zeros(chunk, dtype=torch.uint16, device=p.device),
        )
        lr_muls_t = torch.tensor(lr_muls, dtype=torch.float32, device=p.device).view(rows, 1, 1)
        return _Slot(label, p, spec, comms, rows, view=view, lr_muls=lr_muls, lr_muls_t=lr_muls_t, state=state)

    def _range(self, label: str, phase: str):
        return record_function(f"optimizer/{label}/{phase}")

    # -------------------------------------------------------------------------------------
    # The step

    @torch.no_grad()
    def step(self, step: int, lr_factor: float, momentum: float) -> None:
        """One optimizer step: scatter, work, gather (docs/trainer.md, "One optimizer step").

        lr_factor multiplies every base lr; momentum is NorMuon's Nesterov momentum.
        Adam parameters update only when ``step`` is odd.
        """
        do_adam = step % 2 == 1
        tied = self.tie and not self.is_split
        lm_head = self.slots.get("lm_head")
        embed = self.slots.get("embed")

        pending: dict[str, Pending] = {}
        for label in self.scatter_order:
            slot = self.slots[label]
            if (slot.spec.optim == "adam" and not do_adam) or slot.param.grad is None:
                continue
            if label == "embed" and tied:
                continue
            fold = label == "lm_head" and tied and embed.param.grad is not None
            if slot.comms == "none" and not fold:
                pending[label] = self._launch_reduce(slot)
                continue
            # At world size 1 this range exists only for the tied embedding's transpose-add.
            with self._range(label, "reduce"):
                if fold:
                    self._fold_embed_grad(lm_head.param.grad, embed.param.grad)
                pending[label] = self._launch_reduce(slot)

        lm_gather, gathers = None, []
        for label in self.work_order:
            if label not in pending:
                continue
            slot = self.slots[label]
            with self._range(label, "update"):
                grad = pending[label].wait()
                if slot.spec.optim == "adam":
                    local = self._adam_step(slot, grad, lr_factor)
                else:
                    local = self._normuon_step(slot, grad, lr_factor, momentum)
            if slot.sharded:
                with self._range(label, "gather"):
                    full = slot.param.data.view(slot.view) if slot.view else slot.param.data
                    fut = self.comms.all_gather(full, local)
                if label == "lm_head":
                    lm_gather = fut
                else:
                    gathers.append(fut)

        if lm_gather is not None:
            lm_gather.wait()
        if do_adam and tied:
            with self._range("embed", "gather"):
                self._copy_head_to_embed(lm_head.param.data, embed.param.data)
        for fut in gathers:
            fut.wait()

        self._exchange = None
        used = [s.param for s in self.slots.values() if s.spec.optim == "normuon" or do_adam]
        if self.keep_grads:
            # A zeroed gradient takes the next accumulation exactly as None would (0 + g = g).
            grads = [p.grad for p in used if p.grad is not None]
            if grads:
                torch._foreach_zero_(grads)
        else:
            for p in used:
                p.grad = None

    def _fold_embed_grad(self, head_grad: torch.Tensor, embed_grad: torch.Tensor) -> None:
        if self.transpose_kernels:
            transpose_add(embed_grad, head_grad)
        else:
            head_grad.add_(embed_grad.T)

    def _copy_head_to_embed(self, head: torch.Tensor, embed: torch.Tensor) -> None:
        if self.transpose_kernels:
            transpose_copy(head, embed)
        else:
            embed.copy_(head.T)

    def _local_grad(self, slot: _Slot) -> torch.Tensor:
        g = slot.param.grad
        return g.view(slot.view) if slot.view else g

    def _launch_reduce(self, slot: _Slot) -> Pending:
        grad = slot.param.grad
        if slot.comms == "none":
            return Pending.ready(self._local_grad(slot))
        if slot.comms == "repl":
            return self.comms.all_reduce_avg(grad)
        if slot.comms == "sharded":
            return self.comms.reduce_scatter_avg(self._local_grad(slot))
        return self._launch_sparse_reduce(slot)

    # -------------------------------------------------------------------------------------
    # Adam (docs/trainer.md, "Adam")

    def _adam_step(self, slot: _Slot, grad: torch.Tensor, lr_factor: float) -> torch.Tensor:
        beta1, beta2 = slot.spec.betas
        lr = self.cfg.adam_lr * lr_factor * slot.spec.lr_mul
        st = slot.state
        st["step"] += 1
        t = st["step"]
        self._step_size_t.fill_(lr * (1 - beta2 ** t) ** 0.5 / (1 - beta1 ** t))
        self._decay_t.fill_(lr * lr * self.cfg.adam_wd * slot.spec.wd_mul)
        p = slot.param.data
        local = p[self.rank * slot.rows:(self.rank + 1) * slot.rows] if slot.sharded else p
        self._adam(local, grad, st["exp_avg"], st["exp_avg_sq"], beta1, beta2, self.cfg.adam_eps,
                   self._step_size_t, self._decay_t)
        return local

    # -------------------------------------------------------------------------------------
    # NorMuon (docs/trainer.md, "NorMuon")

    def _normuon_step(self, slot: _Slot, grad: torch.Tensor, lr_factor: float, momentum: float) -> torch.Tensor:
        st = slot.state
        lr = self.cfg.muon_lr * lr_factor
        self._momentum_t.fill_(momentum)
        v = polar_express(grad.float(), st["momentum_buffer"],
                          self._momentum_t if self.fused_nesterov else float(momentum),
                          tall_path=self.tall_path, fused_momentum=self.fused_nesterov)
        r, c = slot.view[1:]
        v = self._variance(v, st["second_momentum_buffer"], self.cfg.muon_beta2, -1 if r >= c else -2)

        local = slot.param.data.view(slot.view)
        if slot.sharded:
            local = local[self.rank * slot.rows:(self.rank + 1) * slot.rows]
        self._decay_t.fill_(slot.spec.wd_mul * self.cfg.muon_wd * lr)
        self._lr_t.fill_(lr)
        self._cautious(local, st["mantissa"], v, self._decay_t, self._lr_t, slot.lr_muls_t)
        return local

    # -------------------------------------------------------------------------------------
    # Sparse bigram gradients (docs/trainer.md, "Sparse bigram gradients"): each rank sends only
    # the rows its own tokens touched.

    def sparse_before_forward(self, bigram_ids_np: np.ndarray, step: int) -> None:
        """Mark the bigram rows this forward touches; on odd steps start the counts exchange."""
        if not self.sparse:
            return
        self._row_mask[bigram_ids_np] = 1
        if step % 2 == 0:
            return
        rows = np.flatnonzero(self._row_mask).astype(np.int32)
        per_rank = self._row_mask.shape[0] // self.world_size
        bounds = np.searchsorted(rows, np.arange(0, per_rank * (self.world_size + 1), per_rank))
        send_counts = torch.from_numpy(np.diff(bounds).astype(np.int64))
        # Our own rows are already in our gradient; they are neither sent nor received.
        send_counts[self.rank] = 0
        rows = np.concatenate([rows[:bounds[self.rank]], rows[bounds[self.rank + 1]:]])
        device = self.slots["bigram_embed"].param.device
        staged = self._send_buffer[:rows.shape[0]]
        staged.copy_(torch.from_numpy(rows))
        send_rows = staged.to(device, non_blocking=True)
        recv_counts = torch.empty_like(send_counts)
        # CPU count tensors: on a "cuda:nccl,cpu:gloo" group this goes over gloo.
        self._counts = (send_rows, send_counts, self.comms.all_to_all(recv_counts, send_counts))

    def sparse_after_forward(self) -> None:
        """Wait for the counts, then launch the exchange of row indices (odd steps only)."""
        if self._counts is None:
            return
        send_rows, send_counts, counts_pending = self._counts
        self._counts = None
        recv_counts = counts_pending.wait().tolist()
        send_counts = send_counts.tolist()
        recv_rows = torch.empty(sum(recv_counts), dtype=torch.int32, device=send_rows.device)
        pending = self.comms.all_to_all(recv_rows, send_rows, recv_counts, send_counts)
        self._exchange = (send_rows, send_counts, recv_counts, recv_rows, pending)
        self._row_mask.fill(0)

    def _launch_sparse_reduce(self, slot: _Slot) -> Pending:
        if self._exchange is None:
            raise RuntimeError("bigram_embed uses sparse comms: call sparse_before_forward and "
                               "sparse_after_forward around the forward of every odd step")
        send_rows, send_counts, recv_counts, recv_rows, rows_pending = self._exchange
        grad = slot.param.grad
        d = grad.shape[1]
        send_vals = grad[send_rows].reshape(-1)
        recv_vals = grad.new_empty(sum(recv_counts) * d)
        vals_pending = self.comms.all_to_all(recv_vals, send_vals, [n * d for n in recv_counts],
                                             [n * d for n in send_counts])

        def merge():
            rows_pending.wait()
            vals_pending.wait()
            grad.index_add_(0, recv_rows, recv_vals.view(-1, d))
            mine = grad[self.rank * slot.rows:(self.rank + 1) * slot.rows]
            return mine.mul_(1 / self.world_size)

        return Pending(merge)

    # -------------------------------------------------------------------------------------
    # Tying and state

    def split_embed(self) -> None:
        """Untie embed from lm_head: embed's Adam state becomes lm_head's, transposed
        (docs/trainer.md, "The tied embedding and the split").

        Called after the optimizer step of the split step; a no-op once split. Sharded: lm_head's
        (rows/ws, vocab) moments are gathered to (d, vocab), transposed and cut into this rank's
        embed rows (a collective: every rank calls it).
        """
        if not self.tie:
            raise RuntimeError("split_embed needs both lm_head and embed")
        if self.is_split:
            return
        lm, em = self.slots["lm_head"], self.slots["embed"]
        em.state["step"] = lm.state["step"]
        for key in ("exp_avg", "exp_avg_sq"):
            if lm.sharded:
                full = lm.state[key].new_empty(lm.param.shape)
                self.comms.all_gather(full, lm.state[key]).wait()
            else:
                full = lm.state[key]
            if em.sharded:
                em.state[key].copy_(full.T[self.rank * em.rows:(self.rank + 1) * em.rows])
            else:
                em.state[key].copy_(full.T)
        self.is_split = True

    def reset(self) -> None:
        """Back to the state at construction: every buffer zeroed, Adam step counts 0, embed tied
        again, sparse bookkeeping cleared.

        The record reloads Adam state from a copy taken at start; that state is all zeros, so
        zeroing in place gives the same result without holding a second copy in GPU memory.
        """
        self.is_split = False
        for slot in self.slots.values():
            for key, value in slot.state.items():
                if key == "step":
                    slot.state[key] = 0
                else:
                    value.zero_()
        if self.sparse:
            self._row_mask.fill(0)
        self._counts = None
        self._exchange = None
