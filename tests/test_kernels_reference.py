"""speedtrace.kernels on CPU without the Triton interpreter: the references, the dispatcher, the
public API's validation and torch.compile tracing. Expected values are worked out by hand or by
an independent route (float64 autograd, SVD); the Triton kernels are covered by
test_kernels_triton.py (interpreter) and tests/gpu/test_kernels_gpu.py.
"""

import math
import os

import kernel_checks as checks
import pytest
import torch

import speedtrace.kernels as K
from speedtrace.kernels import reference as R

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                                reason="reference-path tests; the interpreter suite is separate")
F64 = torch.float64


def test_cpu_tensors_run_the_reference():
    src = torch.arange(6.0).reshape(2, 3)
    dst = torch.full((3, 2), float("nan"))
    K.transpose_copy(src, dst)
    assert K.last_backend() == "torch"
    assert dst.tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]


def test_transpose_add_on_a_strided_view_leaves_the_rest_alone():
    base = torch.zeros(5, 4)
    view = base[::2, 1:3]                       # rows 0, 2, 4; columns 1, 2
    K.transpose_add(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), view)
    expected = torch.zeros(5, 4)
    expected[0, 1:3] = torch.tensor([1.0, 4.0])
    expected[2, 1:3] = torch.tensor([2.0, 5.0])
    expected[4, 1:3] = torch.tensor([3.0, 6.0])
    assert torch.equal(base, expected)


def test_symmetric_products_by_hand():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 1.0]])
    assert K.xxt(a).tolist() == [[5.0, 11.0, 2.0], [11.0, 25.0, 4.0], [2.0, 4.0, 1.0]]
    assert K.xtx(a).tolist() == [[10.0, 14.0], [14.0, 21.0]]
    s = torch.tensor([[1.0, 2.0], [2.0, 1.0]])  # s² = [[5, 4], [4, 5]]
    assert K.ba_plus_caa(s, 2.0, 3.0).tolist() == [[13.0, 14.0], [14.0, 13.0]]
    out = torch.empty(2, 3, 3)
    assert K.xxt(torch.stack([a, 2 * a]), out) is out
    assert out[1].tolist() == [[20.0, 44.0, 8.0], [44.0, 100.0, 16.0], [8.0, 16.0, 4.0]]


def test_nesterov_by_hand_and_buffer_in_place():
    grad = torch.ones(1, 2, 3)
    buf = torch.zeros(1, 2, 3)
    buf_id = buf.data_ptr()
    out = K.polar_express(grad, buf, 0.9)
    # buf = lerp(0, 1, 0.1) = 0.1; g' = lerp(1, 0.1, 0.9) = 0.19 (then orthogonalised).
    assert buf.data_ptr() == buf_id
    assert torch.allclose(buf, torch.full_like(buf, 0.1))
    assert torch.equal(grad, torch.ones(1, 2, 3))
    g = R.nesterov(torch.ones(2), torch.zeros(2), 0.9)
    assert torch.allclose(g, torch.full((2,), 0.19))
    assert out.dtype == torch.bfloat16 and out.shape == grad.shape


@pytest.mark.parametrize("shape", [(3, 48, 20), (3, 20, 48)])
def test_polar_iterations_approximate_the_polar_factor(shape):
    g = torch.randn(*shape, dtype=F64)
    x = R.polar_iterations(g, dtype=F64)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    assert torch.linalg.matrix_norm(x - u @ vh, ord=2).max() < 0.2
    sv = torch.linalg.svdvals(x)
    assert sv.min() > 0.8 and sv.max() < 1.2


def test_tall_paths_agree_in_float64():
    g = torch.randn(2, 40, 16, dtype=F64)
    by_xtx = R.polar_iterations(g, "xtx", F64)
    by_transpose = R.polar_iterations(g, "transpose", F64)
    assert torch.allclose(by_xtx, by_transpose, atol=1e-10)


@pytest.mark.parametrize("tall_path", ["xtx", "transpose"])
def test_fused_and_eager_momentum_give_the_same_update(tall_path):
    grad = torch.randn(2, 24, 8)
    buf_a, buf_b = torch.randn(2, 2, 24, 8)
    buf_b = buf_b.copy_(buf_a)
    a = K.polar_express(grad, buf_a, torch.tensor(0.95), tall_path=tall_path)
    b = K.polar_express(grad, buf_b, 0.95, tall_path=tall_path, fused_momentum=False)
    # 1 − μ is formed in fp32 from a tensor but in double from a float: equal to rounding.
    assert torch.allclose(buf_a, buf_b, rtol=1e-6, atol=1e-7)
    assert torch.allclose(a.float(), b.float(), atol=1e-2)


def test_polar_express_accepts_one_matrix_and_out():
    grad, buf = torch.randn(12, 30), torch.zeros(12, 30)
    out = torch.empty(12, 30, dtype=torch.bfloat16)
    assert K.polar_express(grad, buf, 0.5, out=out) is out
    assert torch.isfinite(out.float()).all()


def test_softcapped_ce_one_row_by_hand():
    logits = torch.tensor([[0.0, 7.5, -5.0]], dtype=F64)
    z = [23 / (1 + math.exp(-(v + 5) / 7.5)) for v in (0.0, 7.5, -5.0)]
    lse = math.log(sum(math.exp(v) for v in z))
    losses, got_lse = R.softcapped_ce_forward(logits, torch.tensor([1]), torch.tensor([1.0]))
    assert got_lse.item() == pytest.approx(lse, rel=1e-12)
    assert losses.item() == pytest.approx(lse - z[1], rel=1e-9)


def test_softcapped_ce_skips_out_of_range_terms():
    logits = torch.randn(3, 5, dtype=F64)
    targets = torch.tensor([4, -1, 2])
    weights = torch.tensor([1.0, 0.5, 0.0])
    losses, lse = R.softcapped_ce_forward(logits, targets, weights)
    z = R.softcap(logits)
    # row 0: k=0 → target 4, k=1 → target -1 (skipped), k=2 → weight 0 (skipped)
    assert losses[0].item() == pytest.approx((lse[0] - z[0, 4]).item())
    # row 1: k=0 → -1 (skipped), k=1 → row 2's target 2 (weight 0.5), k=2 beyond the rows
    assert losses[1].item() == pytest.approx((0.5 * (lse[1] - z[1, 2])).item())
    assert losses[2].item() == pytest.approx((lse[2] - z[2, 2]).item())


def test_softcapped_ce_backward_matches_autograd():
    logits = (torch.randn(6, 40, dtype=F64) * 4)
    targets = torch.randint(0, 40, (6,))
    weights = torch.tensor([1.0, 0.5, 0.25], dtype=F64)
    grad = torch.rand(6, dtype=F64)
    _, lse = R.softcapped_ce_forward(logits, targets, weights)
    got = R.softcapped_ce_backward(grad, logits, lse, targets, weights, grad_s=0.01)
    exact = checks._exact_logit_grad(grad, logits, targets, weights) / 0.01
    assert got.dtype == torch.float8_e5m2
    assert checks.e5m2_steps(got, exact.to(torch.float8_e5m2)) == 0


def test_fused_mlp_gradients_match_autograd_of_the_composition():
    x = torch.randn(2, 5, 8, dtype=F64, requires_grad=True)
    w1 = torch.randn(12, 8, dtype=F64, requires_grad=True)
    w2 = torch.randn(12, 8, dtype=F64, requires_grad=True)
    out = K.linear_relu_square(x, w1, w2)
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, w1, w2), g)
    plain = torch.relu(x @ w1.T) ** 2 @ w2
    expected = torch.autograd.grad(plain, (x, w1, w2), g)
    assert torch.allclose(out, plain)
    for a, b in zip(got, expected):
        assert torch.allclose(a, b)


def test_fp8_head_emulation_uses_e4m3_quantisation():
    x = torch.tensor([[0.3, -0.01]], dtype=torch.bfloat16)
    w = torch.tensor([[1.0], [2.0]], dtype=torch.bfloat16)
    logits, x_f8, w_f8 = R.fp8_head(x, w, 1.0, 1.0)
    # e4m3 has 3 mantissa bits: 0.3 → 0.3125 (0.3 is between 0.28125 and 0.3125, nearer 0.3125);
    # -0.01 → -0.009765625 (2^-7 · 1.25).
    assert x_f8.float().tolist() == [[0.3125, -0.009765625]]
    assert logits.float().item() == pytest.approx(0.3125 - 2 * 0.009765625, abs=1e-3)


@pytest.mark.parametrize("call", [
    lambda: K.transpose_copy(torch.zeros(2, 3), torch.zeros(2, 3)),
    lambda: K.transpose_add(torch.zeros(2, 3), torch.zeros(3, 2, dtype=torch.float64)),
    lambda: K.xxt(torch.zeros(4, 3), torch.zeros(3, 3)),
    lambda: K.xtx(torch.zeros(2, 4, 3, 1)),
    lambda: K.ba_plus_caa(torch.zeros(4, 3), 1.0, 1.0),
    lambda: K.polar_express(torch.zeros(4, 3), torch.zeros(3, 4), 0.9),
    lambda: K.polar_express(torch.zeros(4, 3), torch.zeros(4, 3), 0.9, tall_path="left"),
    lambda: K.linear_relu_square(torch.zeros(4, 3), torch.zeros(5, 3), torch.zeros(5, 4)),
    lambda: K.softcapped_cross_entropy(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), None,
                                       torch.zeros(4, 10), 1.0, 1.0, 1.0),
])
def test_bad_shapes_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_harness_counts_nan_as_infinite_error():
    assert checks.max_error(torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 2.0])) == float("inf")
    a = torch.tensor([0.25, -0.25, 1.0]).to(torch.float8_e5m2)
    b = torch.tensor([0.3125, -0.25, 0.75]).to(torch.float8_e5m2)   # one step up; same; two down
    assert checks.e5m2_steps(a, b) == 2


def test_reference_passes_its_own_checks():
    results = (checks.check_transposes(9, 13, "cpu") + checks.check_symmetric(2, 9, 5, "cpu")
               + checks.check_polar_express(2, 12, 6, "cpu") + checks.check_mlp(6, 8, 16, "cpu")
               + checks.check_cross_entropy(5, 16, 32, "cpu"))
    assert all(c.ok for c in results), [c for c in results if not c.ok]
    assert {c.backend for c in results} == {"torch"}


def test_compiled_model_and_optimizer_step_trace_on_cpu():
    """Dynamo traces the custom ops and both autograd Functions with fullgraph=True."""
    torch.manual_seed(0)
    x = torch.randn(16, 8, dtype=torch.bfloat16, requires_grad=True)
    w1, w2 = (torch.randn(32, 8) / 3).bfloat16(), (torch.randn(32, 8) / 3).bfloat16()
    w1.requires_grad_()
    head = (torch.randn(8, 48) * 0.05).bfloat16().requires_grad_()
    targets = torch.randint(0, 48, (16,))

    def loss_fn(x, w1, head):
        h = x + K.linear_relu_square(x, w1, w2)
        return K.softcapped_cross_entropy(h, targets, torch.tensor([1.0, 0.5]), head, 100 / 448,
                                          1.6 / 448, 0.75 / 448).sum()

    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    loss = compiled(x, w1, head)
    grads = torch.autograd.grad(loss, (x, w1, head))
    eager = loss_fn(x, w1, head)
    eager_grads = torch.autograd.grad(eager, (x, w1, head))
    assert loss.item() == pytest.approx(eager.item(), rel=1e-6)
    for a, b in zip(grads, eager_grads):
        assert torch.equal(a, b)
    step = torch.compile(lambda g, b, m: K.polar_express(g, b, m), fullgraph=True, backend="aot_eager")
    g, buf, buf2 = torch.randn(2, 20, 8), torch.zeros(2, 20, 8), torch.zeros(2, 20, 8)
    assert torch.equal(step(g, buf, torch.tensor(0.9)), K.polar_express(g, buf2, 0.9))
    assert torch.equal(buf, buf2)
