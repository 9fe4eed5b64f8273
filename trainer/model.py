"""The record-233 GPT: parameter banks and the flattened forward (docs/trainer.md, "The model").

Forward map (T tokens of one packed micro-batch, B = 1 dropped; L = 11 layers):

    emb  = embed(tok);  emb[t] += smear·σ(gate·emb[t, :12])·emb[t-1]      (t ≥ 1)
    x0   = norm(emb);   B = bigram_embed(hash)
    lane0 = x0 + bigram_λ[0]·B
    layers 0-5  a = Attn(norm(lane0));  lane0 = rA·lane0 + a + inj[i];  (3: skip = lane0)
                lane0 = rM·lane0 + pM0·MLP(norm(lane0))
    layer 6     lane0 += σ(skip_λ)·2σ(skip_gate·x0[:12])·skip;  lane0 = rM·lane0 + pM0·MLP(norm(lane0))
    layers 7-10 (lane1 = lane0 at 7)  a = Attn(norm(lane0))
                lane0 = rA·lane0 + pA0·a + inj[i];  lane1 = rA·lane1 + pA1·a
                m = MLP(norm(lane1));  lane0 = rM·lane0 + pM0·m;  lane1 = rM·lane1 + pM1·m
                (7: x_bo = lane0)
    x = norm((lane0 + lane1)/2 − backout_λ·x_bo)
    training: Σ_t Σ_k w_k·CE(softcap(FP8 x·lm_head), target[t+k]) · grad_scale
    eval:     mean CE(softcap(bf16 x·lm_head), target)

with inj[i] = x0_λ[i]·x0 + bigram_λ[i]·B (no bigram term at layer 0), MLP = relu(x·c_fcᵀ)²·c_proj,
and Attn = QK-normed, rotary (YaRN) attention with weights from ``attn_bank`` (``_attention``).
Every 12-wide gate product w·x[:12] goes through ``GateLogits``: F.linear's math with one cuBLAS
call per gate instead of three.
Which layer does what is ``layer_plan(cfg)``, the single source used by the forward and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from speedtrace.kernels import linear_relu_square, softcapped_cross_entropy
from speedtrace.trainer.attention import DocumentMasks, attend, default_backend
from speedtrace.trainer.config import ModelConfig, TrainConfig, check_reverts
from speedtrace.trainer.rotary import Yarn

# FP8 head scales of the record: x/x_s and w/w_s fit e4m3, the logits gradient /grad_s fits e5m2.
FP8_X_SCALE = 100 / 448
FP8_W_SCALE = 1.6 / 448
FP8_GRAD_SCALE = 0.75 / 448


def init_values(cfg: TrainConfig | None = None) -> dict[str, float]:
    """The ``*_init`` and ``*_init_std`` fields of ``cfg`` (default: the record's values).

    The init constants live in TrainConfig with every other constant of the record; they are
    read from the instance, so a config that overrides one gets that value.
    """
    if cfg is None:
        return {f.name: f.default for f in fields(TrainConfig) if _is_init(f.name)}
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if _is_init(f.name)}


def _is_init(name: str) -> bool:
    return name.endswith(("_init", "_init_std"))


# Scalars after the per-layer (sa_qkv, sa_o) pairs.
SMEAR, BACKOUT, SKIP = 0, 1, 2
NUM_EXTRA_SCALARS = 3


def norm(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free RMSNorm over the last dim (F.rms_norm's default eps)."""
    return F.rms_norm(x, (x.size(-1),))


class GateLogits(torch.autograd.Function):
    """x (..., G) · wᵀ for a gate's weight w (n, G), the same product as F.linear, with the
    forward and the input gradient written element-wise (accumulated in fp32, like a matmul).

    The gates are 12 wide with one to six outputs, and there are 17 a micro-batch. As matmuls
    each costs three cuBLAS calls, whose host time dwarfs their GPU work; element-wise,
    Inductor folds the forward and the input gradient into its own kernels. The weight gradient
    stays one matmul: a compiled reduction over the tokens is much slower on the GPU
    (benchmarks/RESULTS.md has the timings).
    """

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        acc = torch.promote_types(x.dtype, torch.float32)
        return (x.to(acc).unsqueeze(-2) * w.to(acc)).sum(-1).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        acc = torch.promote_types(x.dtype, torch.float32)
        grad_x = (grad.to(acc).unsqueeze(-1) * w.to(acc)).sum(-2).to(x.dtype)
        grad_w = grad.reshape(-1, w.size(0)).mT @ x.reshape(-1, w.size(1))
        return grad_x, grad_w


gate_logits = GateLogits.apply


def init_bound(model_dim: int) -> float:
    """Uniform init bound of the banks: √3·std with std = 0.5·dim^-0.5."""
    return 3 ** 0.5 * 0.5 * model_dim ** -0.5


def num_scalars(num_layers: int, world_size: int) -> int:
    """Length of ``scalars``: a (qkv, o) pair per layer, 3 extras, padded to a multiple of world_size."""
    n = 2 * num_layers + NUM_EXTRA_SCALARS
    return n + (-n) % world_size


@dataclass(frozen=True)
class Layer:
    """What layer ``index`` does in the forward."""

    index: int
    attn_slab: int | None        # row of attn_bank and attn_gate_bank; None = MLP-only layer
    paired: bool                 # paired heads over a 2T stream
    long_window: bool            # long window, and key offset of the stationary half
    ve: int | None               # value-embedding table and ve_gate_bank row
    parallel: bool               # two residual lanes


def layer_plan(cfg: ModelConfig) -> tuple[Layer, ...]:
    plan = []
    for i in range(cfg.num_layers):
        has_attn = i != cfg.mlp_only_layer
        plan.append(Layer(
            index=i,
            attn_slab=(i - (i > cfg.mlp_only_layer)) if has_attn else None,
            paired=i in cfg.paired_layers,
            long_window=i in cfg.long_window_layers,
            ve=cfg.ve_layers.index(i) if i in cfg.ve_layers else None,
            parallel=i >= cfg.parallel_start,
        ))
    return tuple(plan)


class CastedLinearT(nn.Module):
    """The lm_head's weight, stored transposed as (in, out) so its gradient accumulates cheaply."""

    def __init__(self, in_features: int, out_features: int, dtype=torch.bfloat16):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features, dtype=dtype))


class GPT(nn.Module):
    """The record's model.

    cfg: the shapes (``TrainConfig.model``).
    world_size: pads ``scalars`` to a multiple of it, for sharding.
    reverts: may hold "mlp-select" (the parent's MLP bank access); the other changes are the
        optimizer's and are accepted and ignored here.
    init: the TrainConfig whose ``*_init`` values set the initial weights (default: the
        record's values; ``for_training`` passes the run's config).
    """

    def __init__(self, cfg: ModelConfig, *, world_size: int = 1, reverts: frozenset[str] = frozenset(),
                 init: TrainConfig | None = None):
        super().__init__()
        if cfg.num_heads * cfg.head_dim != cfg.model_dim:
            raise ValueError(f"num_heads·head_dim = {cfg.num_heads * cfg.head_dim} != model_dim {cfg.model_dim}")
        if cfg.num_heads % 2:
            raise ValueError("paired-head layers need an even number of heads")
        self.cfg = cfg
        self.reverts = check_reverts(reverts)
        inits = init_values(init)
        self.plan = layer_plan(cfg)
        self.attn_backend: str | None = None   # None: chosen by device (attention.default_backend)
        L, D, V, H, G = cfg.num_layers, cfg.model_dim, cfg.vocab_size, cfg.num_heads, cfg.gate_dim
        bf16 = torch.bfloat16
        bound = init_bound(D)

        self.smear_gate = nn.Linear(G, 1, bias=False, dtype=bf16)
        self.skip_gate = nn.Linear(G, 1, bias=False, dtype=bf16)
        self.value_embeds = nn.Parameter(torch.empty(cfg.num_value_embeds * V, D, dtype=bf16))
        self.attn_gate_bank = nn.Parameter(torch.zeros(cfg.num_attn_layers, H, G, dtype=bf16))
        self.ve_gate_bank = nn.Parameter(torch.zeros(cfg.num_value_embeds, H, G, dtype=bf16))
        self.attn_bank = nn.Parameter(torch.empty(cfg.num_attn_layers, 4 * D, D, dtype=bf16))
        # One padding layer makes the MLP bank an even 24 matrices for 8-way sharding.
        self.mlp_bank = nn.Parameter(torch.empty(L + 1, 2, cfg.mlp_dim, D, dtype=bf16))
        self.lm_head = CastedLinearT(D, V, dtype=bf16)
        self.embed = nn.Embedding(V, D, dtype=bf16)
        self.bigram_embed = nn.Embedding(cfg.bigram_vocab, D, dtype=bf16)
        post = torch.ones(L, 2, 2)
        post[cfg.parallel_start:, 0, 1] = inits["post_lambda_lane1_init"]
        self.post_lambdas = nn.Parameter(post)
        self.x0_lambdas = nn.Parameter(torch.zeros(L))
        self.bigram_lambdas = nn.Parameter(torch.full((L,), inits["bigram_lambda_init"]))
        self.resid_lambdas = nn.Parameter(torch.full((L, 2), inits["resid_lambda_init"]))
        scalars = torch.ones(num_scalars(L, world_size))
        scalars[0:2 * L:2] = 0.5
        scalars[2 * L + SMEAR] = 0.0
        scalars[2 * L + BACKOUT] = 0.5
        scalars[2 * L + SKIP] = -1.5
        self.scalars = nn.Parameter(scalars)

        with torch.no_grad():
            nn.init.zeros_(self.smear_gate.weight)
            nn.init.zeros_(self.skip_gate.weight)
            self.attn_bank.uniform_(-bound, bound)
            self.mlp_bank[:, 0].uniform_(-bound, bound)
            self.mlp_bank[:, 1].zero_()
            self.value_embeds.normal_(0.0, inits["value_embed_init_std"])
            self.lm_head.weight.normal_(0.0, inits["lm_head_init_std"])
            self.embed.weight.copy_(self.lm_head.weight.T)
            self.bigram_embed.weight.zero_()

        self.yarn = Yarn(cfg.head_dim, cfg.max_seq_len)
        self.yarn_paired = Yarn(cfg.head_dim, cfg.max_seq_len, paired=True)

    @classmethod
    def for_training(cls, cfg: TrainConfig, *, world_size: int = 1) -> "GPT":
        """The model of a run of ``cfg``: its shapes, reverts and init values."""
        return cls(cfg.model, world_size=world_size, reverts=cfg.reverts, init=cfg)

    # -- YaRN ----------------------------------------------------------------------------------

    def apply_yarn(self, old_long_tokens: int, new_long_tokens: int) -> None:
        """Extend both rotary variants for a long window going from old to new tokens."""
        self.yarn.extend_window(old_long_tokens, new_long_tokens)
        self.yarn_paired.extend_window(old_long_tokens, new_long_tokens)

    def reset_yarn(self) -> None:
        self.yarn.reset()
        self.yarn_paired.reset()

    # -- layers --------------------------------------------------------------------------------

    def _mlp_weights(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """(c_fc per layer, c_proj per layer), each (mlp_dim, model_dim)."""
        if "mlp-select" in self.reverts:
            # parent 699e93c8: a select along dim 1, whose backward writes a zero-filled full bank
            return self.mlp_bank[:, 0].unbind(0), self.mlp_bank[:, 1].unbind(0)
        flat = self.mlp_bank.flatten(0, 1).unbind(0)
        return flat[0::2], flat[1::2]

    def _attention(self, x: torch.Tensor, layer: Layer, w: torch.Tensor, sa: torch.Tensor,
                   gate_w: torch.Tensor, ve: torch.Tensor | None, ve_gate_w: torch.Tensor | None,
                   window: int, masks: DocumentMasks) -> torch.Tensor:
        """One attention sublayer on x = norm(lane0), (T, D); weights w (4D, D) = [Wq; Wk; Wv; Wo]."""
        cfg = self.cfg
        T, D, H, Dh = x.size(0), cfg.model_dim, cfg.num_heads, cfg.head_dim
        half_gate = cfg.gate_dim // 2
        q, k, v = F.linear(x, sa[0] * w[:3 * D]).view(T, 3 * H, Dh).chunk(3, dim=-2)
        q, k = norm(q), norm(k)
        if not layer.paired:
            yarn = self.yarn
            q, k = yarn.rotary(q), yarn.rotary(k)
            if layer.long_window:
                k = shift_stationary_half(k)
            if ve is not None:
                g = 2 * torch.sigmoid(gate_logits(torch.cat([x[:, :half_gate], ve[:, :half_gate]], dim=-1), ve_gate_w))
                v = v + g.view(T, H, 1) * ve.view(T, H, Dh)
        else:
            yarn = self.yarn_paired
            q = yarn.rotary(q.reshape(T, H // 2, 2 * Dh)).view(2 * T, H // 2, Dh)
            k = yarn.rotary(k.reshape(T, H // 2, 2 * Dh)).view(2 * T, H // 2, Dh)
            v = v.reshape(2 * T, H // 2, Dh)
            if ve is not None:
                g = 2 * torch.sigmoid(gate_logits(x[:, :cfg.gate_dim], ve_gate_w))
                v = v + g.view(2 * T, H // 2, 1) * ve.view(2 * T, H // 2, Dh)
        y = attend(q, k, v, masks, window=window, scale=yarn.attn_scale, paired=layer.paired)
        y = y.reshape(T, H, Dh) * torch.sigmoid(gate_logits(x[:, :cfg.gate_dim], gate_w)).view(T, H, 1)
        return F.linear(y.reshape(T, D), sa[1] * w[3 * D:])

    def _trunk(self, inputs: torch.Tensor, cu_seqlens: torch.Tensor, bigram_ids: torch.Tensor,
               windows: tuple[int, int], max_seq_len: int) -> torch.Tensor:
        """Final normalised hidden states (T, D) of the packed token stream."""
        cfg = self.cfg
        T, L = inputs.numel(), cfg.num_layers
        if inputs.ndim != 1 or T % 16:
            raise ValueError(f"inputs must be a 1-D stream of a multiple of 16 tokens, got {tuple(inputs.shape)}")
        short, long = windows
        masks = DocumentMasks(cu_seqlens, T, max_seq_len, self.attn_backend or default_backend(inputs.device))
        dt = self.embed.weight.dtype

        # Lambdas: fp32 parameters, used in the compute dtype; whole tensors are cast and unbound
        # so unused entries receive zero gradients.
        scalars = self.scalars.to(dt)
        sa = scalars[:2 * L].view(L, 2).unbind(0)
        smear_l, backout_l, skip_l = (scalars[2 * L + j] for j in (SMEAR, BACKOUT, SKIP))
        r_attn, r_mlp = (c.unbind(0) for c in self.resid_lambdas.to(dt).unbind(1))
        post = self.post_lambdas.to(dt)
        p_attn0, p_attn1, p_mlp0, p_mlp1 = (post[:, s, lane].unbind(0) for s in (0, 1) for lane in (0, 1))
        x0_l = self.x0_lambdas.to(dt).unbind(0)
        bigram_l = self.bigram_lambdas.to(dt).unbind(0)
        attn_w = self.attn_bank.unbind(0)
        attn_gates = self.attn_gate_bank.to(dt).unbind(0)
        ve_gates = self.ve_gate_bank.to(dt).unbind(0)
        c_fc, c_proj = self._mlp_weights()

        x = self.embed(inputs)
        G = cfg.gate_dim
        smear = smear_l * torch.sigmoid(gate_logits(x[1:, :G], self.smear_gate.weight))
        x = torch.cat([x[:1], x[1:] + smear * x[:-1]])
        x0 = norm(x)
        bigram = self.bigram_embed(bigram_ids)
        ve_all = self.value_embeds.view(cfg.num_value_embeds, cfg.vocab_size, -1)[:, inputs]

        lane0, lane1, skip, x_backout = x0 + bigram_l[0] * bigram, None, None, None
        for layer in self.plan:
            i = layer.index
            if layer.attn_slab is None:
                gate = torch.sigmoid(skip_l) * 2 * torch.sigmoid(gate_logits(x0[:, :G], self.skip_gate.weight))
                lane0 = lane0 + gate * skip
                lane0 = r_mlp[i] * lane0 + p_mlp0[i] * linear_relu_square(norm(lane0), c_fc[i], c_proj[i])
                continue
            inject = x0_l[i] * x0 if i == 0 else x0_l[i] * x0 + bigram_l[i] * bigram
            ve = ve_all[layer.ve] if layer.ve is not None else None
            ve_gate = ve_gates[layer.ve] if layer.ve is not None else None
            if layer.parallel and lane1 is None:
                lane1 = lane0
            a = self._attention(norm(lane0), layer, attn_w[layer.attn_slab], sa[i], attn_gates[layer.attn_slab],
                                ve, ve_gate, long if layer.long_window else short, masks)
            if not layer.parallel:
                lane0 = r_attn[i] * lane0 + a + inject
                if i == cfg.skip_save_layer:
                    skip = lane0
                lane0 = r_mlp[i] * lane0 + p_mlp0[i] * linear_relu_square(norm(lane0), c_fc[i], c_proj[i])
            else:
                lane0 = r_attn[i] * lane0 + p_attn0[i] * a + inject
                lane1 = r_attn[i] * lane1 + p_attn1[i] * a
                m = linear_relu_square(norm(lane1), c_fc[i], c_proj[i])
                lane0 = r_mlp[i] * lane0 + p_mlp0[i] * m
                lane1 = r_mlp[i] * lane1 + p_mlp1[i] * m
                if i == cfg.parallel_start:
                    x_backout = lane0
        return norm((lane0 + lane1) * 0.5 - backout_l * x_backout)

    # -- losses --------------------------------------------------------------------------------

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, cu_seqlens: torch.Tensor,
                bigram_ids: torch.Tensor, windows: tuple[int, int], max_seq_len: int,
                mtp_weights: torch.Tensor, grad_scale: float) -> torch.Tensor:
        """Training loss: Σ over tokens and MTP offsets k of w_k·CE(target[t+k]), times grad_scale.

        The head is the FP8 lm_head fused with the softcapped cross-entropy kernel.
        """
        cfg = self.cfg
        x = self._trunk(inputs, cu_seqlens, bigram_ids, windows, max_seq_len)
        losses = softcapped_cross_entropy(x, targets, mtp_weights, self.lm_head.weight, FP8_X_SCALE,
                                          FP8_W_SCALE, grad_scale * FP8_GRAD_SCALE,
                                          cfg.softcap_a, cfg.softcap_b, cfg.softcap_c)
        return losses.sum() * grad_scale

    def eval_loss(self, inputs: torch.Tensor, targets: torch.Tensor, cu_seqlens: torch.Tensor,
                  bigram_ids: torch.Tensor, windows: tuple[int, int], max_seq_len: int) -> torch.Tensor:
        """Mean next-token cross-entropy with a plain (bf16) head and the softcap; no MTP."""
        cfg = self.cfg
        x = self._trunk(inputs, cu_seqlens, bigram_ids, windows, max_seq_len)
        logits = x @ self.lm_head.weight.type_as(x)
        z = cfg.softcap_a * torch.sigmoid((logits + cfg.softcap_b) / cfg.softcap_c)
        return F.cross_entropy(z.float(), targets, reduction="mean")


def shift_stationary_half(k: torch.Tensor) -> torch.Tensor:
    """Key offset: the stationary (non-rotating) half of each key moves one position forward.

    k[t, :, D/2:] becomes k[t−1, :, D/2:] for t ≥ 1 (k[0] is kept), across document boundaries,
    so a single layer can match "the token after the previous occurrence" (induction).
    """
    half = k.size(-1) // 2
    moving = torch.cat([k[:1, :, half:], k[:-1, :, half:]])
    return torch.cat([k[..., :half], moving], dim=-1)
