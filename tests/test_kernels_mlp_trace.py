"""The MLP ops are triton_ops: tracing their launchers must give a graph that holds the Triton
kernel itself (not an opaque call), which is what lets Inductor emit the launch in its generated
code. Their numbers are checked under the interpreter (test_kernels_triton.py) and on the GPU,
eager and compiled (tests/gpu/test_kernels_gpu.py).
"""

import os

import pytest
import torch


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="needs compiled-mode Triton kernels")
@pytest.mark.parametrize("path, kernel", [("tma", "linear_relu_square_tma_kernel"),
                                          ("pointer", "linear_relu_square_pointer_kernel")])
def test_launch_is_traced_as_the_kernel(path, kernel):
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table, triton_kernel_wrapper_mutation
    from torch.fx.experimental.proxy_tensor import make_fx

    from speedtrace.kernels import triton_mlp

    def fwd_and_bwd(x, w, g):
        pre, post = triton_mlp.linear_relu_square_forward(x, w, path)
        return pre, post, triton_mlp.relu_square_backward(g, w, pre, path)

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


class _Captured(Exception):
    pass


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="needs compiled-mode Triton kernels")
def test_ops_trace_into_their_kernels(monkeypatch):
    # Through the registered ops (what FusedLinearReLUSquare calls) and AOTAutograd, as
    # torch.compile traces them: a custom_op would stay one opaque node; a triton_op is traced
    # down to its kernel launches. CPU tensors would pick the reference, so the dispatcher is
    # told that Triton runs; the graph is captured, never run (there is no GPU).
    from functorch.compile import aot_function
    from torch._higher_order_ops.triton_kernel_wrap import triton_kernel_wrapper_functional

    from speedtrace.kernels import ops
    monkeypatch.setattr(ops, "use_triton", lambda *args: True)
    graphs = []

    def capture(gm, inputs):
        graphs.append(gm.graph)
        raise _Captured

    def fwd_and_bwd(x, w, g):
        pre, post = ops.linear_relu_square_fwd_op(x, w)
        return pre, post, ops.relu_square_bwd_op(g, w, pre)

    x = torch.randn(40, 24, dtype=torch.bfloat16)
    w = torch.randn(48, 24, dtype=torch.bfloat16)
    with pytest.raises(_Captured):
        aot_function(fwd_and_bwd, fw_compiler=capture)(x, w, x)
    targets = [n.target for n in graphs[0].nodes if n.op == "call_function"]
    assert targets.count(triton_kernel_wrapper_functional) == 2
    assert not [t for t in targets if "speedtrace" in str(t)]
