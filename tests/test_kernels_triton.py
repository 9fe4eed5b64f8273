"""The Triton kernels on CPU under Triton's interpreter, at small shapes that are not multiples of
the tiles, on fresh random inputs each run.

Triton decides whether to interpret when a kernel is decorated, and pytest's process may already
have imported it, so an ordinary run collects one driver test that re-runs this file in a child
process with TRITON_INTERPRET=1; the child collects the real tests instead.
"""

import os

import pytest
import torch
from conftest import run_file_in_child

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

if not INTERPRETED:

    @pytest.mark.slow
    @pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU suite covers the kernels there")
    def test_triton_kernels_under_the_interpreter():
        run_file_in_child(__file__, TRITON_INTERPRET="1")

else:
    import kernel_checks as checks

    import speedtrace.kernels as K
    from speedtrace.kernels import reference as R
    from speedtrace.kernels._dispatch import last_launch

    def assert_ok(results):
        bad = [c for c in results if not c.ok or c.backend != "triton"]
        assert not bad, bad

    @pytest.mark.parametrize("m, n", [(37, 70), (16, 32), (1, 5)])
    def test_transposes(m, n):
        assert_ok(checks.check_transposes(m, n, "cpu"))

    def test_transposes_fp32():
        assert_ok(checks.check_transposes(19, 33, "cpu", dtype=torch.float32))

    @pytest.mark.parametrize("n, rows, cols", [(2, 40, 24), (2, 24, 40), (1, 16, 16)])
    def test_symmetric_products(n, rows, cols):
        assert_ok(checks.check_symmetric(n, rows, cols, "cpu"))

    def test_symmetric_grid_is_the_lower_triangle():
        # The interpreter's tiles are 16 wide: 40 rows → 3 tiles a side → 3·4/2 = 6 programs;
        # 24 columns → 2 tiles → 3 programs; per matrix of the batch of 5.
        a = torch.randn(5, 40, 24, dtype=torch.bfloat16)
        K.xxt(a)
        assert last_launch("xxt_kernel") == (6, 5)
        K.xtx(a)
        assert last_launch("xtx_kernel") == (3, 5)
        K.ba_plus_caa(K.xxt(a), 0.5, -1.0)
        assert last_launch("ba_plus_caa_kernel") == (6, 5)

    SMALL_SYM = dict(BLOCK=16, BLOCK_K=16, num_warps=4, num_stages=1)

    def assert_correct(results):
        # The kernel modules are called directly (no dispatcher), so only the numbers count.
        bad = [c for c in results if not c.ok]
        assert not bad, bad

    @pytest.mark.parametrize("pair, per_sm", [(2, 0), (1, 2), (2, 2)])
    def test_symmetric_launch_variants(pair, per_sm):
        # PAIR 2 computes two neighbouring blocks per program (dropping the one above the
        # diagonal); PROGRAMS_PER_SM > 0 walks every tile of the batch from a few programs.
        from speedtrace.kernels import triton_symmetric as S
        cfg = dict(SMALL_SYM, PAIR=pair, PROGRAMS_PER_SM=per_sm)
        assert_correct(checks.check_symmetric(3, 70, 33, "cpu", xxt=lambda a, o: S.xxt(a, o, cfg),
                                              xtx=lambda a, o: S.xtx(a, o, cfg),
                                              ba_plus_caa=lambda a, al, be, o: S.ba_plus_caa(a, al, be, o, cfg)))
        S.xxt(torch.randn(5, 40, 24, dtype=torch.bfloat16), torch.empty(5, 40, 40, dtype=torch.bfloat16), cfg)
        # 40 rows → block rows 0, 1, 2. Pairs: rows 0 and 1 need one tile each, row 2 needs two
        # (blocks 0-1 and 2-3): 4 tiles per matrix. Persistent: 2 programs × 3 interpreter "SMs".
        expected = {(2, 0): (4, 5), (1, 2): (6, 1), (2, 2): (6, 1)}[(pair, per_sm)]
        assert last_launch("xxt_kernel") == expected

    @pytest.mark.parametrize("m_fastest, per_sm, stages", [(False, 0, 1), (True, 2, 2), (False, 1, 3)])
    def test_transpose_launch_variants(m_fastest, per_sm, stages):
        from speedtrace.kernels import triton_transpose as T
        cfg = dict(BLOCK_M=16, BLOCK_N=32, num_warps=4, M_FASTEST=m_fastest, PROGRAMS_PER_SM=per_sm,
                   num_stages=stages)
        assert_correct(checks.check_transposes(37, 70, "cpu", copy=lambda s, d: T.transpose_copy(s, d, cfg),
                                               add=lambda s, d: T.transpose_add(s, d, cfg)))
        # 37 × 70 in 16 × 32 tiles: 3 × 3 = 9 tiles; persistent grids stop at per_sm × 3 "SMs".
        assert last_launch("transpose_add_kernel") == ((9,) if per_sm == 0 else (3 * per_sm,))

    def test_gemms_leave_non_bf16_inputs_to_the_reference():
        K.xxt(torch.randn(2, 20, 8))
        assert K.last_backend() == "torch"
        K.xxt(torch.randn(2, 20, 8, dtype=torch.bfloat16))
        assert K.last_backend() == "triton"

    @pytest.mark.parametrize("n, rows, cols, tall_path, fused", [
        (2, 24, 40, "xtx", True),          # wide
        (2, 40, 24, "xtx", True),          # tall, record 233
        (2, 40, 24, "transpose", False),   # tall, the parent's path and eager momentum
        (1, 33, 33, "xtx", True),          # square
    ])
    def test_polar_express(n, rows, cols, tall_path, fused):
        assert_ok(checks.check_polar_express(n, rows, cols, "cpu", tall_path, fused))

    @pytest.mark.parametrize("tokens, dim, hidden, kernel, grid", [
        # Rows 16-byte aligned: the descriptor kernel, 40 × 56 in 16 × 32 tiles = 6 tiles walked by
        # the interpreter's 3 "SMs" → 3 programs (the backward's dpre has the same shape).
        (40, 24, 56, "linear_relu_square_tma_kernel", (3,)),
        # K = 20 is not a multiple of 8: the pointer kernel, 16 × 16 tiles → 3 × 4 = 12 programs.
        (40, 20, 56, "linear_relu_square_pointer_kernel", (12,)),
    ])
    def test_mlp_autograd_function(tokens, dim, hidden, kernel, grid):
        # FusedLinearReLUSquare forward and backward through the registered ops.
        assert_ok(checks.check_mlp(tokens, dim, hidden, "cpu"))
        assert last_launch(kernel) == grid

    def test_cross_entropy():
        assert_ok(checks.check_cross_entropy(9, 32, 150, "cpu"))
        assert last_launch("softcapped_ce_fwd_kernel") == (9,)
        assert last_launch("softcapped_ce_bwd_kernel") == (9,)

    def test_e5m2_rounding_is_to_nearest_even():
        # The interpreter's own cast loses the carry; the kernel's bit rounding must not.
        from speedtrace.kernels import ops
        logits = (torch.randn(4, 300) * 8).to(torch.bfloat16)
        targets = torch.randint(0, 300, (4,))
        weights = torch.tensor([1.0])
        _, lse = ops.softcapped_ce_fwd_op(logits, targets, weights, 23.0, 5.0, 7.5)
        grad = torch.rand(4) * 50
        d = ops.softcapped_ce_bwd_op(grad, logits, lse, targets, weights, 1e-3, 23.0, 5.0, 7.5)
        exact = R.softcapped_ce_backward(grad.double(), logits.double(), lse.double(), targets, weights, 1e-3)
        assert checks.e5m2_steps(d, exact) <= 1

    def test_cross_entropy_backward_repeated_and_bad_targets():
        # The backward rewrites the target columns after its main loop: a token that is the
        # target of several of the next n_predict positions gets their summed weights (row 0:
        # 1 + 0.5 + 0.25 at column 7), and a target outside [0, n_cols) (80, −1) writes nothing,
        # not even into the next row.
        from speedtrace.kernels import ops
        logits = (torch.randn(6, 80) * 6).to(torch.bfloat16)
        targets = torch.tensor([7, 7, 7, 80, -1, 3])
        weights = torch.tensor([1.0, 0.5, 0.25])
        _, lse = ops.softcapped_ce_fwd_op(logits, targets, weights, 23.0, 5.0, 7.5)
        grad = torch.rand(6) + 0.5
        d = ops.softcapped_ce_bwd_op(grad, logits, lse, targets, weights, 1e-3, 23.0, 5.0, 7.5)
        exact = R.softcapped_ce_backward(grad.double(), logits.double(), lse.double(), targets, weights, 1e-3)
        assert checks.e5m2_steps(d, exact) <= 1
        assert d[0, 7].float() < 0 < d[2, 0].float()   # picked weights outweigh S_w·p; row 2 untouched by row 1

    def test_inside_torch_compile():
        torch.manual_seed(1)
        x = torch.randn(24, 16, dtype=torch.bfloat16, requires_grad=True)
        w1 = (torch.randn(40, 16) / 4).to(torch.bfloat16).requires_grad_()
        w2 = (torch.randn(40, 16) / 4).to(torch.bfloat16)
        head = (torch.randn(16, 72) * 0.05).to(torch.bfloat16).requires_grad_()
        targets = torch.randint(0, 72, (24,))

        def loss_fn(x, w1, head):
            h = x + K.linear_relu_square(x, w1, w2)
            return K.softcapped_cross_entropy(h, targets, torch.tensor([1.0, 0.5]), head,
                                              100 / 448, 1.6 / 448, 0.75 / 448).sum()

        compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
        loss = compiled(x, w1, head)
        grads = torch.autograd.grad(loss, (x, w1, head))
        assert K.last_backend() == "triton"
        eager = loss_fn(x, w1, head)
        assert loss.item() == pytest.approx(eager.item(), rel=1e-6)
        for a, b in zip(grads, torch.autograd.grad(eager, (x, w1, head))):
            assert torch.equal(a, b)
