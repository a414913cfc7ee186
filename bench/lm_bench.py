"""Side-by-side masked-LM training throughput and memory: wave-dist vs the PyTorch eager peer.

Both train the same model (one wave layer, modulation + concat, learned positions, the head tied to
the BERT-vocabulary embedding, dropout 0.1) with the same objective (15% of the real non-special
tokens selected, 80/10/10, the vocabulary head on the selected positions only), on the same packed
rows of the same prepared shards in file order, with the same AdamW settings and LR schedule, for the
same timed steps after the same untimed warm-up, with the same intra-op thread count and OpenMP
wait policy. The programs alternate, round after round, in this one run.

Throughput is real tokens per second of wall time over the timed steps, everything included (data,
masking, forward, backward, clipping, AdamW): for the peer its own timer around the loop; for
wave-dist the timestamps of its log lines at the first and the last timed step. wave-dist's own
metrics figure (`tokens_per_s`, which times the step itself but not the batch's masking) is reported
next to it. Tokens per CPU-second divide the same tokens by the CPU time the process spent in that
window (the peer's process_time; wave-dist's /proc utime + stime read when those log lines appear).

Peak memory is each process's maximum resident set (wait4 of the child: start-up to exit), and for
wave-dist also its VmHWM before its final checkpoint and evaluation (which the peer does not do).

    python bench/lm_bench.py --data data/gutenberg-mlm \\
        --corpus $WAVE_SHARED_DATA/gutenberg/gutenberg_sample_10MB.txt --d-model 768 --rounds 3

`--corpus` prepares `--data` first when it does not exist (paragraphs, BERT uncased, rows of
`--length` tokens).
"""

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

CONFIG = """\
name = "mlm-bench"

[model]
d_model = {d_model}
n_layers = 1
mode = "modulation"
to_real = "concat"
position = "learned"
max_positions = {length}
dropout = 0.1

[data]
uri = {data}
train_split = "train"
eval_split = "validation"
batch_size = {batch_size}
max_length = {length}
tokenizer = "bert-base-uncased"
shuffle = false

[train]
objective = "masked_lm"
mask_rate = 0.15
seed = 0
max_steps = {total}
lr = 1e-3
warmup_steps = 100
schedule = "linear"
weight_decay = 0.01
grad_clip = 1.0
log_every_steps = {warmup}
eval_every_steps = 0
eval_max_batches = 1
threads = {threads}
run_dir = {run_dir}

[checkpoint]
every_steps = 0
max_in_flight = 1
"""

LOG_LINE = re.compile(r"^(\S+)\s+INFO\s+train step=(\d+)\s")


def probe(pid):
    """(CPU seconds so far, peak resident set so far in MiB) of a running process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    hwm = float("nan")
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024.0
    return cpu, hwm


def run(cmd, marks=(), env=None):
    """Runs cmd (environment `env`, default ours); returns (stdout, stderr, wall seconds, peak RSS
    MiB of that very process via wait4, {mark: probe() when a stderr line first contained mark})."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
        lines, seen = [], {}
        for line in proc.stderr:
            lines.append(line)
            for mark in marks:
                if mark not in seen and mark in line:
                    seen[mark] = probe(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        stdout, stderr = out.read().decode(), "".join(lines)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            sys.exit(f"{' '.join(cmd[:3])} failed ({code}):\n{stderr[-3000:]}")
        return stdout, stderr, wall, usage.ru_maxrss / 1024.0, seen


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def ours_figures(stderr, run_dir, first, last, tokens_per_step):
    """wave-dist's figures over steps first..last: tokens/s from its log timestamps (wall_tps) and from
    its metrics (metrics_tps), and seconds per step: wall, compute, data wait, and outside the
    metrics' timed window (untimed_s)."""
    stamps = {}
    for line in stderr.splitlines():
        m = LOG_LINE.match(line)
        if m:
            stamps[int(m.group(2))] = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
    if first not in stamps or last not in stamps:
        sys.exit(f"wave-dist logged no train line at step {first} or {last} (steps logged: {sorted(stamps)})")
    wall = (stamps[last] - stamps[first]).total_seconds()
    lines = [r for r in map(json.loads, open(f"{run_dir}/metrics.jsonl"))
             if r["kind"] == "train" and first < r["step"] <= last]
    compute = sum(r["compute_s"] for r in lines)
    wait = sum(r["data_wait_s"] for r in lines)
    timed = sum(r["data_wait_s"] + r["compute_s"] + r["comm_s"] + r["skew_s"] for r in lines)
    tokens = sum(r["tokens_per_s"] * (r["data_wait_s"] + r["compute_s"] + r["comm_s"] + r["skew_s"])
                 for r in lines)
    steps = last - first
    return dict(wall_tps=steps * tokens_per_step / wall, metrics_tps=tokens / timed,
                step_s=wall / steps, compute_s=compute / steps, wait_s=wait / steps,
                untimed_s=(wall - timed) / steps)


def prepare(binary, corpus, data, length):
    cmd = [binary, "data", "prepare", "--format", "text", "--text-unit", "paragraph", "--input", corpus,
           "--out", data, "--tokenizer", "bert-base-uncased", "--pack-length", str(length)]
    print("preparing:", " ".join(cmd), file=sys.stderr)
    run(cmd)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/gutenberg-mlm", help="packed data set (rows of --length tokens)")
    p.add_argument("--corpus", default=None, help="plain-text corpus to prepare --data from when it is missing")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--length", type=int, default=128, help="tokens per packed row")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3, help="alternating runs of each program")
    p.add_argument("--omp-wait-policy", choices=["default", "passive", "active"], default="default",
                   help="OMP_WAIT_POLICY for both programs (libgomp reads it at start-up); passive = idle "
                        "threads sleep instead of spinning, which matters when other jobs share the cores")
    p.add_argument("--out", default="bench/results/mlm_throughput.md")
    args = p.parse_args()
    if args.steps % args.warmup_steps:
        sys.exit("--steps must be a multiple of --warmup-steps (wave-dist logs every --warmup-steps steps)")
    binary = os.environ.get("WAVE_DIST_BIN", "target/release/wave-dist")
    if not os.path.isfile(f"{args.data}/manifest.json"):
        if not args.corpus:
            sys.exit(f"{args.data} holds no prepared data set: pass --corpus FILE to prepare it")
        prepare(binary, args.corpus, args.data, args.length)
    manifest = json.load(open(f"{args.data}/manifest.json"))
    if manifest.get("pack_length") != args.length:
        sys.exit(f"{args.data} is packed into rows of {manifest.get('pack_length')} tokens, not --length {args.length}")
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if args.omp_wait_policy != "default":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    total = args.warmup_steps + args.steps
    tokens_per_step = args.batch_size * args.length
    work = tempfile.mkdtemp(prefix="wave-lm-bench-")
    config_path = os.path.join(work, "mlm-bench.toml")
    peer_cmd = [sys.executable, "bench/wave_peer.py", "--data", args.data, "--objective", "masked_lm",
                "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps),
                "--batch-size", str(args.batch_size), "--max-length", str(args.length),
                "--d-model", str(args.d_model), "--to-real", "concat", "--position", "learned",
                "--max-positions", str(args.length), "--lr", "1e-3", "--lr-warmup-steps", "100",
                "--threads", str(args.threads)]

    ours, peer = [], []
    try:
        for r in range(args.rounds):
            run_dir = os.path.join(work, f"run-{r}")
            config = CONFIG.format(d_model=args.d_model, length=args.length, data=json.dumps(os.path.abspath(args.data)),
                                   batch_size=args.batch_size, total=total, warmup=args.warmup_steps,
                                   threads=args.threads, run_dir=json.dumps(run_dir))
            open(config_path, "w").write(config)
            # CPU time between the log lines of the first and the last timed step; VmHWM at the
            # last-but-one log line: the training loop's peak (steady state since the first steps),
            # safely before the final checkpoint (an in-memory copy of the model and optimizer
            # state) and evaluation, which the peer does not do.
            marks = [f"train step={s} " for s in (args.warmup_steps, total - args.warmup_steps, total)]
            stdout, stderr, wall, peak, seen = run([binary, "train", "--config", config_path], marks, env)
            if len(seen) != len(marks):
                sys.exit(f"wave-dist did not log every step of {marks}:\n{stderr[-3000:]}")
            summary = json.loads(stdout.strip().splitlines()[-1])
            figures = ours_figures(stderr, run_dir, args.warmup_steps, total, tokens_per_step)
            cpu = seen[marks[2]][0] - seen[marks[0]][0]
            ours.append(dict(figures, peak=peak, train_peak=seen[marks[1]][1], wall=wall,
                             cpu_tps=args.steps * tokens_per_step / cpu, params=summary["params"]["total"]))
            shutil.rmtree(run_dir)
            stdout, _, wall, peak, _ = run(peer_cmd, env=env)
            s = json.loads(stdout.strip().splitlines()[-1])
            peer.append(dict(wall_tps=s["train_tokens_per_s"], peak=peak, wall=wall, params=s["params"],
                             cpu_tps=args.steps * tokens_per_step / s["timed_cpu_s"],
                             step_s=s["timed_s"] / args.steps,
                             phases={k: v / args.steps for k, v in s["phases_s"].items()}, torch=s["torch"]))
            print(f"round {r + 1}: wave-dist {ours[-1]['wall_tps']:.0f} tok/s {ours[-1]['peak']:.0f} MiB; "
                  f"peer {peer[-1]['wall_tps']:.0f} tok/s {peer[-1]['peak']:.0f} MiB", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def stat(rows, key):
        return median([x[key] for x in rows]), min(x[key] for x in rows), max(x[key] for x in rows)

    if ours[0]["params"] != peer[0]["params"]:
        sys.exit(f"parameter counts differ: wave-dist {ours[0]['params']}, peer {peer[0]['params']}")
    o_tps, p_tps = stat(ours, "wall_tps"), stat(peer, "wall_tps")
    o_cpu, p_cpu = stat(ours, "cpu_tps"), stat(peer, "cpu_tps")
    o_peak, p_peak = stat(ours, "peak"), stat(peer, "peak")
    o_train_peak = stat(ours, "train_peak")
    phases = {k: median([x["phases"][k] for x in peer]) for k in peer[0]["phases"]}
    load = os.getloadavg()
    corpus = ""
    if args.corpus:
        shared = os.environ.get("WAVE_SHARED_DATA")
        shown = args.corpus.replace(shared.rstrip("/"), "$WAVE_SHARED_DATA", 1) if shared else args.corpus
        corpus = f" --corpus {shown}"
    cmd = (f"python bench/lm_bench.py --data {args.data}{corpus} --d-model {args.d_model} "
           f"--length {args.length} --batch-size {args.batch_size} --steps {args.steps} "
           f"--warmup-steps {args.warmup_steps} --threads {args.threads} --rounds {args.rounds}"
           f"{'' if args.omp_wait_policy == 'default' else ' --omp-wait-policy ' + args.omp_wait_policy}")

    def cell(st, fmt="{:.0f}"):
        return f"{fmt.format(st[0])} ({fmt.format(st[1])}–{fmt.format(st[2])})"

    report = [
        "# Masked-LM training throughput and memory: wave-dist vs PyTorch eager",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores "
        f"(load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}: other jobs shared the cores), "
        f"{args.rounds} alternating runs of each program; medians (min–max).",
        f"Data: `{args.data}` ({manifest['name']}, packed rows of {args.length} BERT uncased tokens, file order). "
        f"Model: one wave layer, d_model={args.d_model}, modulation + concat, learned positions, "
        f"vocabulary {manifest['tokenizer']['vocab_size']} (tied head), dropout 0.1, {ours[0]['params']:,} parameters. "
        f"Masked LM 15% (80/10/10), head on the selected positions only. Batch {args.batch_size} rows "
        f"= {tokens_per_step} tokens, AdamW (lr 1e-3, wd 0.01, clip 1.0), {args.steps} timed steps after "
        f"{args.warmup_steps} warm-up steps, {args.threads} intra-op threads, "
        f"OMP_WAIT_POLICY {'unset (libgomp spins, then sleeps)' if args.omp_wait_policy == 'default' else args.omp_wait_policy.upper()}.",
        "",
        "tokens/s: real tokens per second of wall time over the timed steps, everything included. "
        "tokens per CPU-s: the same tokens over the CPU time the process used in that window (user + system; "
        "less sensitive to other jobs on the cores, but it counts libgomp's spin-waiting when threads > 1). "
        "Peak RSS: the whole process (wave-dist also writes its final checkpoint, holding a copy of model and "
        "optimizer state, and evaluates; the peer does neither); training loop: wave-dist's VmHWM before that.",
        "",
        "| program | tokens/s | tokens per CPU-s | peak RSS MiB | training-loop peak MiB | s/step |",
        "|---|---|---|---|---|---|",
        f"| wave-dist (Rust, tch) | {cell(o_tps)} | {cell(o_cpu)} | {cell(o_peak)} | {cell(o_train_peak)} | "
        f"{median([x['step_s'] for x in ours]):.3f} |",
        f"| PyTorch eager peer (torch {peer[0]['torch']}) | {cell(p_tps)} | {cell(p_cpu)} | {cell(p_peak)} | "
        f"{cell(p_peak)} | {median([x['step_s'] for x in peer]):.3f} |",
        "",
        f"**Ratios of medians (wave-dist / peer):** throughput {o_tps[0] / p_tps[0]:.3f}x wall, "
        f"{o_cpu[0] / p_cpu[0]:.3f}x per CPU-second (goal ≥ 1.5x); peak memory {o_peak[0] / p_peak[0]:.3f}x "
        f"whole process, {o_train_peak[0] / p_peak[0]:.3f}x training loop (goal ≤ 0.6x).",
        "",
        "Per run (tokens/s, tokens per CPU-s, peak MiB), in run order: wave-dist "
        + ", ".join(f"({x['wall_tps']:.0f}, {x['cpu_tps']:.0f}, {x['peak']:.0f})" for x in ours)
        + "; peer " + ", ".join(f"({x['wall_tps']:.0f}, {x['cpu_tps']:.0f}, {x['peak']:.0f})" for x in peer) + ".",
        "",
        "Where the time goes, seconds per step (medians):",
        "",
        f"- wave-dist: {median([x['step_s'] for x in ours]):.3f} wall = "
        f"{median([x['compute_s'] for x in ours]):.3f} step compute (forward, backward, clip, AdamW) + "
        f"{median([x['wait_s'] for x in ours]):.3f} waiting for the batch + "
        f"{median([x['untimed_s'] for x in ours]):.3f} outside its metrics window (masking the batch, the per-step "
        f"stop agreement, logging). Its own metrics report {median([x['metrics_tps'] for x in ours]):.0f} tokens/s.",
        "- peer: " + ", ".join(f"{k} {v:.3f}" for k, v in phases.items())
        + " (forward = the trunk; head_loss = the head on the gathered rows and the cross-entropy).",
        "",
        "Command:",
        "",
        "```",
        cmd,
        "```",
    ]
    text = "\n".join(report) + "\n"
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    open(args.out, "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
