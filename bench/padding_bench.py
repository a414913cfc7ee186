"""How wave-dist avoids computing padding, measured: padded batches, length-bucketed batches
(`data.bucket_by_length`), the varlen layout (`train.unpadded`, the default) and both, on the same
data, alternating in one run.

Bucketing sorts rows by length inside each shuffle window and keeps whole global batches
together, so fewer slots are padding; it changes which samples share a batch (the order stays a
pure function of the seed). The varlen layout computes the real tokens only and leaves the batches
as they are; its results equal the padded path's up to rounding.

    python bench/padding_bench.py --data data/agnews-test --split test --config configs/agnews.toml --max-length 128
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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/agnews-test")
    p.add_argument("--split", default="test")
    p.add_argument("--config", default="configs/agnews.toml")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--to-real", default="magnitude", choices=["magnitude", "concat"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="bench/results/padding.md")
    args = p.parse_args()
    binary = os.environ.get("WAVE_DIST_BIN", "target/release/wave-dist")
    work = tempfile.mkdtemp(prefix="wave-padding-bench-")
    # Runs, checkpoints and copies of the data add up to gigabytes: gone however this exits.
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    variants = [
        ("padded", ["train.unpadded=false"]),
        ("bucketed by length", ["train.unpadded=false", "data.bucket_by_length=true"]),
        ("varlen (unpadded)", ["train.unpadded=true"]),
        ("varlen + bucketed", ["train.unpadded=true", "data.bucket_by_length=true"]),
    ]
    results = {name: [] for name, _ in variants}
    load = []
    for r in range(args.rounds):
        for i, (name, sets) in enumerate(variants):
            run_dir = os.path.join(work, f"{r}-{i}")
            cmd = [binary, "train", "--config", args.config,
                   "--set", f"data.uri={json.dumps(args.data)}", "--set", "data.shuffle=false",
                   "--set", f"data.train_split={json.dumps(args.split)}", "--set", f"data.eval_split={json.dumps(args.split)}",
                   "--set", f"data.max_length={args.max_length}", "--set", f"model.to_real={json.dumps(args.to_real)}",
                   "--set", f"train.max_steps={args.steps + 2}", "--set", "train.log_every_steps=2",
                   "--set", "train.eval_every_steps=0", "--set", "train.eval_max_batches=1",
                   "--set", f"train.threads={args.threads}", "--set", "checkpoint.every_steps=0",
                   "--set", "checkpoint.overwrite=true", "--set", f"train.run_dir={json.dumps(run_dir)}"]
            for s in sets:
                cmd += ["--set", s]
            load.append(os.getloadavg()[0])
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
            lines = [json.loads(l) for l in open(f"{run_dir}/metrics.jsonl")]
            windows = [l for l in lines if l["kind"] == "train"][1:]
            secs = sum(w["data_wait_s"] + w["compute_s"] for w in windows)
            sps = sum(w["samples_per_s"] * (w["data_wait_s"] + w["compute_s"]) for w in windows) / secs
            tps = sum(w["tokens_per_s"] * (w["data_wait_s"] + w["compute_s"]) for w in windows) / secs
            results[name].append((sps, tps))
    base = median([x[0] for x in results["padded"]])
    report = [
        "# Padding: padded, length-bucketed and varlen batches",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores, {args.threads} intra-op "
        f"thread(s), load average before the runs {min(load):.1f}-{max(load):.1f} (other jobs share the machine); "
        f"{args.rounds} alternating rounds, medians. {args.config} on {args.data} split {args.split}, max length "
        f"{args.max_length}, modulation + {args.to_real}, batch 64, file order, {args.steps} timed steps after 2 warm-up steps.",
        "",
        "| variant | samples/s | real tokens/s | vs padded | per round (samples/s) |",
        "|---|---|---|---|---|",
    ]
    for name, _ in variants:
        sps = median([x[0] for x in results[name]])
        tps = median([x[1] for x in results[name]])
        report.append(f"| {name} | {sps:.1f} | {tps:.0f} | {sps / base:.2f}x | {', '.join(f'{x[0]:.1f}' for x in results[name])} |")
    report += [
        "",
        "Command:",
        "",
        "```",
        f"python bench/padding_bench.py --data {args.data} --split {args.split} --config {args.config} --max-length {args.max_length} "
        f"--to-real {args.to_real} --steps {args.steps} --rounds {args.rounds} --threads {args.threads} --out {args.out}",
        "```",
    ]
    text = "\n".join(report) + "\n"
    open(args.out, "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
