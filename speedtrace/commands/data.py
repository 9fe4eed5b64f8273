"""`speedtrace data synth DIR`: write shards of synthetic documents in the record's .bin format."""

from __future__ import annotations

DESCRIPTION = """\
Write train and val shards of synthetic documents drawn from a fixed random order-2 Markov chain
(the record's shard format: magic 20240520, version 1, uint16 tokens), and print the entropies
that bound a model's loss on them: the chain's entropy rate (the best possible loss), the
entropy given only the previous token, and the unigram entropy of the stream. The same facts go
to DIR/synth.json. FineWeb shards (fineweb_train_*.bin, fineweb_val_*.bin) need no conversion.

Document lengths are long-tailed like web text's by default (lognormal: mean 650 content tokens,
sigma 1, so a median of ~394; FineWeb's median is ~400 GPT-2 tokens). They matter to step times:
flex attention skips the blocks between documents, so short documents make attention cheap.
--doc-lengths geometric gives the earlier memoryless lengths (each content token ends its
document with probability 1/--doc-len)."""


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("synth", help="write synthetic Markov-chain shards", description=DESCRIPTION)
    p.add_argument("dir", help="output directory (created if missing)")
    p.add_argument("--config", default="tiny", choices=["tiny", "speedrun"],
                   help="take the BOS id from this trainer config (default: tiny)")
    p.add_argument("--train-tokens", type=int, default=4 * 131_072, help="train tokens (default: 524288)")
    p.add_argument("--val-tokens", type=int, default=65_536, help="val tokens (default: 65536)")
    p.add_argument("--shard-tokens", type=int, default=131_072, help="tokens per shard (default: 131072)")
    p.add_argument("--alphabet", type=int, default=256, help="content tokens 0..N-1 (default: 256)")
    p.add_argument("--doc-lengths", choices=["lognormal", "geometric"], default="lognormal",
                   help="document length distribution (default: lognormal, long-tailed like web text)")
    p.add_argument("--doc-len", type=float, default=650.0,
                   help="mean content tokens per document (default: 650)")
    p.add_argument("--doc-sigma", type=float, default=1.0,
                   help="lognormal: standard deviation of the log length (default: 1.0; 0 < sigma <= 3)")
    p.add_argument("--seed", type=int, default=0, help="chain and sampling seed (default: 0)")


def run(args) -> int:
    import math

    from speedtrace.errors import SpeedtraceError
    from speedtrace.trainer.config import get_config
    from speedtrace.trainer.data import LognormalLengths, synth

    for name in ("train_tokens", "val_tokens", "shard_tokens", "alphabet", "doc_len"):
        value = getattr(args, name)
        if not (value >= 1 and math.isfinite(value)):   # NaN fails both comparisons
            raise SpeedtraceError(f"--{name.replace('_', '-')} must be at least 1 and finite")
    if args.doc_lengths == "lognormal" and not 0 < args.doc_sigma <= 3:
        raise SpeedtraceError(f"--doc-sigma {args.doc_sigma} must be in (0, 3]")
    lengths = LognormalLengths(args.doc_len, args.doc_sigma) if args.doc_lengths == "lognormal" else None
    bos = get_config(args.config).model.bos_id
    if args.alphabet > bos:
        raise SpeedtraceError(f"--alphabet {args.alphabet} would reach the BOS id {bos} of the {args.config} config")
    try:
        facts = synth(args.dir, train_tokens=args.train_tokens, val_tokens=args.val_tokens,
                      shard_tokens=args.shard_tokens, alphabet=args.alphabet, bos_id=bos, doc_len=args.doc_len,
                      seed=args.seed, lengths=lengths)
    except OSError as exc:
        raise SpeedtraceError(f"{args.dir}: cannot write shards ({exc.strerror or exc})") from None
    n_train, n_val = len(facts["files"]["train"]), len(facts["files"]["val"])
    print(f"wrote {n_train} train and {n_val} val shard(s) to {args.dir}")
    d = facts["doc_lengths"]
    shape = f"lognormal, sigma {d['sigma']:g}, median {d['median']:.0f}" if d["kind"] == "lognormal" else "geometric"
    print(f"document lengths: {shape}, mean {d['mean']:g} content tokens "
          f"({facts['tokens_per_document']:.1f} tokens a document in the shards, BOS included)")
    print(f"conditional entropy (next content token | two previous): {facts['conditional_entropy']:.4f} nats")
    print(f"entropy rate of the stream (best possible loss):         {facts['entropy_rate']:.4f} nats")
    print(f"entropy given the previous token only:                    {facts['bigram_entropy']:.4f} nats")
    print(f"unigram entropy of the stream:                            {facts['unigram_entropy']:.4f} nats")
    return 0
