"""Gradient synchronisation and the step-time split of data-parallel wave-dist, against a raw
MPI all-reduce of the same number of bytes, measured in the same run (2 and 4 ranks).

For each world size: `mpirun -n R wave-dist train` (configs/imdb-quick.toml, global batch 64, one
intra-op thread per rank) for a fixed number of steps, then the raw C peer (bench/raw_allreduce.c)
all-reducing as many floats as the model has parameters. The trainer's metrics split every step
into data wait, compute (forward, backward, optimizer), skew (waiting at a barrier for the slowest
rank) and the gradient reduction itself; the reduction is what is compared with the raw peer.

    python bench/dp_bench.py --data data/imdb --steps 12
"""

import argparse
import json
import os
import subprocess
import tempfile
import time


def mpirun(ranks, *cmd):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    out = subprocess.run(["mpirun", "--oversubscribe", "-n", str(ranks), *cmd], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"mpirun failed:\n{out.stderr[-3000:]}")
    return out.stdout


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/imdb")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--ranks", default="2,4")
    p.add_argument("--out", default="bench/results/data_parallel.md")
    args = p.parse_args()
    binary = os.environ.get("WAVE_DIST_BIN", "target/release/wave-dist")
    work = tempfile.mkdtemp(prefix="wave-dp-bench-")
    raw_bin = os.path.join(work, "raw_allreduce")
    subprocess.run(["mpicc", "-O2", "-o", raw_bin, "bench/raw_allreduce.c"], check=True)

    rows = []
    for ranks in map(int, args.ranks.split(",")):
        run_dir = os.path.join(work, f"run-{ranks}")
        out = mpirun(ranks, binary, "train", "--config", "configs/imdb-quick.toml",
                     "--set", f"data.uri={json.dumps(args.data)}", "--set", "data.shuffle=false",
                     "--set", f"train.max_steps={args.steps + 2}", "--set", "train.log_every_steps=2",
                     "--set", "train.eval_every_steps=0", "--set", "train.eval_max_batches=1",
                     "--set", "train.max_seconds=0", "--set", "checkpoint.every_steps=0",
                     "--set", f"train.run_dir={json.dumps(run_dir)}")
        summary = json.loads(out.strip().splitlines()[-1])
        params = summary["params"]["total"]
        windows = [r for r in map(json.loads, open(f"{run_dir}/metrics.jsonl")) if r["kind"] == "train"][1:]
        steps = 2 * len(windows)
        split = {k: 1e3 * sum(w[k] for w in windows) / steps for k in ("data_wait_s", "compute_s", "skew_s", "comm_s")}
        sps = sum(w["samples_per_s"] for w in windows) / len(windows)
        raw = json.loads(mpirun(ranks, raw_bin, str(params), "10").strip().splitlines()[-1])
        rows.append(dict(ranks=ranks, params=params, mb=4 * params / 2**20, sps=sps, raw_ms=raw["mean_ms"], **split))

    lines = [
        "# Data-parallel training: gradient synchronisation vs a raw MPI all-reduce",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores (ranks oversubscribed "
        "beyond that), Open MPI over shared memory, one intra-op thread per rank. configs/imdb-quick.toml "
        f"(d=256, max length 384, global batch 64, file order), {args.steps} timed steps after 2 warm-up steps.",
        "",
        "| ranks | gradient MiB | samples/s (global) | data wait ms/step | compute ms/step | skew ms/step "
        "| reduction ms/step | raw MPI_Allreduce ms | reduction / raw |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['ranks']} | {r['mb']:.1f} | {r['sps']:.1f} | {r['data_wait_s']:.1f} | {r['compute_s']:.0f} "
                     f"| {r['skew_s']:.1f} | {r['comm_s']:.1f} | {r['raw_ms']:.1f} | {r['comm_s'] / r['raw_ms']:.2f}x |")
    lines += [
        "",
        "Reduction = flatten the small gradients into 25 MiB buckets, one in-place sum all-reduce per bucket "
        "(tensors that fill a bucket alone, such as the embedding, are reduced where they lie), copy back. "
        "Skew = time at a barrier waiting for the slowest rank (load imbalance, here mostly oversubscription).",
        "",
        "Command:",
        "",
        "```",
        f"python bench/dp_bench.py --data {args.data} --steps {args.steps} --ranks {args.ranks}",
        "```",
    ]
    text = "\n".join(lines) + "\n"
    open(args.out, "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
