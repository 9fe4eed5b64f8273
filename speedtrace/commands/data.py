"""`speedtrace data synth DIR`: write shards of synthetic documents in the record's .bin format."""

from __future__ import annotations

DESCRIPTION = """\
Write train and val shards of synthetic documents drawn from a fixed random order-2 Markov chain
(the record's shard format: magic 20240520, version 1, uint16 tokens), and print the entropies
that bound a model's loss on them: the chain's entropy rate (the best possible loss), the
entropy given only the previous token, and the unigram entropy of the stream. The same facts go
to DIR/synth.json. FineWeb shards (fineweb_train_*.bin, fineweb_val_*.bin) need no conversion."""


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
    p.add_argument("--doc-len", type=float, default=24.0,
                   help="mean content tokens per document (default: 24; FineWeb's median is ~400)")
    p.add_argument("--seed", type=int, default=0, help="chain and sampling seed (default: 0)")


def run(args) -> int:
    from speedtrace.errors import SpeedtraceError
    from speedtrace.trainer.config import get_config
    from speedtrace.trainer.data import synth

    for name in ("train_tokens", "val_tokens", "shard_tokens", "alphabet", "doc_len"):
        if getattr(args, name) < 1:
            raise SpeedtraceError(f"--{name.replace('_', '-')} must be positive")
    bos = get_config(args.config).model.bos_id
    if args.alphabet > bos:
        raise SpeedtraceError(f"--alphabet {args.alphabet} would reach the BOS id {bos} of the {args.config} config")
    try:
        facts = synth(args.dir, train_tokens=args.train_tokens, val_tokens=args.val_tokens,
                      shard_tokens=args.shard_tokens, alphabet=args.alphabet, bos_id=bos, doc_len=args.doc_len, seed=args.seed)
    except OSError as exc:
        raise SpeedtraceError(f"{args.dir}: cannot write shards ({exc.strerror or exc})") from None
    n_train, n_val = len(facts["files"]["train"]), len(facts["files"]["val"])
    print(f"wrote {n_train} train and {n_val} val shard(s) to {args.dir}")
    print(f"conditional entropy (next content token | two previous): {facts['conditional_entropy']:.4f} nats")
    print(f"entropy rate of the stream (best possible loss):         {facts['entropy_rate']:.4f} nats")
    print(f"entropy given the previous token only:                    {facts['bigram_entropy']:.4f} nats")
    print(f"unigram entropy of the stream:                            {facts['unigram_entropy']:.4f} nats")
    return 0
