"""Synthetic shards for the speedrun config on the GPU machine, generated in parallel.

``speedtrace data synth`` writes shards one after another and also measures the stream's
entropies; on a 16-core machine this script writes the same chain's documents (one process per
shard, each with its own random stream) in seconds, for timing runs that need tens of millions
of tokens. The chain is ``trainer.data.MarkovSource`` with the speedrun BOS id; document lengths
are ``speedtrace data synth``'s default (lognormal, mean 650 content tokens, sigma 1) unless
--doc-lengths geometric (mean --doc-len) is asked for.

    python benchmarks/synth_data_parallel.py DIR --train-shards 40 --shard-tokens 1048576
"""

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from speedtrace.trainer.config import speedrun
from speedtrace.trainer.data import LognormalLengths, MarkovSource, write_shard

BOS = speedrun().model.bos_id


def _lengths(args):
    return LognormalLengths(args.doc_len, args.doc_sigma) if args.doc_lengths == "lognormal" else None


def _one(job):
    path, n, seed, args = job
    source = MarkovSource(alphabet=256, bos_id=BOS, end_prob=1 / args.doc_len, seed=0)
    write_shard(path, source.generate(n, np.random.default_rng(seed), _lengths(args)))
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="output folder (created if missing); also gets synth.json")
    ap.add_argument("--train-shards", type=int, default=40, help="train shards (40)")
    ap.add_argument("--val-shards", type=int, default=1, help="validation shards (1)")
    ap.add_argument("--shard-tokens", type=int, default=1 << 20, help="tokens per train shard (1048576)")
    # A validation window (262,144 tokens per micro-batch at world size 1) never spans two shards.
    ap.add_argument("--val-shard-tokens", type=int, default=1 << 24, help="tokens per validation shard (16777216)")
    ap.add_argument("--doc-lengths", choices=["lognormal", "geometric"], default="lognormal",
                    help="document length distribution (lognormal: long-tailed, like web text)")
    ap.add_argument("--doc-len", type=float, default=650.0, help="mean content tokens a document (650)")
    ap.add_argument("--doc-sigma", type=float, default=1.0, help="lognormal: sigma of the log length (1.0)")
    args = ap.parse_args()
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(out / f"synth_val_{i:06d}.bin", args.val_shard_tokens, 1000 + i, args) for i in range(args.val_shards)]
    jobs += [(out / f"synth_train_{i:06d}.bin", args.shard_tokens, 1 + i, args) for i in range(args.train_shards)]
    with ProcessPoolExecutor() as pool:
        list(pool.map(_one, jobs))
    source = MarkovSource(alphabet=256, bos_id=BOS, end_prob=1 / args.doc_len, seed=0)
    lengths = _lengths(args)
    facts = {"alphabet": 256, "bos_id": BOS,
             "doc_lengths": lengths.as_dict() if lengths else {"kind": "geometric", "mean": args.doc_len},
             "entropy_rate": source.entropy_rate_for(lengths) if lengths else source.entropy_rate,
             "conditional_entropy": source.conditional_entropy, "shards": len(jobs)}
    (out / "synth.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(json.dumps(facts))


if __name__ == "__main__":
    main()
