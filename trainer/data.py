"""Token shards, the record's two loaders, the bigram hash and synthetic data.

Shard format (the record's, shared with the FineWeb shards of modded-nanogpt): a header of 256
int32 — magic 20240520, version 1, token count — then the tokens as uint16 from byte 1024.

Training batches are BOS-aligned: every rank of a micro-batch step takes whole documents in
order, each cut at ``max_seq_len`` (the rest of a long document is dropped), until it has
exactly ``per_rank_tokens + 1`` tokens; inputs and targets are that buffer shifted by one.
Validation batches are plain contiguous windows. Both come with ``cu_seqlens`` (document starts,
padded to a multiple of 128 entries) and the bigram hash ids the model embeds.
"""

from __future__ import annotations

import functools
import glob
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speedtrace.errors import SpeedtraceError

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TRAIN_GLOB = "*train_*.bin"
VAL_GLOB = "*val_*.bin"


# -- shard files ------------------------------------------------------------------------------
def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> None:
    """Write ``tokens`` (values below 65536) as one shard."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 2**16):
        raise ValueError("shard tokens must fit in uint16")
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[:3] = (MAGIC, VERSION, tokens.size)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(np.uint16).tobytes())


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """The tokens of one shard as uint16; a bad header or a short file is a SpeedtraceError."""
    path = Path(path)
    try:
        with path.open("rb", buffering=0) as f:
            raw = f.read(HEADER_BYTES)
            header = np.frombuffer(raw[: len(raw) // 4 * 4], dtype=np.int32)
            if header.size < 3:
                raise SpeedtraceError(f"{path}: too short for a shard header ({header.size * 4} bytes)")
            if header[0] != MAGIC:
                raise SpeedtraceError(f"{path}: not a token shard (magic {header[0]}, expected {MAGIC})")
            if header[1] != VERSION:
                raise SpeedtraceError(f"{path}: unsupported shard version {header[1]} (expected {VERSION})")
            count = int(header[2])
            if header.size < HEADER_INTS:
                raise SpeedtraceError(f"{path}: truncated header")
            tokens = np.empty(count, dtype=np.uint16)
            nbytes = f.readinto(memoryview(tokens).cast("B"))
    except OSError as exc:
        raise SpeedtraceError(f"{path}: cannot read shard ({exc.strerror or exc})") from None
    if nbytes != 2 * count:
        raise SpeedtraceError(f"{path}: truncated shard: header says {count} tokens, file holds {nbytes // 2}")
    return tokens


def find_shards(data_dir: str | os.PathLike, split: str) -> list[Path]:
    """Sorted shards of ``split`` ('train' or 'val') in ``data_dir`` (or its data/fineweb10B/)."""
    pattern = {"train": TRAIN_GLOB, "val": VAL_GLOB}[split]
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise SpeedtraceError(f"{data_dir}: data directory not found")
    for d in (data_dir, data_dir / "data" / "fineweb10B"):
        files = sorted(Path(p) for p in glob.glob(str(d / pattern)))
        if files:
            return files
    raise SpeedtraceError(f"{data_dir}: no {split} shards ({pattern}); make some with `speedtrace data synth`")


# -- helpers shared by both loaders --------------------------------------------------------------
def bigram_hash(inputs: np.ndarray, vocab: int, mul_a: int = 36313, mul_b: int = 27191) -> np.ndarray:
    """Hash of (token, previous token) into [0, vocab - 1); position 0 gets the reserved id vocab - 1.

    int32 arithmetic as in the record (for GPT-2 ids the products stay below 2**31); document
    boundaries are not masked, so a BOS hashes with the previous document's last token.
    """
    x = inputs.astype(np.int32)
    out = np.empty_like(x)
    mod = vocab - 1
    out[0] = mod
    out[1:] = np.bitwise_xor(np.int32(mul_a) * x[1:], np.int32(mul_b) * x[:-1]) % mod
    return out


def padded_doc_count(per_rank_tokens: int, needed: int) -> int:
    """Entries of cu_seqlens: the record's next multiple of 128 of tokens // 300 (median document
    ~400 tokens), grown (again to a multiple of 128) only if a batch holds more documents."""
    n = max(128, math.ceil(per_rank_tokens // 300 / 128) * 128)
    if needed > n:
        n = math.ceil(needed / 128) * 128
    return n


@dataclass
class Batch:
    """One rank's micro-batch, on the host (numpy)."""

    inputs: np.ndarray       # int32 (T,)
    targets: np.ndarray      # int64 (T,)
    cu_seqlens: np.ndarray   # int32 (padded,)
    bigram_ids: np.ndarray   # int32 (T,)

    def to(self, device):
        """(inputs, targets, cu_seqlens, bigram_ids) as torch tensors on ``device``."""
        import torch

        arrays = (self.inputs, self.targets, self.cu_seqlens, self.bigram_ids)
        device = torch.device(device)
        if device.type != "cuda":
            return tuple(torch.from_numpy(a) for a in arrays)
        return _staging(device).upload(arrays)


class PinnedStaging:
    """Pinned host buffers that a micro-batch's arrays are packed into for one copy to the GPU.

    One copy and a few views instead of pinning and copying each array: eight micro-batches a
    step pay the per-copy host cost (and, under a profiler, its recorded ops) once each, not four
    times. The buffers are reused in turn; an event per buffer keeps a buffer from being
    overwritten while its copy may still be reading it.
    """

    SLOTS = 4
    ALIGN = 16   # bytes: every array starts aligned for vector loads

    def __init__(self, device):
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"   # off the GPU (tests): unpinned, no events
        self.buffers = [None] * self.SLOTS
        self.events = [None] * self.SLOTS
        self.slot = 0

    def upload(self, arrays):
        import torch

        offsets, total = [], 0
        for a in arrays:
            offsets.append(total)
            total += -(-a.nbytes // self.ALIGN) * self.ALIGN
        s, self.slot = self.slot, (self.slot + 1) % self.SLOTS
        if self.events[s] is not None:
            self.events[s].synchronize()
        if self.buffers[s] is None or self.buffers[s].numel() < total:
            self.buffers[s] = torch.empty(total, dtype=torch.uint8, pin_memory=self.cuda)
            self.events[s] = torch.cuda.Event() if self.cuda else None
        host = self.buffers[s].numpy()
        for off, a in zip(offsets, arrays):
            host[off: off + a.nbytes] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        dev = self.buffers[s][:total].to(self.device, non_blocking=True, copy=True)
        if self.cuda:
            self.events[s].record()
        return tuple(dev[off: off + a.nbytes].view(_torch_dtype(a.dtype)) for off, a in zip(offsets, arrays))


@functools.cache
def _torch_dtype(dtype: np.dtype):
    import torch

    return {np.dtype(np.int32): torch.int32, np.dtype(np.int64): torch.int64}[np.dtype(dtype)]


_STAGING: dict = {}


def _staging(device) -> PinnedStaging:
    import torch

    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device not in _STAGING:
        _STAGING[device] = PinnedStaging(device)
    return _STAGING[device]


def _make_batch(buf: np.ndarray, cu: np.ndarray, per_rank: int, bigram_vocab: int, hash_muls) -> Batch:
    inputs = buf[:-1].astype(np.int32)
    cu_full = np.full(padded_doc_count(per_rank, cu.size), per_rank, dtype=np.int32)
    cu_full[: cu.size] = cu
    return Batch(inputs, buf[1:].astype(np.int64), cu_full,
                 bigram_hash(inputs, bigram_vocab, *hash_muls))


# -- training loader ------------------------------------------------------------------------------
class _Shard:
    """A loaded training shard with the positions of its BOS tokens."""

    def __init__(self, path: Path, bos_id: int):
        self.path = path
        self.tokens = read_shard(path)
        self.bos = np.flatnonzero(self.tokens == bos_id)
        self.next_doc = 0   # index into self.bos of the next unread document


class _Prefetch:
    """Loads the next shard on a background thread while the current one is used."""

    def __init__(self, path: Path, bos_id: int):
        self._result = {}
        self._thread = threading.Thread(target=self._load, args=(path, bos_id), daemon=True)
        self._thread.start()

    def _load(self, path, bos_id):
        try:
            self._result["shard"] = _Shard(path, bos_id)
        except BaseException as exc:  # noqa: B036 - re-raised on the consumer's thread
            self._result["error"] = exc

    def get(self) -> _Shard:
        self._thread.join()
        if "error" in self._result:
            raise self._result["error"]
        return self._result["shard"]


class TrainLoader:
    """The record's BOS-aligned loader over the sorted train shards, one pass, no cycling.

    Each call of ``next_batch`` is one micro-batch step of all ranks: per-rank tokens are
    ``batch_size / micro_batches``, rank r takes the r-th consecutive range of documents and gets
    its own part back. When a shard cannot fill a whole micro-batch step, that step's partial
    documents are dropped and the next shard (prefetched in the background) takes over.
    """

    def __init__(self, files, *, batch_size: int, seq_len: int, micro_batches: int = 8,
                 rank: int = 0, world_size: int = 1, bos_id: int = 50256, bigram_vocab: int = 251_520,
                 hash_muls: tuple[int, int] = (36313, 27191)):
        self.files = [Path(f) for f in files]
        if not self.files:
            raise SpeedtraceError("no training shards given")
        if micro_batches % world_size:
            raise ValueError(f"world size {world_size} does not divide {micro_batches} micro-batches")
        self.micro_batches, self.rank, self.world_size = micro_batches, rank, world_size
        self.bos_id, self.bigram_vocab, self.hash_muls = bos_id, bigram_vocab, hash_muls
        self.set_batch(batch_size, seq_len)
        self.shard_index = 0
        self.shard = _Shard(self.files[0], bos_id)
        self._prefetch = self._start_prefetch(1)

    def _start_prefetch(self, index):
        return _Prefetch(self.files[index], self.bos_id) if index < len(self.files) else None

    def set_batch(self, batch_size: int, seq_len: int) -> None:
        """Change the global batch size and the longest document piece from the next batch on."""
        if batch_size % self.micro_batches:
            raise ValueError(f"batch size {batch_size} is not a multiple of {self.micro_batches} micro-batches")
        self.batch_size, self.seq_len = batch_size, seq_len
        self.per_rank_tokens = batch_size // self.micro_batches

    @property
    def position(self) -> tuple[int, int]:
        """(shard index, next document index): where the next batch starts."""
        return self.shard_index, self.shard.next_doc

    def _pieces(self, shard: _Shard):
        """(starts, lengths) of every rank's document pieces for one micro-batch step, or None if
        the shard runs out.

        Documents are taken in order, each cut to seq_len, until a rank has per_rank_tokens + 1
        tokens; the last one is cut to fit. Vectorised, because short documents (the synthetic
        shards' are tens of tokens) make hundreds of pieces per micro-batch, and a Python loop
        over them would put host time on every step.
        """
        bos, size, need = shard.bos, shard.tokens.size, self.per_rank_tokens + 1
        doc = shard.next_doc
        per_rank = []
        for _ in range(self.world_size):
            # Every document gives at least one token (its BOS), so need documents suffice.
            starts = bos[doc:doc + need]
            ends = np.append(bos[doc + 1:doc + 1 + starts.size], size)[:starts.size]
            lengths = np.minimum(ends - starts, self.seq_len)
            filled = np.cumsum(lengths)
            last = int(np.searchsorted(filled, need))   # first document that completes the rank
            if last >= starts.size:
                return None, doc
            lengths = lengths[:last + 1].copy()
            lengths[-1] -= int(filled[last]) - need
            per_rank.append((starts[:last + 1], lengths))
            doc += last + 1
        return per_rank, doc

    def next_batch(self) -> Batch:
        """This rank's next micro-batch."""
        while True:
            per_rank, doc = self._pieces(self.shard)
            if per_rank is not None:
                break
            if self._prefetch is None:
                raise SpeedtraceError(
                    f"{self.files[-1].parent}: training data exhausted after {len(self.files)} shard(s)")
            self.shard = self._prefetch.get()
            self.shard_index += 1
            self._prefetch = self._start_prefetch(self.shard_index + 1)
        self.shard.next_doc = doc
        starts, lengths = per_rank[self.rank]
        # Gather the pieces in one indexing: position i of piece p reads starts[p] + i.
        offsets = np.cumsum(lengths) - lengths
        buf = self.shard.tokens[np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))]
        cu = np.append(0, np.cumsum(lengths)).astype(np.int32)
        cu[-1] -= 1  # the buffer holds one extra token, for the last target
        return _make_batch(buf, cu, self.per_rank_tokens, self.bigram_vocab, self.hash_muls)


class ValLoader:
    """The record's unaligned validation loader: contiguous windows from the start of the val shards.

    Micro-batch step k gives rank r the ``per_rank_tokens (+1)`` tokens at
    ``pos + r * per_rank_tokens``; ``pos`` advances by all ranks' tokens and moves to the next
    shard (from its start) when the current one cannot hold another step.
    """

    def __init__(self, files, *, batch_size: int, micro_batches: int = 8, rank: int = 0,
                 world_size: int = 1, bos_id: int = 50256, bigram_vocab: int = 251_520,
                 hash_muls: tuple[int, int] = (36313, 27191)):
        self.files = [Path(f) for f in files]
        if not self.files:
            raise SpeedtraceError("no validation shards given")
        if batch_size % micro_batches:
            raise ValueError(f"val batch size {batch_size} is not a multiple of {micro_batches} micro-batches")
        self.rank, self.world_size = rank, world_size
        self.bos_id, self.bigram_vocab, self.hash_muls = bos_id, bigram_vocab, hash_muls
        self.per_rank_tokens = batch_size // micro_batches
        self.step_tokens = self.per_rank_tokens * world_size
        self.file_index, self.pos = 0, 0
        self.tokens = read_shard(self.files[0])

    def next_batch(self) -> Batch:
        while self.pos + self.step_tokens + 1 >= self.tokens.size:
            self.file_index += 1
            if self.file_index >= len(self.files):
                raise SpeedtraceError(
                    f"{self.files[-1].parent}: not enough validation tokens for a "
                    f"{self.step_tokens}-token step after {len(self.files)} shard(s)")
            self.tokens, self.pos = read_shard(self.files[self.file_index]), 0
        start = self.pos + self.rank * self.per_rank_tokens
        buf = self.tokens[start: start + self.per_rank_tokens + 1]
        self.pos += self.step_tokens
        cu = np.concatenate([[0], np.flatnonzero(buf[:-1] == self.bos_id)]).astype(np.int32)
        return _make_batch(buf, cu, self.per_rank_tokens, self.bigram_vocab, self.hash_muls)


# -- synthetic data -------------------------------------------------------------------------------
def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


class MarkovSource:
    """A fixed random order-2 Markov chain over ``alphabet`` content tokens and a BOS token.

    Each previous token b (BOS included) has ``candidates`` possible successors; the context
    (a, b) draws ``support`` of them, in a random order, with one fixed probability vector p. So
    the next content token given the two previous ones has entropy exactly H(p) whatever the
    context, most of that structure is already visible from b alone (an easy first thing for a
    model to learn), and the rest needs a. After a content token the document ends (BOS) with
    probability ``end_prob``; after BOS a content token always follows.
    """

    def __init__(self, *, alphabet: int = 256, bos_id: int = 256, candidates: int = 32,
                 support: int = 8, end_prob: float = 1 / 24, seed: int = 0):
        if not 0 < support <= candidates <= alphabet:
            raise ValueError("need 0 < support <= candidates <= alphabet")
        if bos_id < alphabet:
            raise ValueError(f"BOS id {bos_id} collides with the content tokens 0..{alphabet - 1}")
        self.alphabet, self.bos_id, self.end_prob, self.seed = alphabet, bos_id, end_prob, seed
        rng = np.random.default_rng(seed)
        self.p = np.sort(rng.dirichlet(np.ones(support)))[::-1].copy()
        n_ctx = alphabet + 1   # content tokens, then BOS as context index `alphabet`
        cands = np.stack([rng.choice(alphabet, candidates, replace=False) for _ in range(n_ctx)])
        order = rng.random((n_ctx, n_ctx, candidates)).argsort(axis=-1)[..., :support]
        # successors[a, b, k]: the k-th most likely successor of context (a, b)
        self.successors = np.take_along_axis(np.broadcast_to(cands[None], (n_ctx, n_ctx, candidates)),
                                             order, axis=-1)

    @property
    def conditional_entropy(self) -> float:
        """H(next content token | two previous tokens), nats: the same for every context."""
        return _entropy(self.p)

    @property
    def entropy_rate(self) -> float:
        """Entropy per token of the whole stream (content and BOS), nats: the best possible loss."""
        q = self.end_prob
        bos_share = q / (1 + q)  # each BOS is followed by content; content ends with prob. q
        end_entropy = _entropy(np.array([q, 1 - q]))
        h = self.conditional_entropy
        return bos_share * h + (1 - bos_share) * (end_entropy + (1 - q) * h)

    def entropy_rate_for(self, lengths: LognormalLengths) -> float:
        """Entropy per token, nats, of the stream whose documents have ``lengths`` content tokens.

        A document is a BOS and L content tokens, L drawn independently; a predictor that knows
        how far into its document it is pays H(L) once per document (where it ends) and H(p) per
        content token, so the rate is (H(L) + E[L]·H(p)) / (E[L] + 1). With geometric lengths
        this is ``entropy_rate``.
        """
        mean, h_len = lengths.pmf_stats()
        return (h_len + mean * self.conditional_entropy) / (mean + 1)

    def generate(self, n_tokens: int, rng: np.random.Generator,
                 lengths: LognormalLengths | None = None) -> np.ndarray:
        """``n_tokens`` of the stream, starting with a BOS.

        Without ``lengths`` a document ends after each content token with probability
        ``end_prob`` (geometric lengths); with them, document lengths are drawn from ``lengths``
        first, then the content.
        """
        if lengths is not None:
            return self._generate_documents(n_tokens, rng, lengths)
        k = np.searchsorted(np.cumsum(self.p), rng.random(n_tokens), side="right")
        k = np.minimum(k, self.p.size - 1).tolist()
        ends = (rng.random(n_tokens) < self.end_prob).tolist()
        succ = self.successors.reshape(-1).tolist()
        n_ctx, s = self.alphabet + 1, self.p.size
        bos_ctx = self.alphabet
        out = [0] * n_tokens
        a, b = bos_ctx, bos_ctx
        out[0] = self.bos_id
        for i in range(1, n_tokens):
            if b != bos_ctx and ends[i]:
                tok, ctx = self.bos_id, bos_ctx
            else:
                tok = succ[(a * n_ctx + b) * s + k[i]]
                ctx = tok
            out[i] = tok
            a, b = b, ctx
        return np.array(out, dtype=np.uint16)

    def _generate_documents(self, n_tokens: int, rng: np.random.Generator, lengths: LognormalLengths) -> np.ndarray:
        starts = lengths.document_starts(n_tokens, rng)
        is_bos = np.zeros(n_tokens, dtype=bool)
        is_bos[starts] = True
        k = np.searchsorted(np.cumsum(self.p), rng.random(n_tokens), side="right")
        k = np.minimum(k, self.p.size - 1).tolist()
        succ = self.successors.reshape(-1).tolist()
        n_ctx, s = self.alphabet + 1, self.p.size
        bos_ctx = self.alphabet
        out = [0] * n_tokens
        a = b = bos_ctx
        for i, bos in enumerate(is_bos.tolist()):
            if bos:
                out[i], ctx = self.bos_id, bos_ctx
            else:
                out[i] = ctx = succ[(a * n_ctx + b) * s + k[i]]
            a, b = b, ctx
        return np.array(out, dtype=np.uint16)


def _erfc(x: np.ndarray) -> np.ndarray:
    """Elementwise erfc (numpy has none; math's is accurate far into the tails)."""
    return np.frompyfunc(math.erfc, 1, 1)(np.asarray(x, dtype=np.float64)).astype(np.float64)


class LognormalLengths:
    """Long-tailed document lengths like web text's: L = max(1, round(X)) content tokens, where
    ln X is normal with standard deviation ``sigma`` and X has mean ``mean``.

    The defaults (mean 650, σ 1: median ≈ 394) are near FineWeb's documents in GPT-2 tokens,
    whose median is about 400 (the record sizes its document table from that) and whose mean is
    several hundred tokens with a long tail of long pages. Document length matters to the step
    time: flex attention skips the blocks between documents, so short documents make the
    attention cheap.
    """

    def __init__(self, mean: float = 650.0, sigma: float = 1.0):
        if not mean >= 1:
            raise ValueError(f"mean document length {mean} is below one token")
        if not 0 < sigma <= 3:
            raise ValueError(f"sigma {sigma} must be in (0, 3]")
        self.mean, self.sigma = float(mean), float(sigma)
        self.mu = math.log(self.mean) - self.sigma ** 2 / 2   # E[X] = exp(mu + sigma²/2)

    def as_dict(self) -> dict:
        return {"kind": "lognormal", "mean": self.mean, "sigma": self.sigma, "median": math.exp(self.mu)}

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` document lengths (content tokens, int64, at least 1)."""
        return np.maximum(1, np.rint(rng.lognormal(self.mu, self.sigma, size))).astype(np.int64)

    def document_starts(self, n_tokens: int, rng: np.random.Generator) -> np.ndarray:
        """Positions of the BOS tokens in a stream of ``n_tokens`` that starts with one."""
        starts, pos = [], 0
        while pos < n_tokens:
            # Enough documents to cover the rest of the stream, most of the time in one draw.
            n = max(16, int(1.25 * (n_tokens - pos) / (self.mean + 1)) + 16)
            cut = pos + np.cumsum(np.concatenate([[0], self.sample(rng, n) + 1]))
            starts.append(cut[:-1][cut[:-1] < n_tokens])
            pos = int(cut[-1])
        return np.concatenate(starts)

    def _survival(self, x: np.ndarray) -> np.ndarray:
        """P(X > x)."""
        return 0.5 * _erfc((np.log(x) - self.mu) / (self.sigma * math.sqrt(2)))

    def pmf_stats(self) -> tuple[float, float]:
        """(E[L], H(L) in nats) of the rounded lengths.

        Summed over the lengths up to a cut-off; past it, where one token is a negligible bin,
        the lognormal's own tail integrals stand in (E[X; X > a] and ∫ −f·ln f over x > a).
        """
        top = int(min(math.exp(self.mu + 8.5 * self.sigma), 1 << 18))
        edges = np.arange(1, top + 1) + 0.5           # L = l when l − ½ ≤ X < l + ½
        surv = np.concatenate([[1.0], self._survival(edges)])
        p = surv[:-1] - surv[1:]
        ls = np.arange(1, top + 1)
        nz = p > 0
        mean = float((p * ls).sum())
        entropy = float(-(p[nz] * np.log(p[nz])).sum())
        a = top + 0.5
        za = (math.log(a) - self.mu) / self.sigma
        q = 0.5 * math.erfc(za / math.sqrt(2))        # P(X > a)
        phi = math.exp(-za * za / 2) / math.sqrt(2 * math.pi)
        mean += math.exp(self.mu + self.sigma ** 2 / 2) * 0.5 * math.erfc((za - self.sigma) / math.sqrt(2))
        # −ln f(x) = ln x + ln(σ√(2π)) + z²/2 with ln x = μ + σz, integrated against φ(z) for z > za.
        entropy += ((self.mu + math.log(self.sigma * math.sqrt(2 * math.pi))) * q + self.sigma * phi
                    + 0.5 * (za * phi + q))
        return mean, entropy


def unigram_entropy(tokens: np.ndarray) -> float:
    """Entropy, nats, of the token frequencies of ``tokens`` (what a unigram model would lose)."""
    counts = np.bincount(tokens.astype(np.int64))
    return _entropy(counts / counts.sum())


def bigram_entropy(tokens: np.ndarray) -> float:
    """Empirical entropy, nats, of a token given only the previous one (an order-1 model's loss)."""
    _, t = np.unique(tokens, return_inverse=True)   # dense ids: the table is (distinct tokens)^2
    t = t.astype(np.int64)
    n = int(t.max()) + 1
    pairs, counts = np.unique(t[:-1] * n + t[1:], return_counts=True)
    prev = np.bincount(pairs // n, weights=counts, minlength=n)[pairs // n]
    return float((counts * np.log(prev / counts)).sum() / counts.sum())


def synth(data_dir: str | os.PathLike, *, train_tokens: int, val_tokens: int, shard_tokens: int,
          alphabet: int = 256, bos_id: int = 256, doc_len: float = 24.0, seed: int = 0,
          lengths: LognormalLengths | None = None) -> dict:
    """Write synthetic train and val shards of ``MarkovSource`` documents; returns their facts.

    The facts (entropies in nats, shard names, the chain's parameters) are also written to
    ``synth.json`` beside the shards. Document lengths: ``lengths`` when given (web-text-like,
    long-tailed), else geometric with ``doc_len`` mean content tokens.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if doc_len < 1:
        raise ValueError(f"mean document length {doc_len} is below one token")
    source = MarkovSource(alphabet=alphabet, bos_id=bos_id, end_prob=1 / doc_len, seed=seed)
    rng = np.random.default_rng(seed + 1)
    files, all_tokens = {"train": [], "val": []}, []
    for split, total in (("val", val_tokens), ("train", train_tokens)):
        for i, start in enumerate(range(0, total, shard_tokens)):
            tokens = source.generate(min(shard_tokens, total - start), rng, lengths)
            path = data_dir / f"synth_{split}_{i:06d}.bin"
            write_shard(path, tokens)
            files[split].append(path.name)
            all_tokens.append(tokens)
    stream = np.concatenate(all_tokens)
    if lengths is None:
        doc_lengths = {"kind": "geometric", "mean": float(doc_len)}
        rate = source.entropy_rate
    else:
        doc_lengths = lengths.as_dict()
        rate = source.entropy_rate_for(lengths)
    facts = {
        "alphabet": alphabet, "bos_id": bos_id, "seed": seed,
        "end_prob": source.end_prob if lengths is None else None,
        "doc_lengths": doc_lengths,
        "train_tokens": train_tokens, "val_tokens": val_tokens, "shard_tokens": shard_tokens,
        "conditional_entropy": source.conditional_entropy,
        "entropy_rate": rate,
        "unigram_entropy": unigram_entropy(stream),
        "bigram_entropy": bigram_entropy(stream),
        "tokens_per_document": float(stream.size / max(1, int((stream == bos_id).sum()))),
        "files": files,
    }
    (data_dir / "synth.json").write_text(json.dumps(facts, indent=2) + "\n")
    return facts
