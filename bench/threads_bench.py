"""Intra-op thread policy under data parallelism: the default (an equal share of the node's cores
per rank) against every rank asking for all cores (the oversubscription that libgomp's spinning
threads turn into a collapse), with one rank as the reference, all in the same run.

Each variant trains configs/imdb-quick.toml (d=256, max length 384, global batch 64, file order)
for a fixed number of steps; samples/s (global) is the mean over the metrics windows after the
first (warm-up). Variants alternate for --rounds rounds; medians are reported.

    python bench/threads_bench.py --data data/imdb --steps 8 --rounds 2
"""

import argparse
import atexit
import json
import os
import shutil
import subprocess
import tempfile
import time


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def train(binary, ranks, threads, data, steps, run_dir):
    cmd = [binary, "train", "--config", "configs/imdb-quick.toml",
           "--set", f"data.uri={json.dumps(data)}", "--set", "data.shuffle=false",
           "--set", f"train.max_steps={steps + 2}", "--set", "train.log_every_steps=2",
           "--set", "train.eval_every_steps=0", "--set", "train.eval_max_batches=1",
           "--set", "train.max_seconds=0", "--set", "checkpoint.every_steps=0",
           "--set", "checkpoint.overwrite=true",
           "--set", f"train.threads={threads}", "--set", f"train.run_dir={json.dumps(run_dir)}"]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if ranks > 1:
        # --bind-to none: Open MPI binds at most 2 ranks to cores by default, which would hide
        # oversubscription; unbound is what containers and most launchers give.
        cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-n", str(ranks), *cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} failed:\n{out.stderr[-3000:]}")
    windows = [r for r in map(json.loads, open(f"{run_dir}/metrics.jsonl")) if r["kind"] == "train"][1:]
    secs = sum(w["data_wait_s"] + w["compute_s"] + w["comm_s"] + w["skew_s"] for w in windows)
    return sum(w["samples_per_s"] * (w["data_wait_s"] + w["compute_s"] + w["comm_s"] + w["skew_s"])
               for w in windows) / secs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/imdb")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default="bench/results/threads.md")
    args = p.parse_args()
    binary = os.environ.get("WAVE_DIST_BIN", "target/release/wave-dist")
    cores = os.cpu_count()
    work = tempfile.mkdtemp(prefix="wave-threads-bench-")
    # Runs, checkpoints and copies of the data add up to gigabytes: gone however this exits.
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    variants = [
        ("1 rank, default threads", 1, 0),
        ("2 ranks, default threads", 2, 0),
        (f"2 ranks, train.threads = {cores} each", 2, cores),
    ]
    results = {name: [] for name, _, _ in variants}
    load = []
    for r in range(args.rounds):
        for i, (name, ranks, threads) in enumerate(variants):
            load.append(os.getloadavg()[0])
            results[name].append(train(binary, ranks, threads, args.data, args.steps, os.path.join(work, f"{r}-{i}")))
    base = median(results[variants[0][0]])
    lines = [
        "# Intra-op threads per rank: the default share vs oversubscription",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {cores} cores, Open MPI, ranks unbound "
        f"(`--bind-to none`); load average before the runs {min(load):.1f}-{max(load):.1f} (other jobs share "
        f"the machine). configs/imdb-quick.toml (d=256, max length 384, global batch 64, file order), {args.steps} "
        f"timed steps after 2 warm-up steps, {args.rounds} alternating rounds, medians.",
        "",
        "| variant | samples/s (global) | vs 1 rank | per round |",
        "|---|---|---|---|",
    ]
    for name, _, _ in variants:
        m = median(results[name])
        lines.append(f"| {name} | {m:.1f} | {m / base:.2f}x | {', '.join(f'{x:.1f}' for x in results[name])} |")
    lines += [
        "",
        f"Default threads: every rank takes min(usable cores, online cores / ranks on the node), at least 1 "
        f"(here {max(1, cores // 2)} per rank at 2 ranks, {cores} at 1 rank).",
        "",
        "Command:",
        "",
        "```",
        f"python bench/threads_bench.py --data {args.data} --steps {args.steps} --rounds {args.rounds}",
        "```",
    ]
    text = "\n".join(lines) + "\n"
    open(args.out, "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
