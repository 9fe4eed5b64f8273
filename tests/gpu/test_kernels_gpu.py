"""speedtrace.kernels on the GPU at the trainer's shapes, eagerly and inside torch.compile.

Run on the lent GPU machine: pytest -m gpu tests/gpu/test_kernels_gpu.py
"""

import pytest
import torch

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_every_kernel_at_trainer_shapes(compiled):
    import kernel_checks as checks

    results = checks.trainer_shape_checks("cuda", compiled=compiled)
    bad = [c for c in results if not c.ok or c.backend != "triton"]
    assert not bad, bad


def test_hopper_takes_the_descriptor_path():
    from speedtrace.kernels import triton_mlp
    from speedtrace.kernels._dispatch import last_launch

    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("tensor descriptors need sm_90")
    x = torch.randn(1000, 768, dtype=torch.bfloat16, device="cuda")
    w = torch.randn(3072, 768, dtype=torch.bfloat16, device="cuda") * 0.02
    assert triton_mlp.default_path(x, w) == "tma"
    pre, post = triton_mlp.linear_relu_square_forward(x, w)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    assert last_launch("linear_relu_square_tma_kernel") == (min(sms, 8 * 12),)
    pointer_pre, pointer_post = triton_mlp.linear_relu_square_forward(x, w, path="pointer")
    # Same fp32 accumulation, possibly in another order inside the MMA: equal to a bf16 rounding.
    torch.testing.assert_close(pre, pointer_pre, rtol=2 ** -7, atol=1e-3)
    torch.testing.assert_close(post, pointer_post, rtol=2 ** -6, atol=1e-3)


def test_e5m2_gradient_is_the_exact_cast_on_gpu():
    import kernel_checks as checks

    from speedtrace.kernels import ops
    from speedtrace.kernels import reference as R

    logits = (torch.randn(64, 50304, device="cuda") * 6).to(torch.bfloat16)
    targets = torch.randint(0, 50304, (64,), device="cuda")
    weights = torch.tensor([1.0, 0.5, 0.25], device="cuda")
    _, lse = ops.softcapped_ce_fwd_op(logits, targets, weights, 23.0, 5.0, 7.5)
    grad = torch.rand(64, device="cuda")
    d = ops.softcapped_ce_bwd_op(grad, logits, lse, targets, weights, 1e-3, 23.0, 5.0, 7.5)
    exact = R.softcapped_ce_backward(grad.double(), logits.double(), lse.double(), targets, weights, 1e-3)
    assert checks.e5m2_steps(d, exact) <= 1
