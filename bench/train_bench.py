"""Side-by-side training throughput and memory: wave-dist vs the PyTorch eager peer.

Both train the same model (by default IMDB, one wave layer, d=768, max length 256, batch 64,
modulation + magnitude) on the same prepared shards, in file order, for the same number of timed
steps after the same untimed warm-up, with the same intra-op thread count, alternating in this
run. Peak memory is each process's maximum resident set (getrusage of the child). wave-dist runs
with its defaults (unpadded batches); `--set train.unpadded=false` measures the padded path.

    python bench/train_bench.py --data data/imdb --steps 20 --threads 2
    python bench/train_bench.py --data data/agnews-test --split test --config configs/agnews.toml \
        --max-length 128 --out bench/results/train_throughput_agnews.md
"""

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


def run(cmd):
    """Runs cmd; returns (stdout, wall seconds, peak RSS MiB of that very process via wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"{cmd[0]} failed ({proc.returncode}):\n{err.read().decode()[-3000:]}")
        return out.read().decode(), wall, usage.ru_maxrss / 1024.0


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/imdb")
    p.add_argument("--split", default="train", help="split trained on (both programs)")
    p.add_argument("--config", default="configs/imdb.toml", help="wave-dist config the overrides apply to")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra wave-dist override (repeatable), e.g. train.unpadded=false")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--to-real", default="magnitude", choices=["magnitude", "concat"],
                   help="magnitude lets wave-dist run the feed-forward block once per input (see wave-model)")
    p.add_argument("--rounds", type=int, default=2, help="alternating runs of each program")
    p.add_argument("--out", default=None, help="default: bench/results/train_throughput_<to-real>.md")
    args = p.parse_args()
    binary = os.environ.get("WAVE_DIST_BIN", "target/release/wave-dist")
    run_dir = tempfile.mkdtemp(prefix="wave-bench-")
    # Runs, checkpoints and copies of the data add up to gigabytes: gone however this exits.
    atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
    total = args.warmup_steps + args.steps
    ours_cmd = [binary, "train", "--config", args.config,
                "--set", f"data.uri={json.dumps(args.data)}", "--set", "data.shuffle=false",
                "--set", f"data.train_split={json.dumps(args.split)}", "--set", f"data.eval_split={json.dumps(args.split)}",
                "--set", "checkpoint.overwrite=true",
                "--set", f"data.max_length={args.max_length}", "--set", f"data.batch_size={args.batch_size}",
                "--set", f"model.d_model={args.d_model}", "--set", f"model.to_real={json.dumps(args.to_real)}", "--set", f"train.max_steps={total}",
                "--set", f"train.log_every_steps={args.warmup_steps}", "--set", "train.eval_every_steps=0",
                "--set", "train.eval_max_batches=1", "--set", f"train.threads={args.threads}",
                "--set", f"train.run_dir={json.dumps(run_dir)}", "--set", "checkpoint.every_steps=0"]
    for extra in args.set:
        ours_cmd += ["--set", extra]
    peer_cmd = [sys.executable, "bench/wave_peer.py", "--data", args.data, "--split", args.split, "--steps", str(args.steps),
                "--warmup-steps", str(args.warmup_steps), "--batch-size", str(args.batch_size),
                "--max-length", str(args.max_length), "--d-model", str(args.d_model), "--to-real", args.to_real, "--threads", str(args.threads)]

    ours, peer, load = [], [], []
    for _ in range(args.rounds):
        load.append(os.getloadavg()[0])
        _, wall, peak = run(ours_cmd)
        # Timed window: every metrics line after the first (the first covers the warm-up steps).
        lines = [r for r in map(json.loads, open(f"{run_dir}/metrics.jsonl")) if r["kind"] == "train"][1:]
        secs = sum(l["data_wait_s"] + l["compute_s"] for l in lines)
        sps = sum(l["samples_per_s"] * (l["data_wait_s"] + l["compute_s"]) for l in lines) / secs
        tps = sum(l["tokens_per_s"] * (l["data_wait_s"] + l["compute_s"]) for l in lines) / secs
        ours.append((sps, tps, peak, wall))
        out, wall, peak = run(peer_cmd)
        summary = json.loads(out.strip().splitlines()[-1])
        peer.append((summary["train_samples_per_s"], summary["train_tokens_per_s"], peak, wall))
    torch_version = summary["torch"]
    ours_sps, ours_tps, ours_peak, ours_wall = (median([r[i] for r in ours]) for i in range(4))
    peer_sps, peer_tps, peer_peak, peer_wall = (median([r[i] for r in peer]) for i in range(4))

    rows = [
        ("wave-dist (Rust, tch)", ours_sps, ours_tps, ours_peak, ours_wall),
        (f"PyTorch eager peer (torch {torch_version})", peer_sps, peer_tps, peer_peak, peer_wall),
    ]
    report = [
        "# Training throughput and memory: wave-dist vs PyTorch eager",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores: {args.rounds} alternating runs of each, medians;",
        f"load average before each round {', '.join(f'{l:.1f}' for l in load)} (other jobs share the machine: ratios, not absolute figures, carry over).",
        f"{args.data} split {args.split} (prepared shards, file order), d_model={args.d_model}, max_length={args.max_length}, batch={args.batch_size},",
        f"modulation + {args.to_real}, one layer, {args.steps} timed steps after {args.warmup_steps} warm-up steps, {args.threads} intra-op threads.",
        f"wave-dist: {args.config}" + (f" with {', '.join(args.set)}" if args.set else " (unpadded batches, the default)") + ".",
        "",
        "| program | samples/s | tokens/s | peak RSS MiB | wall s (incl. start-up) |",
        "|---|---|---|---|---|",
    ]
    for name, sps, tps, peak, wall in rows:
        report.append(f"| {name} | {sps:.2f} | {tps:.0f} | {peak:.0f} | {wall:.1f} |")
    report += [
        "",
        "Per run (samples/s, peak MiB): wave-dist " + ", ".join(f"({r[0]:.2f}, {r[2]:.0f})" for r in ours)
        + "; peer " + ", ".join(f"({r[0]:.2f}, {r[2]:.0f})" for r in peer) + ".",
        "",
        f"**Ratios (wave-dist / peer):** throughput {ours_sps / peer_sps:.3f}x, "
        f"peak memory {ours_peak / peer_peak:.3f}x.",
        "",
        "Command:",
        "",
        "```",
        f"python bench/train_bench.py --data {args.data} --split {args.split} --config {args.config} --max-length {args.max_length} "
        f"--d-model {args.d_model} --batch-size {args.batch_size} --steps {args.steps} --threads {args.threads} --rounds {args.rounds} "
        f"--to-real {args.to_real}" + "".join(f" --set {x}" for x in args.set) + (f" --out {args.out}" if args.out else ""),
        "```",
    ]
    text = "\n".join(report) + "\n"
    args.out = args.out or f"bench/results/train_throughput_{args.to_real}.md"
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    open(args.out, "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
