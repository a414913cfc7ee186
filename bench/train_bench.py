"""Side-by-side training throughput and memory: wave-dist vs the PyTorch eager peer.

Both train the same model (IMDB, one wave layer, d=768, max length 256, batch 64, modulation +
magnitude) on the same prepared shards, in file order, for the same number of timed steps after
the same untimed warm-up, with the same intra-op thread count, one after the other in this run.
Peak memory is each process's maximum resident set (getrusage of the child).

    python bench/train_bench.py --data data/imdb --steps 20 --threads 2
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def run(cmd, env=None):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the max over all waited-for children: only trust it if it grew.
    return out, wall, peak / 1024.0 if peak > before else float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/imdb")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", default="bench/results/train_throughput.md")
    args = p.parse_args()
    binary = os.environ.get("WAVE_DIST_BIN", "target/release/wave-dist")
    run_dir = tempfile.mkdtemp(prefix="wave-bench-")
    total = args.warmup_steps + args.steps
    ours_cmd = [binary, "train", "--config", "configs/imdb.toml",
                "--set", f"data.uri={json.dumps(args.data)}", "--set", "data.shuffle=false",
                "--set", f"data.max_length={args.max_length}", "--set", f"data.batch_size={args.batch_size}",
                "--set", f"model.d_model={args.d_model}", "--set", f"train.max_steps={total}",
                "--set", f"train.log_every_steps={args.warmup_steps}", "--set", "train.eval_every_steps=0",
                "--set", "train.eval_max_batches=1", "--set", f"train.threads={args.threads}",
                "--set", f"train.run_dir={json.dumps(run_dir)}", "--set", "checkpoint.every_steps=0"]
    peer_cmd = [sys.executable, "bench/wave_peer.py", "--data", args.data, "--steps", str(args.steps),
                "--warmup-steps", str(args.warmup_steps), "--batch-size", str(args.batch_size),
                "--max-length", str(args.max_length), "--d-model", str(args.d_model), "--threads", str(args.threads)]

    _, ours_wall, ours_peak = run(ours_cmd)
    # Timed window: every metrics line after the first (the first covers the warm-up steps).
    lines = [json.loads(l) for l in open(f"{run_dir}/metrics.jsonl") if '"train"' in l]
    timed = lines[1:]
    secs = sum(l["data_wait_s"] + l["compute_s"] for l in timed)
    ours_sps = sum(l["samples_per_s"] * (l["data_wait_s"] + l["compute_s"]) for l in timed) / secs
    ours_tps = sum(l["tokens_per_s"] * (l["data_wait_s"] + l["compute_s"]) for l in timed) / secs

    peer_out, peer_wall, peer_peak = run(peer_cmd)
    peer = json.loads(peer_out.stdout.strip().splitlines()[-1])

    rows = [
        ("wave-dist (Rust, tch)", ours_sps, ours_tps, ours_peak, ours_wall),
        (f"PyTorch eager peer (torch {peer['torch']})", peer["train_samples_per_s"], peer["train_tokens_per_s"], peer_peak, peer_wall),
    ]
    report = [
        "# Training throughput and memory: wave-dist vs PyTorch eager",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores, one run, one after the other.",
        f"IMDB (prepared shards, file order), d_model={args.d_model}, max_length={args.max_length}, batch={args.batch_size},",
        f"modulation + magnitude, one layer, {args.steps} timed steps after {args.warmup_steps} warm-up steps, {args.threads} intra-op threads.",
        "",
        "| program | samples/s | tokens/s | peak RSS MiB | wall s (incl. start-up) |",
        "|---|---|---|---|---|",
    ]
    for name, sps, tps, peak, wall in rows:
        report.append(f"| {name} | {sps:.2f} | {tps:.0f} | {peak:.0f} | {wall:.1f} |")
    report += [
        "",
        f"**Ratios (wave-dist / peer):** throughput {ours_sps / peer['train_samples_per_s']:.3f}x, "
        f"peak memory {ours_peak / peer_peak:.3f}x.",
        "",
        "Command:",
        "",
        "```",
        f"python bench/train_bench.py --data {args.data} --steps {args.steps} --threads {args.threads}",
        "```",
    ]
    text = "\n".join(report) + "\n"
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    open(args.out, "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
