"""The attention mask of docs/trainer.md ("Attention") and its dense and flex_attention backends, against brute force."""

import math
import warnings

import pytest
import torch

from speedtrace.trainer.attention import (
    DocumentMasks,
    attend,
    block_mask,
    default_backend,
    dense_mask,
    document_ids,
    paired_stream_ids,
)

# Three documents, then padding entries (empty documents) as the loader writes them.
CU = [0, 5, 37, 40, 40, 40]
T = 40


def _docs_by_loop(cu, length):
    docs = [None] * length
    for d in range(len(cu) - 1):
        for p in range(cu[d], cu[d + 1]):
            docs[p] = d
    return docs


def _mask_by_loop(docs, window):
    L = len(docs)
    return [[j <= i and i - j <= window and docs[i] == docs[j] for j in range(L)] for i in range(L)]


def test_document_ids_from_padded_cu_seqlens():
    cu = torch.tensor(CU, dtype=torch.int32)
    assert document_ids(cu, T).tolist() == _docs_by_loop(CU, T)
    # val batches: cu = [0] + BOS positions, which may repeat 0
    cu_val = torch.tensor([0, 0, 7, 16, 16], dtype=torch.int32)
    assert document_ids(cu_val, 16).tolist() == [1] * 7 + [2] * 9


@pytest.mark.parametrize("window", [0, 3, 16, 100])
def test_mask_is_causal_same_document_and_windowed(window):
    docs = document_ids(torch.tensor(CU, dtype=torch.int32), T)
    got = dense_mask(docs, window)
    assert got.tolist() == _mask_by_loop(_docs_by_loop(CU, T), window)


def test_window_is_token_granular():
    docs = torch.zeros(300, dtype=torch.int32)
    m = dense_mask(docs, 128)
    assert m[200, 72] and not m[200, 71]        # i - W ≤ j: W+1 keys including itself
    assert m[200].sum().item() == 129


def test_paired_stream_maps_slot_to_token_document():
    cu = torch.tensor(CU, dtype=torch.int32)
    stream = paired_stream_ids(document_ids(cu, T))
    by_loop = _docs_by_loop(CU, T)
    assert stream.tolist() == [by_loop[s // 2] for s in range(2 * T)]
    # the same stream as FA3 sees it: doubled cu_seqlens over 2T positions
    assert torch.equal(stream, document_ids(2 * cu, 2 * T))


def test_paired_window_counts_stream_slots():
    masks = DocumentMasks(torch.tensor([0, 40], dtype=torch.int32), 40, 40, "dense")
    m = masks.mask(True, 6)
    assert m.shape == (80, 80)
    assert m[50, 44] and not m[50, 43]          # 6 slots back = 3 tokens
    assert m.tolist() == _mask_by_loop([0] * 80, 6)


def _attention_by_loop(q, k, v, allowed, scale):
    L, H, D = q.shape
    out = torch.zeros_like(q)
    for h in range(H):
        for i in range(L):
            keys = [j for j in range(L) if allowed[i][j]]
            s = torch.stack([scale * (q[i, h] @ k[j, h]) for j in keys])
            p = torch.softmax(s, 0)
            out[i, h] = sum(p[n] * v[j, h] for n, j in enumerate(keys))
    return out


@pytest.mark.parametrize("paired", [False, True])
def test_dense_backend_matches_loop(paired):
    torch.manual_seed(0)
    cu = torch.tensor(CU, dtype=torch.int32)
    L = 2 * T if paired else T
    q, k, v = (torch.randn(L, 2, 8) for _ in range(3))
    masks = DocumentMasks(cu, T, 40, "dense")
    got = attend(q, k, v, masks, window=7, scale=0.3, paired=paired)
    docs = paired_stream_ids(document_ids(cu, T)) if paired else document_ids(cu, T)
    want = _attention_by_loop(q, k, v, _mask_by_loop(docs.tolist(), 7), 0.3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _block_sets(bm):
    def rows(num, idx):
        num, idx = num[0, 0], idx[0, 0]
        return [set(idx[i, :num[i]].tolist()) for i in range(num.numel())]
    return rows(bm.kv_num_blocks, bm.kv_indices), rows(bm.full_kv_num_blocks, bm.full_kv_indices)


@pytest.mark.parametrize("window,paired", [(8, False), (40, False), (80, False), (40, True), (5, True)])
def test_block_mask_classifies_every_block(window, paired):
    # Blocks of 16 so a 90- or 180-long stream spans several, with a partial last block.
    cu = [0, 5, 70, 84, 90, 90]
    docs = document_ids(torch.tensor(cu, dtype=torch.int32), 90)
    if paired:
        docs = paired_stream_ids(docs)
    L, bs = docs.numel(), 16
    allowed = _mask_by_loop(docs.tolist(), window)
    partial, full = _block_sets(block_mask(docs, window, block_size=bs))
    n = -(-L // bs)
    for bi in range(n):
        assert not (partial[bi] & full[bi])
        for bj in range(n):
            pairs = [allowed[i][j] for i in range(bi * bs, min(L, bi * bs + bs))
                     for j in range(bj * bs, min(L, bj * bs + bs))]
            if bj in full[bi]:
                assert all(pairs), (bi, bj)
            elif bj not in partial[bi]:
                assert not any(pairs), (bi, bj)
    # some blocks are skipped, and full ones exist once the window spans two blocks
    assert any(len(p) + len(f) < n for p, f in zip(partial, full))
    assert any(full) == (window >= 2 * bs - 1)


@pytest.mark.parametrize("paired", [False, True])
def test_flex_backend_matches_dense(paired):
    torch.manual_seed(1)
    cu = torch.tensor([0, 70, 150, 256, 256], dtype=torch.int32)
    L = 512 if paired else 256
    q, k, v = (torch.randn(L, 2, 16) for _ in range(3))
    dense = attend(q, k, v, DocumentMasks(cu, 256, 256, "dense"), window=48, scale=0.25, paired=paired)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():      # flex_attention has no CPU backward; the GPU path is compiled
            flex = attend(q, k, v, DocumentMasks(cu, 256, 256, "flex"), window=48, scale=0.25, paired=paired)
    torch.testing.assert_close(flex, dense, atol=1e-5, rtol=1e-5)


def test_masks_follow_the_batch_and_window():
    a = DocumentMasks(torch.tensor([0, 20, 40], dtype=torch.int32), 40, 40, "dense")
    b = DocumentMasks(torch.tensor([0, 10, 40], dtype=torch.int32), 40, 40, "dense")
    assert not torch.equal(a.mask(False, 8), b.mask(False, 8))
    assert not torch.equal(a.mask(False, 8), a.mask(False, 4))
    assert a.mask(False, 8) is a.mask(False, 8)          # built once per forward


def test_backend_choice():
    assert default_backend(torch.device("cpu")) == "dense"
    assert default_backend(torch.device("cuda")) in ("fa3", "flex")
    with pytest.raises(ValueError):
        DocumentMasks(torch.tensor([0, 16], dtype=torch.int32), 16, 16, "magic")


def test_scale_is_the_given_softmax_scale():
    # one document, window covering everything, two keys: weights follow exp(scale·q·k)
    q = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    k = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]])
    v = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    masks = DocumentMasks(torch.tensor([0, 2], dtype=torch.int32), 2, 2, "dense")
    y = attend(q, k, v, masks, window=5, scale=0.1, paired=False)
    p0 = math.exp(0.2) / (math.exp(0.2) + 1)
    assert y[1, 0].tolist() == pytest.approx([p0, 1 - p0], abs=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("paired", [False, True])
def test_gpu_compiled_flex_matches_dense_with_grads(paired):
    torch.manual_seed(2)
    T, window = 2048, 384
    cu = torch.tensor([0, 300, 301, 1500, 2048, 2048], dtype=torch.int32, device="cuda")
    L = 2 * T if paired else T
    inputs = [torch.randn(L, 3, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)]
    outs, grads = [], []
    for backend in ("dense", "flex"):
        masks = DocumentMasks(cu, T, T, backend)
        y = attend(*inputs, masks, window=window, scale=0.12, paired=paired)
        g = torch.autograd.grad((y.float() ** 2).sum(), inputs)
        outs.append(y.float())
        grads.append([t.float() for t in g])
    torch.testing.assert_close(outs[1], outs[0], atol=2e-2, rtol=2e-2)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, atol=5e-2, rtol=5e-2)
