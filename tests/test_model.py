"""The record-233 GPT (docs/trainer.md, "The model"): parameters, inits, the layer plan, the attention layer and the
flattened forward against references written from that page, losses, gradients and the mlp-select revert."""

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from speedtrace.trainer.config import speedrun, tiny
from speedtrace.trainer.model import GPT, GateLogits, init_bound, layer_plan, shift_stationary_half
from speedtrace.trainer.optimizer import label_of, sharding_view

LABELS = {"attn_bank", "mlp_bank", "scalars", "smear_gate", "skip_gate", "attn_gate_bank", "ve_gate_bank",
          "lm_head", "bigram_embed", "post_lambdas", "x0_lambdas", "bigram_lambdas", "resid_lambdas",
          "value_embeds", "embed"}
LAMBDAS = {"scalars", "post_lambdas", "x0_lambdas", "bigram_lambdas", "resid_lambdas"}
# Layer topology of docs/trainer.md ("Forward"), written out.
PAIRED = {0, 2, 5, 9}
LONG = {3, 10}
VE_OF_LAYER = {1: 0, 2: 1, 8: 2, 9: 3, 10: 4}


@pytest.fixture(scope="module")
def cfg():
    return tiny().model


def _params(model):
    return dict(model.named_parameters())


def _batch(cfg, T, cu, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, cfg.vocab_size, (T,), generator=g, dtype=torch.int32)
    targets = torch.randint(0, cfg.vocab_size, (T,), generator=g).long()
    bigram = torch.randint(0, cfg.bigram_vocab - 1, (T,), generator=g, dtype=torch.int32)
    bigram[0] = cfg.bigram_vocab - 1
    cu = torch.tensor(cu + [T] * 3, dtype=torch.int32)
    return inputs, targets, cu, bigram


def _randomise(model, seed=0):
    """Move every parameter off its init so that all used entries influence the loss."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.1 if name.split(".")[0] in LAMBDAS | {"smear_gate", "skip_gate", "attn_gate_bank",
                                                             "ve_gate_bank"} else 0.02
            p.add_((scale * torch.randn(p.shape, generator=g)).to(p.dtype))
        model.scalars[22] += 0.5                   # smear_lambda away from 0


# ---------------------------------------------------------------------------------------------
# parameters


def test_parameter_names_shapes_dtypes(cfg):
    model = GPT(cfg)
    L, D, V, H, F_ = 11, 96, 384, 6, 384
    want = {
        "attn_bank": (10, 4 * D, D), "mlp_bank": (12, 2, F_, D), "scalars": (25,),
        "smear_gate.weight": (1, 12), "skip_gate.weight": (1, 12), "attn_gate_bank": (10, H, 12),
        "ve_gate_bank": (5, H, 12), "lm_head.weight": (D, V), "bigram_embed.weight": (5 * V, D),
        "post_lambdas": (L, 2, 2), "x0_lambdas": (L,), "bigram_lambdas": (L,), "resid_lambdas": (L, 2),
        "value_embeds": (5 * V, D), "embed.weight": (V, D),
    }
    params = _params(model)
    assert {n: tuple(p.shape) for n, p in params.items()} == want
    for name, p in params.items():
        label = name.removesuffix(".weight")
        assert p.dtype == (torch.float32 if label in LAMBDAS else torch.bfloat16), name
    # The labels the optimizer's table is keyed by, and the stacks of matrices it shards the banks as.
    assert {label_of(n) for n in params} == LABELS
    assert sharding_view("attn_bank", model.attn_bank.shape) == (40, D, D)
    assert sharding_view("mlp_bank", model.mlp_bank.shape) == (24, F_, D)


def test_speedrun_parameter_count_on_meta():
    with torch.device("meta"):
        model = GPT(speedrun().model)
    by_spec = (10 * 3072 * 768 + 12 * 2 * 3072 * 768 + 25 + 12 + 12 + 10 * 6 * 12 + 5 * 6 * 12
               + 768 * 50304 + 251_520 * 768 + 44 + 11 + 11 + 22 + 251_520 * 768 + 50304 * 768)
    assert by_spec == 543_818_945
    assert sum(p.numel() for p in model.parameters()) == 543_818_945
    assert sharding_view("attn_bank", model.attn_bank.shape) == (40, 768, 768)
    assert sharding_view("mlp_bank", model.mlp_bank.shape) == (24, 3072, 768)


def test_scalars_padding_for_world_size(cfg):
    model = GPT(cfg, world_size=8)
    assert model.scalars.shape == (32,)                           # 25 + (−25 mod 8)
    assert torch.all(model.scalars[25:] == 1.0)
    assert GPT(cfg, world_size=1).scalars.shape == (25,)


def test_inits(cfg):
    torch.manual_seed(0)
    model = GPT(cfg)
    assert init_bound(768) == pytest.approx(0.03125, rel=1e-12)   # √3 · 0.5 · 768^-½ = 1/32
    bound = 0.5 * math.sqrt(3 / 96)
    assert init_bound(96) == pytest.approx(bound)
    fc, proj = model.mlp_bank[:, 0].float(), model.mlp_bank[:, 1].float()
    for w in (model.attn_bank.float(), fc):
        assert w.abs().max() <= bound and w.abs().max() > 0.98 * bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert torch.all(proj == 0)                                   # padding layer included
    assert model.lm_head.weight.float().std().item() == pytest.approx(0.005, rel=0.05)
    assert torch.equal(model.embed.weight, model.lm_head.weight.T)
    assert model.value_embeds.float().std().item() == pytest.approx(0.01, rel=0.05)
    for zero in (model.bigram_embed.weight, model.smear_gate.weight, model.skip_gate.weight,
                 model.attn_gate_bank, model.ve_gate_bank, model.x0_lambdas):
        assert torch.all(zero == 0)
    post = torch.ones(11, 2, 2)
    post[7:, 0, 1] = 1.5
    assert torch.equal(model.post_lambdas, post)
    assert torch.all(model.bigram_lambdas == 0.05)
    assert torch.allclose(model.resid_lambdas, torch.full((11, 2), math.sqrt(1.1)))
    s = model.scalars.tolist()
    assert s[:22] == [0.5, 1.0] * 11 and s[22:] == [0.0, 0.5, -1.5]


def test_init_values_come_from_the_config_instance(cfg):
    """An init constant overridden on a TrainConfig instance sets the weights (not the class default)."""
    train_cfg = replace(tiny(), bigram_lambda_init=0.25, resid_lambda_init=2.0, post_lambda_lane1_init=3.0,
                        lm_head_init_std=0.05)
    torch.manual_seed(0)
    model = GPT(cfg, init=train_cfg)
    assert torch.all(model.bigram_lambdas == 0.25)
    assert torch.all(model.resid_lambdas == 2.0)
    assert torch.all(model.post_lambdas[7:, 0, 1] == 3.0)
    assert model.lm_head.weight.float().std().item() == pytest.approx(0.05, rel=0.05)
    assert torch.all(GPT.for_training(train_cfg).bigram_lambdas == 0.25)
    assert torch.all(GPT(cfg).bigram_lambdas == 0.05)                # no config: the record's values


def test_layer_plan_matches_spec(cfg):
    plan = layer_plan(cfg)
    assert [("-" if p.attn_slab is None else "L" if p.long_window else "S") for p in plan] == list("SSSLSS-SSSL")
    assert {p.index for p in plan if p.paired} == PAIRED
    assert [p.attn_slab for p in plan] == [0, 1, 2, 3, 4, 5, None, 6, 7, 8, 9]
    assert {p.index: p.ve for p in plan if p.ve is not None} == VE_OF_LAYER
    assert [p.index for p in plan if p.parallel] == [7, 8, 9, 10]


def test_key_offset_shifts_the_stationary_half():
    k = torch.arange(3 * 1 * 4, dtype=torch.float32).view(3, 1, 4)
    out = shift_stationary_half(k)
    assert out[:, 0].tolist() == [[0, 1, 2, 3], [4, 5, 2, 3], [8, 9, 6, 7]]


# ---------------------------------------------------------------------------------------------
# references written from docs/trainer.md (loops; float32)


def _rms(x):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)


def _rotate(vec, position, head_dim):
    n = head_dim // 4
    out = vec.clone()
    for j in range(n):
        a = position * 1024 ** (-j / (n - 1))
        c, s = math.cos(a), math.sin(a)
        out[2 * j] = c * vec[2 * j] + s * vec[2 * j + 1]
        out[2 * j + 1] = c * vec[2 * j + 1] - s * vec[2 * j]
    return out


def _docs(cu, T):
    return [max(d for d in range(len(cu)) if cu[d] <= t) for t in range(T)]


def _ref_attention(model, i, x, tokens, docs, window, scale=0.1):
    """Spec §1.6 for layer i, one (token, head) at a time."""
    cfg = model.cfg
    T, D, H, Dh = x.shape[0], cfg.model_dim, cfg.num_heads, cfg.head_dim
    slab = i - (i > 6)
    w = model.attn_bank[slab]
    sa0, sa1 = model.scalars[2 * i], model.scalars[2 * i + 1]
    qkv = x @ (sa0 * w[:3 * D]).T
    q = [[_rms(qkv[t, h * Dh:(h + 1) * Dh]) for h in range(H)] for t in range(T)]
    k = [[_rms(qkv[t, D + h * Dh:D + (h + 1) * Dh]) for h in range(H)] for t in range(T)]
    v = [[qkv[t, 2 * D + h * Dh:2 * D + (h + 1) * Dh] for h in range(H)] for t in range(T)]
    paired = i in PAIRED
    pos = (lambda t, h: 2 * t + h % 2) if paired else (lambda t, h: t)
    slot = (lambda t, h: 2 * t + (h >= H // 2)) if paired else (lambda t, h: t)
    group = (lambda h: h % (H // 2)) if paired else (lambda h: h)
    q = [[_rotate(q[t][h], pos(t, h), Dh) for h in range(H)] for t in range(T)]
    k = [[_rotate(k[t][h], pos(t, h), Dh) for h in range(H)] for t in range(T)]
    if i in LONG:
        k = [[torch.cat([k[t][h][:Dh // 2], k[max(t - 1, 0)][h][Dh // 2:]]) for h in range(H)] for t in range(T)]
    if i in VE_OF_LAYER:
        e = VE_OF_LAYER[i]
        ve = model.value_embeds.view(5, cfg.vocab_size, D)[e, tokens]
        gw = model.ve_gate_bank[e]
        for t in range(T):
            inp = x[t, :12] if paired else torch.cat([x[t, :6], ve[t, :6]])
            g = 2 * torch.sigmoid(gw @ inp)
            for h in range(H):
                v[t][h] = v[t][h] + g[h] * ve[t, h * Dh:(h + 1) * Dh]
    gate = torch.sigmoid(x[:, :12] @ model.attn_gate_bank[slab].T)
    y = torch.zeros(T, D)
    for t in range(T):
        for h in range(H):
            keys = [(t2, h2) for t2 in range(T) for h2 in range(H)
                    if group(h2) == group(h) and slot(t2, h2) <= slot(t, h)
                    and slot(t, h) - slot(t2, h2) <= window and docs[t2] == docs[t]]
            s = torch.stack([scale * (q[t][h] @ k[t2][h2]) for t2, h2 in keys])
            p = torch.softmax(s, 0)
            out = sum(p[n] * v[t2][h2] for n, (t2, h2) in enumerate(keys))
            y[t, h * Dh:(h + 1) * Dh] = out * gate[t, h]
    return y @ (sa1 * w[3 * D:]).T


def _ref_trunk(model, tokens, cu, bigram_ids, windows):
    """Spec §1.3-1.5 written out for the 11-layer topology."""
    T = tokens.numel()
    docs = _docs(cu, T)
    s = model.scalars
    rA, rM = model.resid_lambdas[:, 0], model.resid_lambdas[:, 1]
    P = model.post_lambdas
    x0l, bl = model.x0_lambdas, model.bigram_lambdas
    emb = model.embed.weight[tokens.long()]
    smeared = emb.clone()
    for t in range(1, T):
        smeared[t] = emb[t] + s[22] * torch.sigmoid(model.smear_gate.weight[0] @ emb[t, :12]) * emb[t - 1]
    x0 = _rms(smeared)
    B = model.bigram_embed.weight[bigram_ids.long()]

    def mlp(i, x):
        return torch.relu(x @ model.mlp_bank[i, 0].T).square() @ model.mlp_bank[i, 1]

    def attn(i, x):
        return _ref_attention(model, i, x, tokens.long(), docs, windows[1] if i in LONG else windows[0])

    lane0 = x0 + bl[0] * B
    for i in range(11):
        inj = x0l[i] * x0 + (bl[i] * B if i > 0 else 0)
        if i < 6:
            lane0 = rA[i] * lane0 + attn(i, _rms(lane0)) + inj
            if i == 3:
                skip = lane0
            lane0 = rM[i] * lane0 + P[i, 1, 0] * mlp(i, _rms(lane0))
        elif i == 6:
            g = torch.sigmoid(s[24]) * 2 * torch.sigmoid(x0[:, :12] @ model.skip_gate.weight.T)
            lane0 = lane0 + g * skip
            lane0 = rM[i] * lane0 + P[i, 1, 0] * mlp(i, _rms(lane0))
        else:
            if i == 7:
                lane1 = lane0
            a = attn(i, _rms(lane0))
            lane0, lane1 = rA[i] * lane0 + P[i, 0, 0] * a + inj, rA[i] * lane1 + P[i, 0, 1] * a
            m = mlp(i, _rms(lane1))
            lane0, lane1 = rM[i] * lane0 + P[i, 1, 0] * m, rM[i] * lane1 + P[i, 1, 1] * m
            if i == 7:
                backout = lane0
    return _rms((lane0 + lane1) / 2 - s[23] * backout)


@pytest.fixture(scope="module")
def fp32_model(cfg):
    torch.manual_seed(1)
    model = GPT(cfg).float()
    model.reset_yarn()                 # rebuild the rotary tables in fp32
    _randomise(model, seed=1)
    return model


@pytest.mark.parametrize("layer", [0, 1, 2, 3, 10])
def test_attention_layer_matches_spec_reference(cfg, fp32_model, layer):
    # 0 paired, 1 VE, 2 paired + VE, 3 long + key offset, 10 long + key offset + VE
    model = fp32_model
    T, cu, windows = 32, [0, 13, 32], (6, 20)
    tokens, _, cu_t, _ = _batch(cfg, T, cu, seed=layer)
    x = _rms(torch.randn(T, cfg.model_dim, generator=torch.Generator().manual_seed(layer)))
    plan = layer_plan(cfg)[layer]
    from speedtrace.trainer.attention import DocumentMasks
    masks = DocumentMasks(cu_t, T, T, "dense")
    slab = plan.attn_slab
    ve = model.value_embeds.view(5, cfg.vocab_size, -1)[plan.ve, tokens] if plan.ve is not None else None
    with torch.no_grad():
        got = model._attention(x, plan, model.attn_bank[slab], model.scalars[2 * layer:2 * layer + 2],
                               model.attn_gate_bank[slab], ve,
                               model.ve_gate_bank[plan.ve] if plan.ve is not None else None,
                               windows[1] if plan.long_window else windows[0], masks)
        want = _ref_attention(model, layer, x, tokens.long(), _docs(cu, T),
                              windows[1] if layer in LONG else windows[0])
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_trunk_matches_spec_reference(cfg, fp32_model):
    T, cu, windows = 32, [0, 9, 25, 32], (6, 20)
    tokens, _, cu_t, bigram = _batch(cfg, T, cu, seed=5)
    with torch.no_grad():
        got = fp32_model._trunk(tokens, cu_t, bigram, windows, T)
        want = _ref_trunk(fp32_model, tokens, cu, bigram, windows)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_losses_match_their_definitions(cfg, fp32_model):
    T = 32
    tokens, targets, cu_t, bigram = _batch(cfg, T, [0, 20, 32], seed=6)
    mtp = torch.tensor([1.0, 0.5, 0.25])
    with torch.no_grad():
        x = fp32_model._trunk(tokens, cu_t, bigram, (6, 20), T)
        z = 23 * torch.sigmoid((x @ fp32_model.lm_head.weight + 5) / 7.5)
        lse = torch.logsumexp(z, -1)
        want = sum(w * (lse[t] - z[t, targets[t + k]])
                   for k, w in enumerate(mtp.tolist()) for t in range(T - k))
        got = fp32_model(tokens, targets, cu_t, bigram, (6, 20), T, mtp, 0.125)
        assert got.item() == pytest.approx(0.125 * want.item(), rel=2e-3)   # FP8 head vs exact
        ev = fp32_model.eval_loss(tokens, targets, cu_t, bigram, (6, 20), T)
        assert ev.item() == pytest.approx(F.cross_entropy(z, targets).item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# speedrun dtypes (bf16), losses and gradients


def test_loss_at_init_is_log_vocab(cfg):
    torch.manual_seed(0)
    model = GPT(cfg)
    T = 64
    batch = _batch(cfg, T, [0, 30, 64])
    ln_v = math.log(cfg.vocab_size)
    loss = model(*batch, (16, 48), 56, torch.tensor([1.0]), 1 / T)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(ln_v, rel=0.01)
    mtp = model(*batch, (16, 48), 56, torch.tensor([1.0, 0.5, 0.25]), 1 / 8)
    assert mtp.item() == pytest.approx((T + 0.5 * (T - 1) + 0.25 * (T - 2)) * ln_v / 8, rel=0.01)
    with torch.no_grad():
        ev = model.eval_loss(*batch, (16, 48), 56)
    assert ev.item() == pytest.approx(ln_v, rel=0.01)


def _unused(name, shape):
    """Boolean mask of the entries of parameter ``name`` that the forward leaves unused (docs/trainer.md, "Forward")."""
    m = torch.zeros(shape, dtype=torch.bool)
    if name == "post_lambdas":
        m[:7, 0, :] = True              # no attention post-lambdas before the parallel layers
        m[:7, 1, 1] = True              # no lane1 before layer 7
    elif name == "resid_lambdas":
        m[6, 0] = True
    elif name in ("x0_lambdas", "bigram_lambdas"):
        m[6] = True
    elif name == "scalars":
        m[12:14] = True                 # sa lambdas of the MLP-only layer
        m[25:] = True                   # padding
    elif name == "mlp_bank":
        m[11] = True                    # padding layer
    return m


@pytest.fixture(scope="module")
def grads(cfg):
    torch.manual_seed(2)
    model = GPT(cfg, world_size=8)
    _randomise(model, seed=2)
    T = 64
    tokens, targets, cu, bigram = _batch(cfg, T, [0, 30, 64], seed=3)
    loss = model(tokens, targets, cu, bigram, (16, 48), 56, torch.tensor([1.0, 0.5, 0.25]), 1 / 8)
    loss.backward()
    return model, tokens, bigram


def test_backward_reaches_every_parameter_with_its_shape(grads):
    model, _, _ = grads
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.shape == p.shape and p.grad.dtype == p.dtype, name


def test_gradients_zero_exactly_where_unused(cfg, grads):
    model, tokens, bigram = grads
    for name, p in model.named_parameters():
        unused = _unused(name, p.shape)
        g = p.grad
        assert torch.all(g[unused] == 0), name
        if name in ("post_lambdas", "resid_lambdas", "x0_lambdas", "bigram_lambdas", "scalars",
                    "attn_gate_bank", "ve_gate_bank", "smear_gate.weight", "skip_gate.weight"):
            assert torch.all(g[~unused] != 0), name
    assert all(model.attn_bank.grad[s].abs().sum() > 0 for s in range(10))
    assert all(model.mlp_bank.grad[i, j].abs().sum() > 0 for i in range(11) for j in range(2))
    # embedding tables: exactly the looked-up rows
    V = cfg.vocab_size
    seen = torch.zeros(V, dtype=torch.bool)
    seen[tokens.long()] = True
    assert torch.equal(model.embed.weight.grad.abs().sum(-1) > 0, seen)
    ve_rows = model.value_embeds.grad.view(5, V, -1).abs().sum(-1) > 0
    assert torch.equal(ve_rows, seen.expand(5, V))
    rows = torch.zeros(cfg.bigram_vocab, dtype=torch.bool)
    rows[bigram.long()] = True
    assert torch.equal(model.bigram_embed.weight.grad.abs().sum(-1) > 0, rows)


def _mlp_bank_consumers(loss, bank):
    """Names of the autograd nodes that read ``bank`` directly."""
    seen, stack, names = set(), [loss.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for nxt, _ in node.next_functions:
            if nxt is not None and getattr(nxt, "variable", None) is bank:
                names.append(type(node).__name__)
            stack.append(nxt)
    return names


def test_mlp_select_revert_same_loss_and_grads_other_graph(cfg):
    torch.manual_seed(3)
    record = GPT(cfg)
    _randomise(record, seed=3)
    parent = GPT(cfg, reverts=frozenset({"mlp-select"}))
    parent.load_state_dict(record.state_dict())
    batch = _batch(cfg, 48, [0, 17, 48], seed=4)
    args = ((16, 48), 56, torch.tensor([1.0, 0.5]), 1 / 8)
    loss_r, loss_p = record(*batch, *args), parent(*batch, *args)
    assert loss_p.item() == pytest.approx(loss_r.item(), rel=1e-6)
    assert "SelectBackward0" in _mlp_bank_consumers(loss_p, parent.mlp_bank)
    assert "SelectBackward0" not in _mlp_bank_consumers(loss_r, record.mlp_bank)
    loss_r.backward()
    loss_p.backward()
    for (name, a), b in zip(record.named_parameters(), parent.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-3, msg=name)


def test_windows_and_documents_change_the_loss(cfg, fp32_model):
    T = 48
    tokens, targets, _, bigram = _batch(cfg, T, [0, 48], seed=7)
    one = torch.tensor([0, 48, 48], dtype=torch.int32)
    two = torch.tensor([0, 20, 48], dtype=torch.int32)
    with torch.no_grad():
        base = fp32_model.eval_loss(tokens, targets, one, bigram, (16, 32), T)
        assert fp32_model.eval_loss(tokens, targets, two, bigram, (16, 32), T) != base
        assert fp32_model.eval_loss(tokens, targets, one, bigram, (4, 32), T) != base
        assert fp32_model.eval_loss(tokens, targets, one, bigram, (16, 8), T) != base


def test_apply_and_reset_yarn_touch_both_tables(cfg):
    model = GPT(cfg)
    cos, cos_p = model.yarn.cos.clone(), model.yarn_paired.cos.clone()
    model.apply_yarn(48, 112)
    assert model.yarn.attn_scale == pytest.approx(0.1 * (1 + 0.2 * math.log(112 / 48)))
    assert model.yarn_paired.attn_scale == model.yarn.attn_scale
    assert not torch.equal(model.yarn.cos, cos) and not torch.equal(model.yarn_paired.cos, cos_p)
    model.reset_yarn()
    assert torch.equal(model.yarn.cos, cos) and torch.equal(model.yarn_paired.cos, cos_p)
    assert model.yarn.attn_scale == 0.1


def test_rejects_bad_input(cfg):
    with pytest.raises(ValueError):
        GPT(cfg, reverts=frozenset({"no-such-change"}))
    model = GPT(cfg, reverts=frozenset({"fused-nesterov"}))    # optimizer-side reverts are accepted
    tokens, targets, cu, bigram = _batch(cfg, 40, [0, 40])
    with pytest.raises(ValueError):
        model(tokens, targets, cu, bigram, (16, 48), 56, torch.tensor([1.0]), 1.0)


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_compiled_speedrun_micro_batch():
    """Stage-1 micro-batch of the speedrun config, compiled as the trainer does; prints ms/micro-batch."""
    import time

    cfg = speedrun().model
    torch.manual_seed(0)
    model = GPT(cfg).cuda()
    compiled = torch.compile(model, dynamic=False, fullgraph=True)
    T = 16384
    g = torch.Generator(device="cuda").manual_seed(0)
    tokens = torch.randint(0, 50257, (T,), device="cuda", generator=g, dtype=torch.int32)
    targets = torch.randint(0, 50257, (T,), device="cuda", generator=g).long()
    bigram = torch.randint(0, cfg.bigram_vocab - 1, (T,), device="cuda", generator=g, dtype=torch.int32)
    bounds = sorted(set(torch.randint(1, T, (40,), generator=torch.Generator().manual_seed(0)).tolist()))
    cu = torch.tensor([0] + bounds + [T] * (128 - 1 - len(bounds)), dtype=torch.int32, device="cuda")
    mtp = torch.tensor([1.0, 0.5, 0.25], device="cuda")
    step = lambda: compiled(tokens, targets, cu, bigram, (128, 384), 896, mtp, 1 / 8)  # noqa: E731
    for _ in range(3):
        loss = step()
        loss.backward()
    ln_v = math.log(cfg.vocab_size)
    assert loss.item() == pytest.approx((T + 0.5 * (T - 1) + 0.25 * (T - 2)) * ln_v / 8, rel=0.02)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        step().backward()
    torch.cuda.synchronize()
    print(f"\nspeedrun stage-1 micro-batch fwd+bwd: {(time.perf_counter() - start) * 100:.1f} ms")


def test_gate_logits_equal_linear_with_gradients_checked_numerically():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 5, 12, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(6, 12, dtype=torch.float64, generator=g, requires_grad=True)
    torch.testing.assert_close(GateLogits.apply(x, w), x @ w.T, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(GateLogits.apply, (x, w))
    # bf16 in, bf16 out, accumulated in fp32 like a bf16 matmul.
    xb, wb = x.detach().bfloat16(), w.detach().bfloat16()
    want = (xb.double() @ wb.double().T).bfloat16()
    assert GateLogits.apply(xb, wb).dtype == torch.bfloat16
    torch.testing.assert_close(GateLogits.apply(xb, wb), want, rtol=0, atol=0)


def test_gates_take_one_matmul_each_for_the_weight_gradient(cfg):
    """The 12-wide gates' forward and input gradient are element-wise (model.GateLogits): of the
    three matmuls that F.linear would make per gate, each costing a cuBLAS call, only the weight
    gradient's (n, T) @ (T, gate_dim) is left."""
    from torch.utils._python_dispatch import TorchDispatchMode

    matmuls = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
               torch.ops.aten.baddbmm.default}

    class Shapes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in matmuls:
                self.seen.append(tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor)))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(4)
    model = GPT(cfg)
    _randomise(model, seed=4)
    T, G, H = 64, cfg.gate_dim, cfg.num_heads
    assert G not in (T, T - 1, cfg.model_dim, cfg.head_dim, H, cfg.mlp_dim, cfg.vocab_size)
    with Shapes() as mode:
        model(*_batch(cfg, T, [0, 30, 64]), (16, 48), 56, torch.tensor([1.0]), 1 / T).backward()
    # The mode sees the trunk's real matmuls: q/k/v and o of every attention layer, each twice
    # more in the backward.
    attn_layers = [p for p in layer_plan(cfg) if p.attn_slab is not None]
    assert len(mode.seen) >= 3 * 2 * len(attn_layers)
    gated = [s for s in mode.seen if any(G in shape for shape in s)]
    # Spec §1.5 by hand: an output gate per attention layer and a VE gate on the five VE layers
    # (H outputs each; a paired layer views its H as 2 × H/2 afterwards), the smear gate over
    # T - 1 tokens and the skip gate (1 output each): one weight-gradient matmul apiece.
    want = [((H, T), (T, G))] * (len(attn_layers) + 5) + [((1, T - 1), (T - 1, G)), ((1, T), (T, G))]
    assert sorted(gated) == sorted(want)
