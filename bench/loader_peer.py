"""Python peer of the wave-data loader: the same shards read with pyarrow, tokenized with Hugging Face
`tokenizers` (same tokenizer.json, same max length, same long-text cut), padded with numpy.

Usage: loader_peer.py --uri DIR --tokenizer tokenizer.json|"" --max-length 128 --batch 64 --threads 1 --seconds 10
Prints one JSON line. Thread count is applied before `tokenizers` is imported (RAYON_NUM_THREADS).
"""
import argparse, json, os, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--uri", required=True)
ap.add_argument("--tokenizer", default="")
ap.add_argument("--max-length", type=int, default=128)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--seconds", type=float, default=10.0)
ap.add_argument("--split", default="train")
a = ap.parse_args()
os.environ["RAYON_NUM_THREADS"] = str(a.threads)
os.environ["RAYON_RS_NUM_THREADS"] = str(a.threads)
os.environ["TOKENIZERS_PARALLELISM"] = "true" if a.threads > 1 else "false"

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

manifest = json.load(open(os.path.join(a.uri, "manifest.json")))
names = [c["name"] for c in manifest["schema"]]
shards = [os.path.join(a.uri, s["path"]) for s in manifest["splits"][a.split]["shards"]]
pad_id = 0
tok = None
if a.tokenizer:
    tok = Tokenizer.from_file(a.tokenizer)
    tok.no_padding()
    tok.enable_truncation(a.max_length)
    pad_id = tok.token_to_id("[PAD]") or 0
use_ids = tok is None
cols = ["input_ids"] if use_ids else ["text"]
if "label" in names:
    cols.append("label")
cut = 1024 + 32 * a.max_length  # same long-text cut as the Rust loader


def batches():
    while True:  # endless, like the training loader
        for path in shards:
            for rb in pq.ParquetFile(path).iter_batches(batch_size=a.batch, columns=cols):
                yield rb


def make(rb):
    if use_ids:
        rows = [r[: a.max_length] for r in rb.column("input_ids").to_pylist()]
    else:
        texts = [t[:cut] for t in rb.column("text").to_pylist()]
        rows = [e.ids for e in tok.encode_batch(texts)]
    n, L = len(rows), max(len(r) for r in rows)
    ids = np.full((n, L), pad_id, dtype=np.int64)
    mask = np.zeros((n, L), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    labels = np.asarray(rb.column("label").to_pylist(), dtype=np.int64) if "label" in cols else np.full(n, -100)
    return ids, mask, labels, int(mask.sum())


it = batches()
make(next(it))  # warm-up
t0 = time.perf_counter()
samples = tokens = 0
while time.perf_counter() - t0 < a.seconds:
    rb = next(it)
    if rb.num_rows < a.batch:  # shard tails: keep batches full like the Rust loader
        continue
    ids, mask, labels, real = make(rb)
    samples += ids.shape[0]
    tokens += real
s = time.perf_counter() - t0
print(json.dumps({"impl": "python", "uri": a.uri, "threads": a.threads, "shuffle": False, "max_length": a.max_length,
                  "batch": a.batch, "samples": samples, "tokens": tokens, "seconds": s,
                  "samples_per_s": samples / s, "tokens_per_s": tokens / s}))
