"""Plain-PyTorch references: the contract every Triton kernel of this package is tested against.

Each function here has the same arguments and results as the public function of the same name
in ``speedtrace.kernels`` and is what the dispatcher runs on CPU (unless the Triton interpreter is
asked for). They favour clarity over speed, but run in the kernel's dtype so that their error
against a float64 evaluation is the yardstick the Triton kernels are held to.
"""

from __future__ import annotations

import torch

# Polar Express (a, b, c) per iteration: 5 iterations, safety factor 2e-2, cushion 2 (record 233).
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
# The normalisation keeps the spectral norm just under 1: X / (|X|_F * (1 + SAFETY) + EPS).
POLAR_SAFETY = 2e-2
POLAR_EPS = 1e-6

# Softcap z = A * sigmoid((logit + B) / C).
SOFTCAP_A, SOFTCAP_B, SOFTCAP_C = 23.0, 5.0, 7.5


# ---------------------------------------------------------------------------------------------
# Transposes


def transpose_copy(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """dst = srcᵀ for 2-D src (M, N) and dst (N, M); returns dst."""
    dst.copy_(src.T)
    return dst


def transpose_add(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """dst += srcᵀ for 2-D src (M, N) and dst (N, M); returns dst."""
    dst.add_(src.T)
    return dst


# ---------------------------------------------------------------------------------------------
# Symmetric products (batched over leading dims)


def xxt(a: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = a·aᵀ for a (..., M, K), out (..., M, M); returns out."""
    torch.matmul(a, a.mT, out=out)
    return out


def xtx(a: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = aᵀ·a for a (..., M, K), out (..., K, K); returns out."""
    torch.matmul(a.mT, a, out=out)
    return out


def ba_plus_caa(a: torch.Tensor, alpha: float, beta: float, out: torch.Tensor) -> torch.Tensor:
    """out = alpha·a·aᵀ + beta·a for square symmetric a (..., M, M); returns out.

    For symmetric a this is beta·a + alpha·a², the B of a Polar Express step.
    """
    prod = torch.matmul(a, a.mT)
    torch.add(prod * alpha, a, alpha=beta, out=out)
    return out


# ---------------------------------------------------------------------------------------------
# Polar Express with Nesterov momentum


def nesterov(grad: torch.Tensor, momentum_buffer: torch.Tensor, momentum) -> torch.Tensor:
    """buf ← lerp(buf, g, 1−μ) in place; returns lerp(g, buf, μ), all in the buffer's dtype (fp32)."""
    if isinstance(momentum, torch.Tensor):
        momentum = momentum.to(device=momentum_buffer.device, dtype=momentum_buffer.dtype)
    g = grad.to(momentum_buffer.dtype)
    momentum_buffer.lerp_(g, 1 - momentum)
    return g.lerp(momentum_buffer, momentum)


def polar_iterations(x: torch.Tensor, tall_path: str = "xtx", dtype=torch.bfloat16) -> torch.Tensor:
    """Polar Express on a batch (n, r, c) (or a single matrix), computed and returned in dtype.

    Wide or square: A = XXᵀ, X ← aX + (bA + cA²)X. Tall (r > c) with ``tall_path="xtx"``:
    A = XᵀX, X ← aX + X(bA + cA²). ``tall_path="transpose"`` runs the wide path on Xᵀ.
    """
    x = x.to(dtype)
    transposed = x.size(-2) > x.size(-1) and tall_path == "transpose"
    if transposed:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * (1 + POLAR_SAFETY) + POLAR_EPS)
    tall = x.size(-2) > x.size(-1)
    for a, b, c in POLAR_EXPRESS_COEFFS:
        gram = x.mT @ x if tall else x @ x.mT
        poly = b * gram + c * (gram @ gram)
        x = a * x + (x @ poly if tall else poly @ x)
    return x.mT if transposed else x


def polar_express(grad, momentum_buffer, momentum, *, tall_path="xtx", fused_momentum=True, out=None,
                  dtype=torch.bfloat16):
    """Nesterov momentum (in the buffer's dtype, buffer updated in place) then Polar Express.

    The iterations run in ``dtype`` (bf16 as the kernels; fp64 gives the tests' yardstick).
    ``fused_momentum`` only decides where the parent's trainer ran the lerps; the math is the same.
    """
    del fused_momentum
    g = nesterov(grad, momentum_buffer, momentum)
    x = polar_iterations(g if dtype == torch.float64 else g.to(torch.bfloat16), tall_path, dtype)
    if out is None:
        return x
    out.copy_(x)
    return out


# ---------------------------------------------------------------------------------------------
# MLP: relu(x·w1ᵀ)²·w2


def linear_relu_square_forward(x2d: torch.Tensor, w1: torch.Tensor):
    """(pre, post) with pre = x·w1ᵀ rounded to x's dtype and post = relu(pre)² (same dtype)."""
    pre = x2d @ w1.T
    post = torch.relu(pre).square()
    return pre, post


def relu_square_backward(grad2d: torch.Tensor, w2: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """dpre = 2·(grad·w2ᵀ)·relu(pre), each product rounded to grad's dtype as the kernel does."""
    dpost = (grad2d @ w2.T).to(grad2d.dtype)
    return 2 * dpost * torch.relu(pre)


def linear_relu_square(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """relu(x·w1ᵀ)²·w2 for x (..., K), w1 and w2 (N, K): autograd-differentiable composition."""
    return torch.relu(x @ w1.T).square() @ w2


# ---------------------------------------------------------------------------------------------
# FP8 head and softcapped cross-entropy with multi-token prediction


def fp8_head(x: torch.Tensor, w: torch.Tensor, x_s: float, w_s: float):
    """Logits of x (n, K) times w (K, V) through e4m3: returns (logits bf16, x_f8, w_f8).

    Emulates ``torch._scaled_mm`` for CPUs and pre-Ada GPUs: the same quantisation (x/x_s and
    w/w_s cast to float8_e4m3fn), the product accumulated in fp32, rescaled by x_s·w_s and rounded
    to bf16. Only the accumulation order (and fast-accumulation) differs from the GPU's.
    """
    x_f8 = x.div(x_s).to(torch.float8_e4m3fn)
    w_f8 = w.div(w_s).to(torch.float8_e4m3fn)
    logits = (x_f8.float() @ w_f8.float()) * (x_s * w_s)
    return logits.bfloat16(), x_f8, w_f8


def _wide(t: torch.Tensor) -> torch.Tensor:
    """t in fp32, or in fp64 when it already is (the float64 yardstick of the tests)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def softcap(logits: torch.Tensor, A=SOFTCAP_A, B=SOFTCAP_B, C=SOFTCAP_C) -> torch.Tensor:
    """z = A·σ((logits + B)/C), in fp32 (fp64 for fp64 logits)."""
    return A * torch.sigmoid((_wide(logits) + B) / C)


def _mtp_weight_matrix(targets, mtp_weights, n_rows, n_cols, dtype, forward=True):
    """(weights (n_rows, n_cols), S_w (n_rows,)): weights[row, target[row+k]] += w_k.

    Only k with row+k < n_rows count. The forward also drops w_k <= 0 and targets outside
    [0, n_cols); the backward's S_w keeps every in-range k (the record's backward does so).
    Written without data-dependent shapes, so that torch.compile(fullgraph=True) can trace it.
    """
    weights = torch.zeros(n_rows, n_cols, dtype=dtype, device=targets.device)
    s_w = torch.zeros(n_rows, dtype=dtype, device=targets.device)
    rows = torch.arange(n_rows, device=targets.device)
    for k in range(mtp_weights.shape[0]):
        in_range = rows + k < n_rows
        tgt = targets[(rows + k).clamp(max=n_rows - 1)].long()
        w = mtp_weights[k].to(dtype)
        hit = in_range & (tgt >= 0) & (tgt < n_cols)
        if forward:
            hit = hit & (w > 0)
        weights.scatter_add_(1, tgt.clamp(0, n_cols - 1)[:, None], torch.where(hit, w, 0)[:, None])
        s_w += torch.where(in_range, w, 0)
    return weights, s_w


def softcapped_ce_forward(logits, targets, mtp_weights, A=SOFTCAP_A, B=SOFTCAP_B, C=SOFTCAP_C):
    """(losses, lse), fp32 per row: loss_row = Σ_k w_k·(lse − z[target[row+k]]) over valid k.

    A term is skipped when w_k ≤ 0, row+k ≥ n_rows or the target is outside [0, n_cols).
    """
    z = softcap(logits, A, B, C)
    lse = torch.logsumexp(z, dim=-1)
    weights, _ = _mtp_weight_matrix(targets, mtp_weights, *z.shape, z.dtype)
    losses = weights.sum(-1) * lse - (weights * z).sum(-1)
    return losses, lse


def softcapped_ce_backward(grad_losses, logits, lse, targets, mtp_weights, grad_s,
                           A=SOFTCAP_A, B=SOFTCAP_B, C=SOFTCAP_C) -> torch.Tensor:
    """d loss / d logits divided by grad_s, as float8_e5m2 (n_rows, n_cols).

    dz = g·(S_w·softmax(z) − Σ_k w_k·onehot(target[row+k])), where S_w sums w_k over the k with
    row+k < n_rows (whatever their sign or target, as in the record), and
    dlogit = dz·(A/C)·σ(u)(1−σ(u)) with u = (logit + B)/C.
    """
    n_rows, n_cols = logits.shape
    u = (_wide(logits) + B) / C
    sig = torch.sigmoid(u)
    p = torch.exp(A * sig - lse[:, None].to(u.dtype))
    onehots, s_w = _mtp_weight_matrix(targets, mtp_weights, n_rows, n_cols, u.dtype, forward=False)
    dz = grad_losses.to(u.dtype)[:, None] * (s_w[:, None] * p - onehots)
    dlogit = dz * (A / C) * sig * (1 - sig)
    return (dlogit / grad_s).to(torch.float8_e5m2)


def fp8_head_backward(dlogit_f8, x_f8, w_f8, x_s, w_s, grad_s):
    """(dx bf16 (n, K), dw fp32 (K, V)) from the e5m2 logits gradient scaled by 1/grad_s."""
    d = dlogit_f8.float()
    dx = (d @ w_f8.float().T) * (grad_s * w_s)
    dw = (x_f8.float().T @ d) * (x_s * grad_s)
    return dx.bfloat16(), dw


def softcapped_cross_entropy(x, targets, mtp_weights, lm_head_weight, x_s, w_s, grad_s,
                             A=SOFTCAP_A, B=SOFTCAP_B, C=SOFTCAP_C) -> torch.Tensor:
    """Per-row fp32 losses of the FP8 head plus softcapped MTP cross-entropy (forward only)."""
    if mtp_weights is None:
        mtp_weights = torch.ones(1, dtype=torch.float32, device=x.device)
    logits, _, _ = fp8_head(x, lm_head_weight, x_s, w_s)
    losses, _ = softcapped_ce_forward(logits, targets, mtp_weights, A, B, C)
    return losses
