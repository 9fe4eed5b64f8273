"""The MLP's inline registration (``SPEEDTRACE_INLINE_TRITON=1``: triton_ops launching through
``wrap_triton``) on CPU.

Two parts:
- in this process (no interpreter): tracing the inline launchers with make_fx must give a graph
  that holds the Triton kernel itself, which is what lets Inductor emit its launch inline;
- in a child process with ``SPEEDTRACE_INLINE_TRITON=1 TRITON_INTERPRET=1`` (both read at import):
  the numbers, eager only. torch.compile cannot run these ops under the interpreter: wrap_triton
  hands interpreted kernels back unwrapped, so tracing launches them on fake tensors and fails.
  The compiled path is checked on the GPU by benchmarks/check_inline_mlp_gpu.py.
"""

import os

import pytest
import torch
from conftest import run_file_in_child

CHILD = os.environ.get("TRITON_INTERPRET") == "1" and os.environ.get("SPEEDTRACE_INLINE_TRITON") == "1"

if not CHILD:

    @pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU check covers the inline path there")
    def test_inline_mlp_under_the_interpreter():
        run_file_in_child(__file__, TRITON_INTERPRET="1", SPEEDTRACE_INLINE_TRITON="1")

    @pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="needs compiled-mode Triton kernels")
    @pytest.mark.parametrize("path, kernel", [("device_tma", "linear_relu_square_device_tma_kernel"),
                                              ("pointer", "linear_relu_square_pointer_kernel")])
    def test_inline_launch_is_traced_as_the_kernel(path, kernel):
        from torch._higher_order_ops.triton_kernel_wrap import (
            kernel_side_table,
            triton_kernel_wrapper_mutation,
        )
        from torch.fx.experimental.proxy_tensor import make_fx

        from speedtrace.kernels import triton_mlp

        def fwd_and_bwd(x, w, g):
            pre, post = triton_mlp.linear_relu_square_forward_inline(x, w, path)
            return pre, post, triton_mlp.relu_square_backward_inline(g, w, pre, path)

        x = torch.randn(40, 24, dtype=torch.bfloat16)
        w = torch.randn(48, 24, dtype=torch.bfloat16)
        graph = make_fx(fwd_and_bwd, tracing_mode="fake")(x, w, x).graph
        launches = [n for n in graph.nodes if n.target is triton_kernel_wrapper_mutation]
        names = [kernel_side_table.get_kernel(n.kwargs["kernel_idx"]).fn.__name__ for n in launches]
        assert names == [kernel, kernel]
        # Forward mode writes pre and post, backward mode dpre: the outputs the graph returns.
        outputs = [n for n in graph.nodes if n.op == "output"][0].args[0]
        written = {launches[0].kwargs["kwargs"]["c"], launches[0].kwargs["kwargs"]["aux"],
                   launches[1].kwargs["kwargs"]["c"]}
        assert set(outputs) == written

    def test_default_is_the_opaque_custom_op():
        from speedtrace.kernels import ops
        if os.environ.get("SPEEDTRACE_INLINE_TRITON", "0") == "1":
            pytest.skip("the switch is set in this environment")
        assert ops.mlp_forward_op is ops.linear_relu_square_fwd_op
        assert ops.mlp_backward_op is ops.relu_square_bwd_op

else:
    import speedtrace.kernels as K
    from speedtrace.kernels import checks, ops
    from speedtrace.kernels import reference as R
    from speedtrace.kernels._dispatch import last_launch

    F64 = torch.float64

    def within_reference_error(out, ref, exact):
        return checks.max_error(out, exact) <= 2 * checks.max_error(ref, exact) + 1e-6

    def test_switch_selects_the_triton_ops():
        assert ops.INLINE_TRITON
        assert ops.mlp_forward_op is ops.linear_relu_square_fwd_inline_op
        assert ops.mlp_backward_op is ops.relu_square_bwd_inline_op

    @pytest.mark.parametrize("tokens, dim, hidden, kernel, grid", [
        # Aligned rows take the device-descriptor kernel: 40 × 48 in 16 × 32 tiles is 3 × 2 tiles
        # on the interpreter's 3 "SMs" → 3 programs.
        (40, 24, 48, "linear_relu_square_device_tma_kernel", (3,)),
        # K = 20 is not a multiple of 8: pointer kernel, 16 × 16 tiles → 3 × 4 = 12 programs.
        (40, 20, 56, "linear_relu_square_pointer_kernel", (12,)),
    ])
    def test_inline_halves_match_the_reference(tokens, dim, hidden, kernel, grid):
        torch.manual_seed(3)
        x = torch.randn(tokens, dim, dtype=torch.bfloat16)
        w = (torch.randn(hidden, dim) / 5).to(torch.bfloat16)
        g = torch.randn(tokens, dim, dtype=torch.bfloat16)
        pre, post = ops.linear_relu_square_fwd_inline_op(x, w)
        assert K.last_backend() == "triton" and last_launch(kernel) == grid
        pre_r, post_r = R.linear_relu_square_forward(x, w)
        pre64 = x.to(F64) @ w.to(F64).T
        assert within_reference_error(pre, pre_r, pre64)
        assert within_reference_error(post, post_r, pre64.relu().square())
        dpre = ops.relu_square_bwd_inline_op(g, w, pre_r)
        exact = 2 * (g.to(F64) @ w.to(F64).T) * pre_r.to(F64).relu()
        assert within_reference_error(dpre, R.relu_square_backward(g, w, pre_r), exact)

    @pytest.mark.parametrize("tokens, dim, hidden", [(40, 24, 56), (33, 20, 40)])
    def test_autograd_function_through_the_inline_ops(tokens, dim, hidden):
        # FusedLinearReLUSquare's output and gradients, forward and backward on the inline ops.
        results = checks.check_mlp(tokens, dim, hidden, "cpu")
        bad = [c for c in results if not c.ok or c.backend != "triton"]
        assert not bad, bad

    def test_last_backend_reports_triton_for_the_inline_ops():
        x = torch.randn(8, 16, dtype=torch.bfloat16)
        w = torch.randn(16, 16, dtype=torch.bfloat16)
        K.linear_relu_square(x.float(), w.float(), w.float())   # fp32: the reference
        assert K.last_backend() == "torch"
        K.linear_relu_square(x, w, w)
        assert K.last_backend() == "triton"
