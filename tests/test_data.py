"""Shards, the aligned and unaligned loaders, the bigram hash and the synthetic Markov data."""

import json
import math

import numpy as np
import pytest

from speedtrace.cli import main as cli_main
from speedtrace.errors import SpeedtraceError
from speedtrace.trainer.data import (
    LognormalLengths,
    MarkovSource,
    TrainLoader,
    ValLoader,
    bigram_hash,
    find_shards,
    read_shard,
    synth,
    write_shard,
)

BOS = 9
SHARD_A = [9, 1, 2, 3, 9, 4, 5, 9, 6, 7, 8, 1, 2, 9, 3]   # documents start at 0, 4, 7, 13
SHARD_B = [9, 5, 5, 5, 5, 5, 5, 9, 1]                      # documents start at 0, 7


def test_shard_round_trip_and_header(tmp_path):
    path = tmp_path / "x_train_000.bin"
    write_shard(path, np.array([1, 2, 65535]))
    raw = path.read_bytes()
    assert np.frombuffer(raw[:12], dtype=np.int32).tolist() == [20240520, 1, 3]
    assert len(raw) == 1024 + 6
    assert read_shard(path).tolist() == [1, 2, 65535]


def _write(path, header, tokens):
    h = np.zeros(256, dtype=np.int32)
    h[: len(header)] = header
    path.write_bytes(h.tobytes() + np.asarray(tokens, dtype=np.uint16).tobytes())


def test_bad_shards_give_clear_errors(tmp_path):
    _write(tmp_path / "magic.bin", [20240521, 1, 2], [1, 2])
    with pytest.raises(SpeedtraceError, match="magic.bin: not a token shard"):
        read_shard(tmp_path / "magic.bin")
    _write(tmp_path / "version.bin", [20240520, 2, 2], [1, 2])
    with pytest.raises(SpeedtraceError, match="version 2"):
        read_shard(tmp_path / "version.bin")
    _write(tmp_path / "short.bin", [20240520, 1, 5], [1, 2])
    with pytest.raises(SpeedtraceError, match="truncated shard: header says 5 tokens, file holds 2"):
        read_shard(tmp_path / "short.bin")
    (tmp_path / "tiny.bin").write_bytes(b"\x00\x01")
    with pytest.raises(SpeedtraceError, match="tiny.bin"):
        read_shard(tmp_path / "tiny.bin")


def test_no_files_is_a_clear_error(tmp_path):
    with pytest.raises(SpeedtraceError, match="no train shards"):
        find_shards(tmp_path, "train")
    with pytest.raises(SpeedtraceError, match="not found"):
        find_shards(tmp_path / "missing", "val")


def test_find_shards_matches_fineweb_names_sorted(tmp_path):
    for name in ("fineweb_train_000002.bin", "fineweb_train_000001.bin", "fineweb_val_000000.bin"):
        write_shard(tmp_path / name, [BOS])
    assert [p.name for p in find_shards(tmp_path, "train")] == ["fineweb_train_000001.bin",
                                                                "fineweb_train_000002.bin"]
    assert [p.name for p in find_shards(tmp_path, "val")] == ["fineweb_val_000000.bin"]


@pytest.fixture
def two_shards(tmp_path):
    write_shard(tmp_path / "a_train_0.bin", SHARD_A)
    write_shard(tmp_path / "a_train_1.bin", SHARD_B)
    return [tmp_path / "a_train_0.bin", tmp_path / "a_train_1.bin"]


def _loader(files, **kw):
    # 4 tokens per rank and micro-batch step (batch 32 over 8 micro-batches), pieces of <= 3 tokens
    args = dict(batch_size=32, seq_len=3, micro_batches=8, bos_id=BOS, bigram_vocab=20)
    args.update(kw)
    return TrainLoader(files, **args)


def test_aligned_loader_cuts_documents_and_rolls_over(two_shards):
    loader = _loader(two_shards)
    b = loader.next_batch()
    # doc at 0 cut to seq_len 3: [9 1 2]; doc at 4 cut to the 2 tokens still needed: [9 4]
    assert b.inputs.tolist() == [9, 1, 2, 9]
    assert b.targets.tolist() == [1, 2, 9, 4]
    assert b.inputs.dtype == np.int32 and b.targets.dtype == np.int64
    assert b.cu_seqlens[:3].tolist() == [0, 3, 4]
    assert b.cu_seqlens.size == 128 and set(b.cu_seqlens[2:].tolist()) == {4}
    assert loader.position == (0, 2)
    b = loader.next_batch()
    assert b.inputs.tolist() == [9, 6, 7, 9] and b.targets.tolist() == [6, 7, 9, 3]
    # shard A has no documents left: the next batch comes from shard B
    b = loader.next_batch()
    assert loader.position == (1, 2)
    assert b.inputs.tolist() == [9, 5, 5, 9] and b.targets.tolist() == [5, 5, 9, 1]
    with pytest.raises(SpeedtraceError, match="training data exhausted after 2 shard"):
        loader.next_batch()


def test_partial_step_at_shard_end_is_dropped(two_shards):
    # 8 tokens per rank: the second step starts with shard A's last document, runs out, and is
    # taken whole from shard B instead
    loader = _loader(two_shards, batch_size=64, seq_len=100)
    assert loader.next_batch().inputs.tolist() == [9, 1, 2, 3, 9, 4, 5, 9]
    b = loader.next_batch()
    assert loader.position == (1, 2)
    assert b.inputs.tolist() == [9, 5, 5, 5, 5, 5, 5, 9]


def test_ranks_take_consecutive_documents(two_shards):
    r0 = _loader(two_shards, world_size=2, rank=0)
    r1 = _loader(two_shards, world_size=2, rank=1)
    assert r0.next_batch().inputs.tolist() == [9, 1, 2, 9]
    assert r1.next_batch().inputs.tolist() == [9, 6, 7, 9]
    # both ranks moved past all four documents of shard A
    assert r0.position == r1.position == (0, 4)


def _pieces_by_loop(tokens, start_doc, per_rank_tokens, seq_len, world_size):
    """The piece rule one document at a time, as the record's loader walks it."""
    bos = [i for i, t in enumerate(tokens) if t == BOS]
    doc, out = start_doc, []
    for _ in range(world_size):
        pieces, have, need = [], 0, per_rank_tokens + 1
        while have < need:
            if doc >= len(bos):
                return None
            start = bos[doc]
            doc_end = bos[doc + 1] if doc + 1 < len(bos) else len(tokens)
            end = min(doc_end, start + seq_len, start + need - have)
            pieces.append((start, end))
            have += end - start
            doc += 1
        out.append(pieces)
    return out, doc


@pytest.mark.parametrize("seed", range(6))
def test_pieces_follow_the_document_rule(tmp_path, seed):
    # Random documents (1 to 40 tokens, so some are longer than seq_len and some shorter than
    # one token of content), several micro-batch steps until the shard runs out.
    rng = np.random.default_rng(seed)
    tokens = []
    for _ in range(200):
        tokens += [BOS] + rng.integers(0, BOS, size=int(rng.integers(0, 40))).tolist()
    path = tmp_path / "fineweb_train_000001.bin"
    write_shard(path, np.array(tokens, dtype=np.uint16))
    world_size = int(rng.choice([1, 2, 4]))
    seq_len = int(rng.integers(3, 30))
    loader = TrainLoader([path], batch_size=8 * 37, seq_len=seq_len, micro_batches=8,
                         world_size=world_size, bos_id=BOS, bigram_vocab=97)
    doc, steps = 0, 0
    while True:
        expected = _pieces_by_loop(tokens, doc, 37, seq_len, world_size)
        per_rank, next_doc = loader._pieces(loader.shard)
        if expected is None:
            assert per_rank is None
            break
        got = [[(int(a), int(a + n)) for a, n in zip(starts, lengths)] for starts, lengths in per_rank]
        assert (got, next_doc) == expected
        loader.shard.next_doc = doc = expected[1]
        steps += 1
    assert steps >= 3


def test_set_batch_changes_tokens_and_piece_length(two_shards):
    loader = _loader(two_shards)
    loader.set_batch(40, 100)   # 5 tokens per rank, whole documents
    b = loader.next_batch()
    assert b.inputs.tolist() == [9, 1, 2, 3, 9] and b.targets.tolist() == [1, 2, 3, 9, 4]
    assert b.cu_seqlens[:3].tolist() == [0, 4, 5]


def test_bigram_hash_matches_integer_arithmetic():
    tokens = np.array([50256, 17, 50303, 0, 123], dtype=np.int32)
    mod = 251_519
    expected = [mod] + [((36313 * t) ^ (27191 * p)) % mod for p, t in zip(tokens[:-1].tolist(), tokens[1:].tolist())]
    assert bigram_hash(tokens, 251_520).tolist() == expected
    assert bigram_hash(tokens, 251_520).dtype == np.int32


def test_val_loader_windows_and_rollover(tmp_path):
    # 8 micro-batches of 2 tokens: each step takes 2 tokens per rank, 4 with 2 ranks
    write_shard(tmp_path / "v_val_0.bin", [9, 1, 2, 9, 3, 4, 5, 6])
    write_shard(tmp_path / "v_val_1.bin", [7, 9, 8, 1, 2, 3])
    files = [tmp_path / "v_val_0.bin", tmp_path / "v_val_1.bin"]
    kw = dict(batch_size=16, micro_batches=8, bos_id=BOS, bigram_vocab=20, world_size=2)
    r0, r1 = ValLoader(files, rank=0, **kw), ValLoader(files, rank=1, **kw)
    a, b = r0.next_batch(), r1.next_batch()
    assert (a.inputs.tolist(), a.targets.tolist()) == ([9, 1], [1, 2])
    assert (b.inputs.tolist(), b.targets.tolist()) == ([2, 9], [9, 3])
    assert a.cu_seqlens[:2].tolist() == [0, 0]   # a BOS at position 0 gives an empty first document
    assert b.cu_seqlens[:3].tolist() == [0, 1, 2]
    # 4 + 4 + 1 >= 8 (the record's test keeps one token spare): the second step starts the next shard
    a, b = r0.next_batch(), r1.next_batch()
    assert a.inputs.tolist() == [7, 9] and b.inputs.tolist() == [8, 1]
    with pytest.raises(SpeedtraceError, match="not enough validation tokens"):
        r0.next_batch()


def _conditional_entropy_from_counts(tokens):
    t = tokens.astype(np.int64)
    n = int(t.max()) + 1
    ctx = t[:-2] * n + t[1:-1]
    joint = {}
    for c, x in zip(ctx.tolist(), t[2:].tolist()):
        joint.setdefault(c, {}).setdefault(x, 0)
        joint[c][x] += 1
    total, h = len(ctx), 0.0
    for nexts in joint.values():
        m = sum(nexts.values())
        for k in nexts.values():
            h -= k / total * np.log(k / m)
    return h


def test_markov_source_entropy_rate_matches_the_stream():
    # A small alphabet so that 200k tokens visit every context often: the plug-in estimate of
    # H(x_t | x_t-2, x_t-1) from counts must agree with the closed form.
    source = MarkovSource(alphabet=12, bos_id=12, candidates=6, support=3, end_prob=0.1, seed=3)
    tokens = source.generate(200_000, np.random.default_rng(5))
    assert tokens[0] == 12
    assert _conditional_entropy_from_counts(tokens) == pytest.approx(source.entropy_rate, abs=0.01)
    bos_share = (tokens == 12).mean()
    assert bos_share == pytest.approx(0.1 / 1.1, abs=0.005)
    # no empty documents
    assert not np.any((tokens[:-1] == 12) & (tokens[1:] == 12))


def test_synth_writes_shards_and_facts(tmp_path):
    facts = synth(tmp_path, train_tokens=5000, val_tokens=2000, shard_tokens=2000)
    assert [p.name for p in find_shards(tmp_path, "train")] == [
        "synth_train_000000.bin", "synth_train_000001.bin", "synth_train_000002.bin"]
    assert read_shard(tmp_path / "synth_train_000002.bin").size == 1000
    stored = json.loads((tmp_path / "synth.json").read_text())
    assert stored["entropy_rate"] == facts["entropy_rate"]
    # the stream is far more predictable from its context than from token frequencies alone
    assert facts["entropy_rate"] < facts["bigram_entropy"] < facts["unigram_entropy"]
    # same seed, same data
    synth(tmp_path / "again", train_tokens=5000, val_tokens=2000, shard_tokens=2000)
    assert (tmp_path / "again" / "synth_val_000000.bin").read_bytes() == (tmp_path / "synth_val_000000.bin").read_bytes()


def test_data_synth_command_prints_entropies(tmp_path, capsys):
    rc = cli_main(["data", "synth", str(tmp_path), "--train-tokens", "4000", "--val-tokens", "1000"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "entropy rate" in out and "unigram entropy" in out
    assert find_shards(tmp_path, "val")


def test_bigram_entropy_by_hand():
    from speedtrace.trainer.data import bigram_entropy

    # after 1: 2, 2, 3, 2 (p = 3/4, 1/4); after 2: 1, 1; after 3: 50000; after 50000: 1
    tokens = np.array([1, 2, 1, 2, 1, 3, 50000, 1, 2])
    expected = (3 * np.log(4 / 3) + np.log(4)) / 8
    assert bigram_entropy(tokens) == pytest.approx(expected, abs=1e-12)


def test_staging_packs_arrays_for_one_copy_and_keeps_earlier_batches():
    import torch

    from speedtrace.trainer.data import PinnedStaging

    rng = np.random.default_rng()
    staging = PinnedStaging("cpu")
    kept = []
    # More uploads than buffers, with sizes that grow (a buffer is replaced) and odd lengths.
    for i in range(2 * PinnedStaging.SLOTS + 1):
        n = int(rng.integers(1, 50)) + 40 * i
        arrays = (rng.integers(-2**31, 2**31 - 1, n, dtype=np.int32),
                  rng.integers(-2**62, 2**62, n, dtype=np.int64),
                  rng.integers(0, 1000, 2 * i + 3, dtype=np.int32),
                  rng.integers(0, 2**20, n, dtype=np.int32))
        out = staging.upload(arrays)
        assert [t.dtype for t in out] == [torch.int32, torch.int64, torch.int32, torch.int32]
        base = out[0].data_ptr()
        assert all((t.data_ptr() - base) % PinnedStaging.ALIGN == 0 for t in out)
        # All four views share the one copied buffer.
        assert len({t.untyped_storage().data_ptr() for t in out}) == 1
        kept.append((arrays, out))
    for arrays, out in kept:
        for a, t in zip(arrays, out):
            assert np.array_equal(t.numpy(), a)


# -- web-text-like document lengths ----------------------------------------------------------------
def test_lognormal_lengths_match_the_distributions_formulas():
    # X lognormal with ln X ~ N(mu, sigma²): E[X] = exp(mu + sigma²/2), median exp(mu),
    # Var X = (exp(sigma²) − 1)·E[X]². The default: mean 650, sigma 1 → mu = ln 650 − 1/2.
    lengths = LognormalLengths()
    mu = math.log(650) - 0.5
    assert lengths.mu == pytest.approx(mu)
    draws = lengths.sample(np.random.default_rng(11), 200_000)
    assert draws.min() >= 1 and draws.dtype == np.int64
    sd = math.sqrt(math.e - 1) * 650
    assert abs(draws.mean() - math.exp(mu + 0.5)) < 4 * sd / math.sqrt(draws.size)   # 4 standard errors
    assert np.median(draws) == pytest.approx(math.exp(mu), rel=0.02)                 # 394.2
    # a long tail: P(X > 2000) = Q((ln 2000 − mu)/sigma) ≈ 0.0307
    tail = 0.5 * math.erfc((math.log(2000) - mu) / math.sqrt(2))
    assert (draws > 2000).mean() == pytest.approx(tail, abs=0.002)


def test_lognormal_pmf_stats_against_independent_estimates():
    # Wide: one-token bins are fine, so H(L) is the differential entropy mu + 1/2 + ln(sigma·sqrt(2π)).
    wide = LognormalLengths(650, 1.0)
    mean, entropy = wide.pmf_stats()
    assert mean == pytest.approx(650, abs=0.05)
    assert entropy == pytest.approx(wide.mu + 0.5 + math.log(math.sqrt(2 * math.pi)), abs=1e-3)
    # Narrow and short: rounding matters; compare with the plug-in estimates of many draws.
    narrow = LognormalLengths(6, 0.6)
    draws = narrow.sample(np.random.default_rng(2), 400_000)
    _, counts = np.unique(draws, return_counts=True)
    p = counts / counts.sum()
    mean, entropy = narrow.pmf_stats()
    assert mean == pytest.approx(draws.mean(), abs=0.02)
    assert entropy == pytest.approx(float(-(p * np.log(p)).sum()), abs=0.01)


def test_markov_stream_with_lognormal_documents():
    source = MarkovSource(alphabet=12, bos_id=12, candidates=6, support=3, seed=3)
    lengths = LognormalLengths(40, 0.8)
    tokens = source.generate(300_000, np.random.default_rng(4), lengths)
    assert tokens[0] == 12 and tokens.size == 300_000
    bos = np.flatnonzero(tokens == 12)
    content = np.diff(bos) - 1          # content tokens of each complete document
    assert content.min() >= 1           # no empty documents
    se = math.sqrt(math.exp(0.64) - 1) * 40 / math.sqrt(content.size)
    assert abs(content.mean() - 40) < 4 * se
    # same seed, same stream; the content still follows the chain (its conditional entropy)
    again = source.generate(300_000, np.random.default_rng(4), lengths)
    assert np.array_equal(tokens, again)
    h = source.conditional_entropy
    rate = source.entropy_rate_for(lengths)
    mean, h_len = lengths.pmf_stats()
    assert rate == pytest.approx((h_len + mean * h) / (mean + 1))
    assert h * 40 / 41 < rate < h + h_len / 41


def test_data_synth_defaults_to_long_documents(tmp_path, capsys):
    rc = cli_main(["data", "synth", str(tmp_path), "--config", "speedrun", "--train-tokens", "60000",
                   "--val-tokens", "20000", "--shard-tokens", "20000"])
    assert rc == 0
    facts = json.loads((tmp_path / "synth.json").read_text())
    assert facts["doc_lengths"]["kind"] == "lognormal" and facts["doc_lengths"]["mean"] == 650
    assert 300 < facts["tokens_per_document"] < 1300     # ~120 documents: a loose range around 651
    assert "lognormal" in capsys.readouterr().out
    tokens = read_shard(tmp_path / "synth_train_000000.bin")
    assert tokens[0] == 50256
    rc = cli_main(["data", "synth", str(tmp_path / "g"), "--doc-lengths", "geometric", "--doc-len", "24",
                   "--train-tokens", "4000", "--val-tokens", "1000"])
    assert rc == 0
    assert json.loads((tmp_path / "g" / "synth.json").read_text())["doc_lengths"]["kind"] == "geometric"


@pytest.mark.parametrize("argv", [["--doc-sigma", "0"], ["--doc-len", "nan"], ["--doc-len", "0.5"],
                                  ["--doc-sigma", "5"]])
def test_data_synth_rejects_bad_lengths(tmp_path, capsys, argv):
    assert cli_main(["data", "synth", str(tmp_path), *argv]) == 2
    assert "--doc" in capsys.readouterr().err
