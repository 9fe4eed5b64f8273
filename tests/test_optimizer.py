"""NorMuonAndAdam at world size 1 against re-derivations written here (docs/trainer.md, "The optimizer").

A fake model with the fifteen labels at tiny shapes stands in for the GPT; gradients are set by
hand, as the loop's backward would leave them (accumulating until the optimizer clears them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import speedtrace.trainer.optimizer as opt_mod
from speedtrace.kernels import POLAR_EXPRESS_COEFFS
from speedtrace.trainer.config import speedrun, tiny
from speedtrace.trainer.optimizer import (
    PARAM_TABLE,
    SCATTER_ORDER,
    WORK_ORDER,
    NorMuonAndAdam,
    join_fp32,
    normuon_variance_,
    param_rows,
    split_fp32_,
)

BF16, F32 = torch.bfloat16, torch.float32
# label: (shape, dtype). attn_bank views as (8, 8, 8), mlp_bank as (6, 32, 8): tall, 3 per rank
# at world size 2, so rank 1 starts on an odd (c_proj) matrix.
FAKE_SHAPES = {
    "attn_bank": ((2, 32, 8), BF16),
    "mlp_bank": ((3, 2, 32, 8), BF16),
    "scalars": ((4,), F32),
    "smear_gate": ((1, 4), BF16),
    "skip_gate": ((1, 4), BF16),
    "attn_gate_bank": ((2, 3, 4), BF16),
    "ve_gate_bank": ((2, 3, 4), BF16),
    "lm_head": ((8, 16), BF16),
    "bigram_embed": ((16, 8), BF16),
    "post_lambdas": ((4, 2, 2), F32),
    "x0_lambdas": ((4,), F32),
    "bigram_lambdas": ((4,), F32),
    "resid_lambdas": ((4, 2), F32),
    "value_embeds": ((32, 8), BF16),
    "embed": ((16, 8), BF16),
}
EMBEDDING_LIKE = ("embed", "bigram_embed", "value_embeds")


class FakeModel(nn.Module):
    """Parameters named like the GPT's: ``<label>`` or ``<label>.weight``; embed = lm_headᵀ."""

    def __init__(self, seed: int = 0, shapes=None, device="cpu"):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        for label, (shape, dtype) in (shapes or FAKE_SHAPES).items():
            value = (torch.randn(shape, generator=gen) * 0.5).to(dtype)
            p = nn.Parameter(value.to(device))
            if label in EMBEDDING_LIKE:
                holder = nn.Module()
                holder.weight = p
                setattr(self, label, holder)
            else:
                setattr(self, label, p)
        if hasattr(self, "embed") and hasattr(self, "lm_head"):
            with torch.no_grad():
                self.embed.weight.copy_(self.lm_head.T)

    def params(self) -> dict[str, nn.Parameter]:
        return {opt_mod.label_of(n): p for n, p in self.named_parameters()}


def bigram_rows(step: int, rank: int, vocab: int = 16, count: int = 5) -> np.ndarray:
    """The bigram rows a rank's forward touches on a step (sorted, distinct)."""
    rng = np.random.default_rng(1000 * step + rank)
    return np.sort(rng.choice(vocab, size=count, replace=False)).astype(np.int32)


def fake_grads(model: FakeModel, step: int, rank: int) -> dict[str, torch.Tensor]:
    """One backward's gradients for a rank; bigram rows are zero unless touched.

    Values are multiples of 1/16 below 2 in magnitude, so sums over two steps and two ranks, and
    their halves, are exact in bf16: the order of accumulation cannot change any result.
    """
    gen = torch.Generator().manual_seed(7919 * step + rank)
    out = {}
    for label, p in model.params().items():
        g = (torch.randn(p.shape, generator=gen) * 8).round().clamp(-31, 31) / 16
        if label == "bigram_embed":
            mask = torch.zeros(p.shape[0], 1)
            mask[torch.from_numpy(bigram_rows(step, rank, p.shape[0]).astype(np.int64))] = 1
            g = g * mask
        out[label] = g.to(device=p.device, dtype=p.dtype)
    return out


def accumulate(model: FakeModel, grads: dict[str, torch.Tensor]) -> None:
    for label, p in model.params().items():
        g = grads[label]
        p.grad = g.clone() if p.grad is None else p.grad + g


def lr_factor(step: int) -> float:
    return 1.0 - 0.05 * step


def momentum(step: int) -> float:
    return 0.85 + 0.02 * step


def run(opt, model, steps, grads_for, split_step=None, sparse_rows=None):
    """The loop's view of the optimizer: backward(s), optional sparse hooks, step, split."""
    for s in steps:
        if sparse_rows is not None:
            opt.sparse_before_forward(sparse_rows(s), s)
            opt.sparse_after_forward()
        accumulate(model, grads_for(s))
        opt.step(s, lr_factor(s), momentum(s))
        if s == split_step:
            opt.split_embed()


def snapshot(model: FakeModel) -> dict[str, torch.Tensor]:
    return {label: p.detach().clone() for label, p in model.params().items()}


# ---------------------------------------------------------------------------------------------
# Reference re-derivations (float64)


def adam_reference(p0, grads, spec, cfg, factors):
    """Adam with bias correction and cautious decay (u·p > 0, lr² decay), one entry per update."""
    p = p0.double().clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    b1, b2 = spec.betas
    for t, (g, f) in enumerate(zip(grads, factors), start=1):
        g = g.double()
        lr = cfg.adam_lr * f * spec.lr_mul
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        u = lr * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t) * m / (v.sqrt() + cfg.adam_eps)
        u = u + (u * p > 0) * p * lr * lr * cfg.adam_wd * spec.wd_mul
        p = p - u
    return p


def polar_reference(g: torch.Tensor) -> torch.Tensor:
    """Polar Express in float64 on each matrix of (n, r, c), oriented as docs/trainer.md ("NorMuon") says."""
    x = g.double()
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)
    tall = x.size(-2) > x.size(-1)
    for a, b, c in POLAR_EXPRESS_COEFFS:
        if tall:
            A = x.mT @ x
            x = a * x + x @ (b * A + c * A @ A)
        else:
            A = x @ x.mT
            x = a * x + (b * A + c * A @ A) @ x
    return x


def variance_reference(v, buf, beta2):
    """Row statistics when r ≥ c, else column statistics; norm restored per matrix."""
    v = v.double()
    dim = -1 if v.shape[-2] >= v.shape[-1] else -2
    buf = buf + (1 - beta2) * ((v * v).mean(dim=dim, keepdim=True) - buf)
    scaled = v / buf.clamp_min(1e-10).sqrt()
    fro = lambda t: t.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()  # noqa: E731
    return scaled * fro(v) / fro(scaled), buf


# ---------------------------------------------------------------------------------------------
# Adam


def adam_model():
    shapes = {k: FAKE_SHAPES[k] for k in ("scalars", "x0_lambdas", "attn_gate_bank", "value_embeds")}
    # fp32 stand-ins so that the reference comparison is tight; value_embeds has lr×75, wd×5.
    shapes["attn_gate_bank"] = ((2, 3, 4), F32)
    shapes["value_embeds"] = ((32, 8), F32)
    return FakeModel(seed=1, shapes=shapes)


def test_adam_updates_on_odd_steps_with_two_steps_of_gradient_and_cautious_decay():
    cfg = tiny()
    model = adam_model()
    p0 = snapshot(model)
    opt = NorMuonAndAdam(model, cfg)
    grads = [fake_grads(model, s, 0) for s in range(4)]

    accumulate(model, grads[0])
    opt.step(0, lr_factor(0), momentum(0))
    for label, p in model.params().items():
        assert torch.equal(p.detach(), p0[label]), f"{label} moved on an even step"
        assert torch.equal(p.grad, grads[0][label]), f"{label}'s grad was not kept on an even step"
    run(opt, model, [1, 2, 3], lambda s: grads[s])

    for label, p in model.params().items():
        summed = [grads[0][label] + grads[1][label], grads[2][label] + grads[3][label]]
        want = adam_reference(p0[label], summed, PARAM_TABLE[label], cfg, [lr_factor(1), lr_factor(3)])
        torch.testing.assert_close(p.detach().double(), want, rtol=1e-5, atol=1e-6, msg=label)
        assert p.grad is None
    assert opt.slots["value_embeds"].state["step"] == 2


def test_adam_cautious_mask_is_strict_and_decay_uses_lr_squared():
    # Gradient 0 at one entry: the update is 0 there, so u·p = 0 and (strict mask) no decay.
    cfg = tiny()
    model = FakeModel(shapes={"value_embeds": ((2, 2), F32)})
    with torch.no_grad():
        model.value_embeds.weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.5]]))
    opt = NorMuonAndAdam(model, cfg)
    model.value_embeds.weight.grad = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    opt.step(1, 1.0, 0.9)
    lr = cfg.adam_lr * 75
    u = lr * (1 - 0.95) ** 0.5 / (1 - 0.75) * 0.25 / (0.05 ** 0.5 + 1e-10)   # |g| = 1, t = 1
    decay = lr * lr * cfg.adam_wd * 5
    want = torch.tensor([[1.0 - u - decay * 1.0, -1.0 - u],      # same sign: decayed; opposite: not
                         [2.0, 0.5 + u]])                        # zero update: untouched
    torch.testing.assert_close(model.value_embeds.weight.detach(), want, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# NorMuon pieces


def test_mantissa_round_trip_is_exact_and_high_half_is_truncated():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4096, generator=gen) * torch.logspace(-40, 38, 4096)
    x = torch.cat([x, torch.tensor([float("inf"), -float("inf"), -0.0, 1e-45, -3.4e38])])
    hi = torch.empty(x.shape, dtype=BF16)
    lo = torch.empty(x.shape, dtype=torch.uint16)
    split_fp32_(x, hi, lo)
    bits = x.numpy().view(np.uint32)
    assert np.array_equal(hi.view(torch.int16).numpy().view(np.uint16), (bits >> 16).astype(np.uint16))
    assert np.array_equal(lo.view(torch.int16).numpy().view(np.uint16), (bits & 0xFFFF).astype(np.uint16))
    back = join_fp32(hi, lo)
    assert np.array_equal(back.numpy().view(np.uint32), bits)


@pytest.mark.parametrize("shape", [(3, 12, 4), (3, 4, 12)], ids=["tall-rows", "wide-columns"])
def test_variance_normalisation_matches_reference_over_two_steps(shape):
    gen = torch.Generator().manual_seed(5)
    r, c = shape[1:]
    buf = torch.zeros((3, r, 1) if r >= c else (3, 1, c))
    ref_buf = buf.double()
    for _ in range(2):
        v = torch.randn(shape, generator=gen) * torch.rand(shape[:-1] + (1,), generator=gen)
        want, ref_buf = variance_reference(v, ref_buf, 0.95)
        got = normuon_variance_(v.clone(), buf, 0.95, -1 if r >= c else -2)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(buf.double(), ref_buf, rtol=1e-6, atol=0)


@pytest.mark.parametrize("tall_path", ["xtx", "transpose"])
def test_polar_express_direction_wide_and_tall(tall_path):
    """The bf16 Polar Express the optimizer calls points along the polar factor UVᵀ of a tall
    batch and of its wide transpose, as the float64 iteration of the record's coefficients does;
    a tall matrix's result is the transpose of its wide transpose's result."""
    gen = torch.Generator().manual_seed(11)
    g = torch.randn(2, 24, 8, generator=gen)
    tall = opt_mod.polar_express(g, torch.zeros_like(g), 0.0, tall_path=tall_path).double()
    wide = opt_mod.polar_express(g.mT.contiguous(), torch.zeros(2, 8, 24), 0.0).double()
    assert tall.shape == g.shape and wide.shape == g.mT.shape
    u, _, vh = torch.linalg.svd(g.double(), full_matrices=False)
    polar = u @ vh

    def cosine(a, b):
        return ((a * b).sum() / (a.norm() * b.norm())).item()

    for got, want in ((tall, polar), (wide, polar.mT), (tall, polar_reference(g)),
                      (wide, polar_reference(g.mT)), (tall, wide.mT)):
        assert cosine(got, want) > 0.99
    # bf16 leaves the singular values near, not at, 1 (the float64 iteration: within ~1e-2).
    sv = torch.linalg.svdvals(tall)
    assert sv.min() > 0.7 and sv.max() < 1.3


def normuon_reference(p0, grads, moms, factors, lr_muls, cfg):
    """NorMuon in float64 on the (n, r, c) view, one gradient per step from zero state."""
    x = p0.double()
    buf = torch.zeros_like(x)
    r, c = x.shape[-2:]
    v2 = torch.zeros((x.shape[0], r, 1) if r >= c else (x.shape[0], 1, c), dtype=torch.float64)
    for g, mu, f in zip(grads, moms, factors):
        g = g.float()
        buf = buf + (1 - mu) * (g.double() - buf)
        nesterov = g.double() + mu * (buf - g.double())
        # The orthogonalisation is the kernels' own (tested there); the rest is re-derived.
        v = opt_mod.polar_express(nesterov.float(), torch.zeros_like(g), 0.0).double()
        v, v2 = variance_reference(v, v2, cfg.muon_beta2)
        lr = cfg.muon_lr * f
        lr_eff = torch.tensor(lr_muls, dtype=torch.float64).view(-1, 1, 1) * lr
        mask = (v * x) >= 0
        x = x - x * mask * cfg.muon_wd * lr * lr_eff - v * lr_eff
    return x


def test_normuon_step_per_matrix_lr_and_mantissa_precision():
    cfg = tiny()
    model = FakeModel(seed=2, shapes={k: FAKE_SHAPES[k] for k in ("attn_bank", "mlp_bank")})
    p0 = snapshot(model)
    opt = NorMuonAndAdam(model, cfg)
    grads = [fake_grads(model, s, 0) for s in range(3)]
    run(opt, model, range(3), lambda s: grads[s])

    # Shape multiplier √(r/c): 1 for the square attn matrices, 2 for the (32, 8) mlp ones; c_proj
    # (odd index) another ×2.
    cases = {"attn_bank": ((8, 8, 8), [1.0] * 8), "mlp_bank": ((6, 32, 8), [2.0, 4.0] * 3)}
    for label, (view, muls) in cases.items():
        assert opt.slots[label].lr_muls == tuple(muls)
        got = join_fp32(model.params()[label].detach().view(view), opt.slots[label].state["mantissa"])
        want = normuon_reference(p0[label].view(view), [g[label].view(view) for g in grads],
                                 [momentum(s) for s in range(3)], [lr_factor(s) for s in range(3)],
                                 muls, cfg)
        # bf16 rounding of the update (~2⁻⁹ of it, 3 steps) bounds the error; the moves are 0.04-0.09.
        torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-3, msg=label)
        # The fp32 weight kept below bf16 resolution really is finer than the bf16 parameter.
        assert (opt.slots[label].state["mantissa"] != 0).any()


def test_each_bank_updates_in_one_call_whatever_its_lr_multipliers():
    """The mlp bank's matrices differ in lr (c_proj ×2), yet its cautious update is one call
    per step, like the attention bank's: a call per matrix costs host time on every step."""
    model = FakeModel(seed=3, shapes={k: FAKE_SHAPES[k] for k in ("attn_bank", "mlp_bank")})
    opt = NorMuonAndAdam(model, tiny())
    calls = []
    update = opt._cautious
    opt._cautious = lambda p, *rest: calls.append(tuple(p.shape)) or update(p, *rest)
    run(opt, model, range(2), lambda s: fake_grads(model, s, 0))
    # Two steps, one call per bank each, on the whole (matrices, r, c) view.
    assert sorted(calls) == sorted([(8, 8, 8), (6, 32, 8)] * 2)


def test_c_proj_lr_follows_global_matrix_index_on_each_rank():
    model = FakeModel(shapes={"mlp_bank": FAKE_SHAPES["mlp_bank"]})
    rank1 = NorMuonAndAdam(model, tiny(), rank=1, world_size=2)   # holds matrices 3, 4, 5
    assert rank1.slots["mlp_bank"].lr_muls == (4.0, 2.0, 4.0)
    rank0 = NorMuonAndAdam(model, tiny(), rank=0, world_size=2)   # holds 0, 1, 2
    assert rank0.slots["mlp_bank"].lr_muls == (2.0, 4.0, 2.0)


# ---------------------------------------------------------------------------------------------
# Tied embedding, split, reset


def tied_model():
    return FakeModel(seed=4, shapes={k: FAKE_SHAPES[k] for k in ("lm_head", "embed")})


def test_tied_embed_follows_lm_head_with_folded_gradient():
    cfg = tiny()
    model = tied_model()
    p0 = snapshot(model)
    opt = NorMuonAndAdam(model, cfg)
    grads = [fake_grads(model, s, 0) for s in range(2)]
    accumulate(model, grads[0])
    opt.step(0, 1.0, 0.9)
    assert torch.equal(model.embed.weight.detach(), p0["embed"])
    accumulate(model, grads[1])
    opt.step(1, 1.0, 0.9)
    head = model.lm_head.detach()
    assert torch.equal(model.embed.weight.detach(), head.T)
    assert not torch.equal(head, p0["lm_head"])
    assert opt.slots["embed"].state["step"] == 0      # embed has no Adam of its own while tied
    # lm_head's gradient was (head grads) + (embed grads)ᵀ, summed over both steps, in bf16.
    g = (grads[0]["lm_head"] + grads[1]["lm_head"]) + (grads[0]["embed"] + grads[1]["embed"]).T
    want = adam_reference(p0["lm_head"].float(), [g], PARAM_TABLE["lm_head"], cfg, [1.0])
    torch.testing.assert_close(head.double(), want, rtol=0, atol=0.02)


def test_split_embed_copies_state_transposed_then_embed_trains_alone():
    cfg = tiny()
    model = tied_model()
    opt = NorMuonAndAdam(model, cfg)
    run(opt, model, range(4), lambda s: fake_grads(model, s, 0), split_step=3)
    lm, em = opt.slots["lm_head"].state, opt.slots["embed"].state
    assert opt.is_split and em["step"] == lm["step"] == 2
    assert torch.equal(em["exp_avg"], lm["exp_avg"].T)
    assert torch.equal(em["exp_avg_sq"], lm["exp_avg_sq"].T)
    run(opt, model, [4, 5], lambda s: fake_grads(model, s, 0))
    assert em["step"] == 3
    assert not torch.equal(model.embed.weight.detach(), model.lm_head.detach().T)


def test_reset_restores_initial_state_so_a_rerun_is_identical():
    cfg = tiny()
    model = FakeModel(seed=6)
    p0 = snapshot(model)
    opt = NorMuonAndAdam(model, cfg)
    steps = range(4)
    run(opt, model, steps, lambda s: fake_grads(model, s, 0), split_step=3)
    first = snapshot(model)

    opt.reset()
    assert not opt.is_split
    for slot in opt.slots.values():
        for key, value in slot.state.items():
            if key == "step":
                assert value == 0
            else:
                assert not value.any(), f"{slot.label}.{key} not reset"
    with torch.no_grad():
        for label, p in model.params().items():
            p.copy_(p0[label])
    run(opt, model, steps, lambda s: fake_grads(model, s, 0), split_step=3)
    for label, p in model.params().items():
        assert torch.equal(p.detach(), first[label]), label


# ---------------------------------------------------------------------------------------------
# The parent's behaviour behind --revert


class Spy:
    """Wraps a function, recording each call's keyword arguments."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs)
        return self.fn(*args, **kwargs)


@pytest.mark.parametrize("change", ["transpose-kernels", "tall-polar-express", "fused-nesterov"])
def test_each_revert_takes_the_parent_path_and_lands_close(change, monkeypatch):
    results = {}
    spies = {}
    originals = {fn: getattr(opt_mod, fn) for fn in ("polar_express", "transpose_add", "transpose_copy")}
    for name, cfg in (("record", tiny()), ("parent", tiny().with_reverts({change}))):
        spies[name] = {fn: Spy(f) for fn, f in originals.items()}
        for fn, spy in spies[name].items():
            monkeypatch.setattr(opt_mod, fn, spy)
        model = FakeModel(seed=8)
        opt = NorMuonAndAdam(model, cfg)
        run(opt, model, range(4), lambda s, m=model: fake_grads(m, s, 0))
        results[name] = snapshot(model)

    rec, par = spies["record"], spies["parent"]
    if change == "transpose-kernels":
        assert rec["transpose_add"].calls and rec["transpose_copy"].calls
        assert not par["transpose_add"].calls and not par["transpose_copy"].calls
    elif change == "tall-polar-express":
        assert {c["tall_path"] for c in rec["polar_express"].calls} == {"xtx"}
        assert {c["tall_path"] for c in par["polar_express"].calls} == {"transpose"}
    else:
        assert {c["fused_momentum"] for c in rec["polar_express"].calls} == {True}
        assert {c["fused_momentum"] for c in par["polar_express"].calls} == {False}
    for label in results["record"]:
        torch.testing.assert_close(results["parent"][label], results["record"][label],
                                   rtol=0.02, atol=0.02, msg=label)


# ---------------------------------------------------------------------------------------------
# Orders, table, dry-run rows, profiler ranges


def test_orders_cover_every_label_once():
    assert SCATTER_ORDER[:2] == ("attn_bank", "mlp_bank") and SCATTER_ORDER[-1] == "embed"
    assert sorted(SCATTER_ORDER) == sorted(WORK_ORDER) == sorted(PARAM_TABLE)
    assert len(PARAM_TABLE) == 15
    assert WORK_ORDER.index("lm_head") < WORK_ORDER.index("embed") < WORK_ORDER.index("attn_bank")


def speedrun_fake(world_size: int):
    """The GPT's parameter shapes per docs/trainer.md ("Parameters"), on the meta device (no memory)."""
    m = speedrun().model
    d, v = m.model_dim, m.vocab_size
    shapes = {
        "attn_bank": (10, 4 * d, d), "mlp_bank": (12, 2, m.mlp_dim, d),
        "scalars": (25 + (-25) % world_size,), "smear_gate": (1, 12), "skip_gate": (1, 12),
        "attn_gate_bank": (10, 6, 12), "ve_gate_bank": (5, 6, 12), "lm_head": (d, v),
        "bigram_embed": (5 * v, d), "post_lambdas": (11, 2, 2), "x0_lambdas": (11,),
        "bigram_lambdas": (11,), "resid_lambdas": (11, 2), "value_embeds": (5 * v, d), "embed": (v, d),
    }
    model = nn.Module()
    for label, shape in shapes.items():
        p = nn.Parameter(torch.empty(shape, device="meta"))
        if label in EMBEDDING_LIKE:
            holder = nn.Module()
            holder.weight = p
            setattr(model, label, holder)
        else:
            setattr(model, label, p)
    return model


def test_param_rows_for_the_speedrun_at_world_size_1():
    rows = param_rows(speedrun_fake(1))
    assert [r["label"] for r in rows] == list(SCATTER_ORDER)
    by = {r["label"]: r for r in rows}
    assert by["attn_bank"]["count"] == 10 * 3072 * 768 == 23_592_960
    assert by["mlp_bank"]["count"] == 24 * 3072 * 768 == 56_623_104
    assert by["lm_head"]["shape"] == (768, 50304) and by["lm_head"]["count"] == 38_633_472
    assert by["value_embeds"]["count"] == by["bigram_embed"]["count"] == 251_520 * 768
    assert by["scalars"]["shape"] == (25,)
    assert {r["comms"] for r in rows} == {"none"}
    assert [r["label"] for r in rows if r["optim"] == "normuon"] == ["attn_bank", "mlp_bank"]
    assert sum(r["count"] for r in rows) == (23_592_960 + 56_623_104 + 25 + 12 + 12 + 720 + 360
                                             + 2 * 38_633_472 + 2 * 193_167_360 + 44 + 11 + 11 + 22)


def test_sparse_comms_only_at_world_8_with_one_micro_batch():
    def comms(ws, ga):
        return {r["label"]: r["comms"] for r in param_rows(speedrun_fake(ws), world_size=ws, grad_accum=ga)}
    assert comms(8, 1)["bigram_embed"] == "sharded_sparse"
    assert comms(8, 2)["bigram_embed"] == comms(2, 4)["bigram_embed"] == "sharded"
    assert comms(2, 4)["scalars"] == "repl" and comms(2, 4)["attn_bank"] == "sharded"


def range_names(opt, model, step):
    accumulate(model, fake_grads(model, step, 0))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step(step, 1.0, 0.9)
    return {e.name for e in prof.events() if e.name.startswith("optimizer/")}


def test_profiler_ranges_name_every_phase_at_world_size_1():
    model = FakeModel(seed=9)
    opt = NorMuonAndAdam(model, tiny())
    even = range_names(opt, model, 0)
    assert even == {"optimizer/attn_bank/update", "optimizer/mlp_bank/update"}
    odd = range_names(opt, model, 1)
    updates = {f"optimizer/{label}/update" for label in PARAM_TABLE if label != "embed"}
    # No collective at world size 1: only the tied embedding's transposes get reduce/gather.
    assert odd == updates | {"optimizer/lm_head/reduce", "optimizer/embed/gather"}


# ---------------------------------------------------------------------------------------------
# GPU: the compiled path (Triton kernels inside torch.compile) against eager


def _compiled_vs_eager(make_model, steps):
    out = {}
    for compile in (False, True):
        model = make_model()
        opt = NorMuonAndAdam(model, tiny(), compile=compile)
        run(opt, model, steps, lambda s, m=model: fake_grads(m, s, 0), split_step=3)
        out[compile] = snapshot(model)
    for label in out[False]:
        # Fusion changes bf16 rounding of intermediates: a few ulps, far below one step's move.
        torch.testing.assert_close(out[True][label].float(), out[False][label].float(),
                                   rtol=0.02, atol=0.02, msg=label)


@pytest.mark.gpu
def test_compiled_cuda_step_matches_eager():
    _compiled_vs_eager(lambda: FakeModel(seed=8, device="cuda"), range(6))


@pytest.mark.gpu
def test_compiled_cuda_step_on_speedrun_bank_shapes():
    d, hidden = 768, 3072
    shapes = {"attn_bank": ((10, 4 * d, d), BF16), "mlp_bank": ((12, 2, hidden, d), BF16)}
    _compiled_vs_eager(lambda: FakeModel(seed=8, shapes=shapes, device="cuda"), range(2))
