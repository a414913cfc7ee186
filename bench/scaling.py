"""Scaling model of data-parallel wave-dist: step time and scaling efficiency from 1 to 512 GPUs,
built from inputs measured on this machine, and checked against real runs at 1, 2 and 4 ranks here.

The trainer has no overlap: every rank runs forward, backward and AdamW, then reduces the
gradients (after a barrier), so a step takes

    T(W) = compute(per-rank batch) + sync(W)

compute(b) = a + k * b is fitted to one-rank runs at two batch sizes (a: the per-step cost that
does not grow with the batch, mostly AdamW over every parameter; k: forward and backward per
sample). sync(W) is what the gradient reduction moves:
  dense:  one all-reduce of every gradient (4 bytes per parameter);
  sparse: one all-reduce of a flag per embedding row (the union of touched rows), then one of the
          union's rows plus every non-embedding gradient, or of everything when the union holds
          more than half the table (then without the flags for the next 100 steps). The union is measured on the data: unique token ids of global
          batches of the given size (it grows with the global batch, so sparse sync helps less at
          512 GPUs than at 8).

Every all-reduce the trainer issues is counted (the table or its rows, the flags, one per 25 MiB
bucket of the other gradients): ring all-reduce 2(W-1)/W * bytes / bw + 2(W-1) * latency; across
nodes hierarchical
(reduce-scatter and all-gather inside a node over NVLink, all-reduce of a 1/g shard between nodes
over each GPU's own NIC).

CPU check (this machine, Open MPI over shared memory, one intra-op thread per rank): latency and
bandwidth are fitted to the raw MPI_Allreduce peer (bench/raw_allreduce.c) at each world size.
Ranks on one CPU node share its cores and memory bandwidth (GPUs do not: each rank has its own),
so the compute of W ranks is measured as W independent one-rank runs at once; one rank's compute
comes from the fit above. The background of other jobs (/proc/loadavg's runnable count minus this
run's ranks, sampled while each run lasts) is stated in the results. GPU table: compute per sample from the model's FLOPs at an assumed achieved
throughput (no GPU was lent when this was written: see the assumptions in the results file).

    python bench/scaling.py --data data/imdb                # measure, check 1/2/4 ranks, write both results
    python bench/scaling.py --data data/imdb --table-only   # GPU table from the saved inputs
"""

import argparse
import atexit
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

import numpy
import pyarrow.parquet as pq

INPUTS = "bench/results/scaling_inputs.json"
# As in crates/wave-train/src/parallel.rs.
DENSE_STEPS_AFTER_LARGE_UNION = 100


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


# ---------------------------------------------------------------------------------------------
# Collective costs
# ---------------------------------------------------------------------------------------------

def ring_allreduce_s(nbytes, ranks, bw, latency):
    if ranks <= 1 or nbytes <= 0:
        return 0.0
    return 2 * (ranks - 1) / ranks * nbytes / bw + 2 * (ranks - 1) * latency


def hier_allreduce_s(nbytes, gpus, net):
    """All-reduce over `gpus` GPUs, `net["gpus_per_node"]` per node (NCCL-style hierarchy)."""
    g = min(gpus, net["gpus_per_node"])
    nodes = max(1, gpus // g)
    intra = ring_allreduce_s(nbytes, g, net["nvlink_Bps"], net["nvlink_latency_s"])
    inter = ring_allreduce_s(nbytes / g, nodes, net["nic_Bps"], net["nic_latency_s"])
    return intra + inter


BUCKET_BYTES = 25 * 2**20  # train.bucket_mb's default


def sync_collectives(model, union_rows, sparse):
    """The all-reduces of one step's gradient sync as (bytes, share of steps that run it), in
    the trainer's order: the embedding table on its own (dense), or its rows after one
    all-reduce of a flag per row (sparse; dense again, and without the flags for the next 100
    steps, when the union holds more than half the table); then the other gradients in buckets
    of train.bucket_mb."""
    table = 4 * model["vocab"] * model["d"]
    rest = 4 * model["params"] - table
    buckets = [(min(BUCKET_BYTES, rest - i), 1.0) for i in range(0, int(rest), BUCKET_BYTES)]
    if not sparse:
        return [(table, 1.0)] + buckets
    flags = 4 * model["vocab"]
    rows = 4 * union_rows * model["d"]
    if rows > 0.5 * table:
        return [(flags, 1 / DENSE_STEPS_AFTER_LARGE_UNION), (table, 1.0)] + buckets
    return [(flags, 1.0), (rows, 1.0)] + buckets


def sync_cost(collectives, allreduce_s):
    """(seconds, bytes sent) per step of `collectives` with an all-reduce cost model."""
    return (sum(share * allreduce_s(b) for b, share in collectives),
            sum(share * b for b, share in collectives))


# ---------------------------------------------------------------------------------------------
# Measurements on this machine
# ---------------------------------------------------------------------------------------------

class RunnableSampler:
    """Mean of /proc/loadavg's runnable-task count while a run lasts."""

    def __init__(self):
        self.samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.25):
            with open("/proc/loadavg") as f:
                self.samples.append(int(f.read().split()[3].split("/")[0]))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def background(self, own_threads):
        # The sampler itself is running when it reads.
        return max(0.0, (sum(self.samples) / max(1, len(self.samples))) - own_threads - 1)


def mpirun_cmd(ranks, *cmd):
    base = ["mpirun", "--oversubscribe", "--bind-to", "none", "-n", str(ranks)] if ranks > 1 else []
    return [*base, *cmd]


def run(cmd):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:8])} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def train(binary, data, ranks, global_batch, steps, run_dir, sparse=True):
    cmd = mpirun_cmd(ranks, binary, "train", "--config", "configs/imdb-quick.toml",
                     "--set", f"data.uri={json.dumps(data)}", "--set", "data.shuffle=false",
                     "--set", f"data.batch_size={global_batch}",
                     "--set", f"train.max_steps={steps + 2}", "--set", "train.log_every_steps=2",
                     "--set", "train.eval_every_steps=0", "--set", "train.eval_max_batches=1",
                     "--set", "train.max_seconds=0", "--set", "checkpoint.every_steps=0",
                     "--set", "checkpoint.overwrite=true", "--set", "train.threads=1",
                     "--set", f"train.sparse_embedding_sync={str(sparse).lower()}",
                     "--set", f"train.run_dir={json.dumps(run_dir)}")
    with RunnableSampler() as sampler:
        out = run(cmd)
    summary = json.loads(out.strip().splitlines()[-1])
    windows = [r for r in map(json.loads, open(f"{run_dir}/metrics.jsonl")) if r["kind"] == "train"][1:]
    parts = ("data_wait_s", "compute_s", "skew_s", "comm_s")
    # The quietest window (two steps) of the run: the other jobs on this machine come and go, and
    # the least disturbed stretch is the most repeatable figure of a run.
    best = min(windows, key=lambda w: sum(w[k] for k in parts))
    per_step = {k: best[k] / 2 for k in parts}
    return dict(ranks=ranks, batch_per_rank=global_batch // ranks, background=sampler.background(ranks),
                step_s=sum(per_step.values()), bytes=sum(w["grad_bytes_per_step"] for w in windows) / len(windows),
                params=summary["params"], **per_step)


def train_concurrent(binary, data, copies, batch, steps, work):
    """`copies` independent one-rank runs at once (no collectives): the compute one rank does
    while `copies` ranks share this node's cores and memory bandwidth. Median per-step compute."""
    procs, dirs = [], []
    env = dict(os.environ)
    with RunnableSampler() as sampler:
        for c in range(copies):
            run_dir = os.path.join(work, f"copy-{c}")
            dirs.append(run_dir)
            cmd = [binary, "train", "--config", "configs/imdb-quick.toml",
                   "--set", f"data.uri={json.dumps(data)}", "--set", "data.shuffle=false",
                   "--set", f"data.batch_size={batch}",
                   "--set", f"train.max_steps={steps + 2}", "--set", "train.log_every_steps=2",
                   "--set", "train.eval_every_steps=0", "--set", "train.eval_max_batches=1",
                   "--set", "train.max_seconds=0", "--set", "checkpoint.every_steps=0",
                   "--set", "checkpoint.overwrite=true", "--set", "train.threads=1",
                   "--set", f"train.run_dir={json.dumps(run_dir)}"]
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"concurrent run failed:\n{err[-3000:]}")
    per_copy = []
    for run_dir in dirs:
        windows = [r for r in map(json.loads, open(f"{run_dir}/metrics.jsonl")) if r["kind"] == "train"][1:]
        per_copy.append(min(w["compute_s"] + w["data_wait_s"] for w in windows) / 2)
    return dict(copies=copies, batch=batch, compute_s=median(per_copy), background=sampler.background(copies))


def raw_allreduce(raw_bin, ranks, floats):
    return json.loads(run(mpirun_cmd(ranks, raw_bin, str(floats), "10")).strip().splitlines()[-1])["mean_ms"] / 1e3


def token_ids(data, split="train", max_length=384):
    manifest = json.load(open(f"{data}/manifest.json"))
    rows = []
    for shard in manifest["splits"][split]["shards"]:
        rows += pq.read_table(f"{data}/{shard['path']}", columns=["input_ids"]).column("input_ids").to_pylist()
    return [r[:max_length] for r in rows]


def union_rows(rows, global_batch, per_rank, samples=6):
    """Mean unique ids of global batches of `global_batch` consecutive rows (wrapping around, as
    epochs do) and of one rank's `per_rank` rows."""
    n = len(rows)
    union, touched = [], []
    for s in range(samples):
        start = (s * 7919 * global_batch) % n
        ids, first = set(), set()
        for i in range(global_batch):
            r = rows[(start + i) % n]
            ids.update(r)
            if i < per_rank:
                first.update(r)
        union.append(len(ids))
        touched.append(len(first))
    return sum(union) / samples, sum(touched) / samples


def sparse_local_s(vocab, d, union, reps=3):
    """Seconds of the sparse sync's local work on one core: finding the touched rows of a
    (vocab, d) gradient (row amax/amin), gathering the union's rows and scattering them back,
    with the trainer's libtorch operations."""
    import torch
    torch.set_num_threads(1)
    g = torch.zeros(vocab, d)
    g[torch.randperm(vocab)[: int(union)]] = torch.randn(int(union), d)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        rows = ((g.amax(1) != 0) | (g.amin(1) != 0)).float().gt(0).nonzero().reshape(-1)
        g.index_copy_(0, rows, g.index_select(0, rows))
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(args):
    binary = os.environ.get("WAVE_DIST_BIN", "target/release/wave-dist")
    work = tempfile.mkdtemp(prefix="wave-scaling-")
    # Runs, checkpoints and copies of the data add up to gigabytes: gone however this exits.
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    raw_bin = os.path.join(work, "raw_allreduce")
    subprocess.run(["mpicc", "-O2", "-o", raw_bin, "bench/raw_allreduce.c"], check=True)
    rows = token_ids(args.data)
    vocab = json.load(open(f"{args.data}/manifest.json"))["tokenizer"]["vocab_size"]
    d = 256
    unions = {str(w): union_rows(rows, 64, 64 // w) for w in (1, 2, 4)}
    # Alternating rounds, so that the machine's other jobs weigh on every kind of run alike:
    # inputs (one rank at two batch sizes; the collectives' latency and bandwidth; the sparse
    # sync's local work) and the validation runs (global batch 64 at 1, 2 and 4 ranks, strong
    # scaling as bench/dp_bench.py).
    rounds = []
    for r in range(args.rounds):
        one_rank = [train(binary, args.data, 1, b, args.steps, os.path.join(work, f"in-{b}-{r}")) for b in (16, 48)]
        allreduce = {}
        for ranks in (2, 4):
            small, large = 1 << 16, 1 << 22
            t_small, t_large = raw_allreduce(raw_bin, ranks, small), raw_allreduce(raw_bin, ranks, large)
            moved = lambda f: 2 * (ranks - 1) / ranks * 4 * f
            bw = (moved(large) - moved(small)) / max(1e-9, t_large - t_small)
            latency = max(0.0, (t_small - moved(small) / bw) / (2 * (ranks - 1)))
            allreduce[str(ranks)] = dict(bw_Bps=bw, latency_s=latency)
        local = {w: sparse_local_s(vocab, d, unions[w][0]) for w in ("2", "4")}
        concurrent = {str(w): train_concurrent(binary, args.data, w, 64 // w, args.steps, os.path.join(work, f"conc-{w}-{r}"))
                      for w in (2, 4)}
        checks = [train(binary, args.data, w, 64, args.steps, os.path.join(work, f"check-{w}-{r}")) for w in (1, 2, 4)]
        rounds.append(dict(one_rank=one_rank, allreduce=allreduce, sparse_local_s=local, concurrent=concurrent,
                           checks=checks))
    model = dict(params=rounds[0]["checks"][0]["params"]["total"], vocab=vocab, d=d)
    return dict(rounds=rounds, model=model, unions=unions, cores=args.cores,
                measured=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


# ---------------------------------------------------------------------------------------------
# The CPU check
# ---------------------------------------------------------------------------------------------

def predict_round(rnd, m):
    """Predicted and measured step seconds per world size for one round of measurements."""
    cores = m["cores"]
    # compute(b) of one rank alone: fitted to the one-rank runs.
    (b1, t1), (b2, t2) = [(r["batch_per_rank"], r["compute_s"] + r["data_wait_s"]) for r in rnd["one_rank"]]
    k = (t2 - t1) / (b2 - b1)
    a = t1 - k * b1
    out = {}
    for r in rnd["checks"]:
        w = r["ranks"]
        if w == 1:
            compute, sync = a + k * r["batch_per_rank"], 0.0
        else:
            # Ranks on one node share its cores and memory bandwidth: their compute is measured
            # with as many independent one-rank runs at once (no collectives).
            compute = rnd["concurrent"][str(w)]["compute_s"]
            sharing = compute / (a + k * r["batch_per_rank"])
            net = rnd["allreduce"][str(w)]
            union, _ = m["unions"][str(w)]
            collectives = sync_collectives(m["model"], union, True)
            seconds, _ = sync_cost(collectives, lambda b: ring_allreduce_s(b, w, net["bw_Bps"], net["latency_s"]))
            # The collectives, and the local scan, gather and scatter, slowed by the node's
            # sharing like the compute.
            sync = seconds + rnd["sparse_local_s"][str(w)] * sharing
        out[w] = dict(compute=compute, sync=sync, predicted=compute + sync, measured=r["step_s"],
                      background=r["background"], parts=r, a=a, k=k)
    return out


def cpu_check(m):
    cores = m["cores"]
    per_round = [predict_round(rnd, m) for rnd in m["rounds"]]
    lines = [
        "# Scaling model, single-node CPU check: predicted vs measured step time",
        "",
        f"Measured {m['measured']} on {cores} cores, {len(per_round)} alternating rounds, medians (other jobs share the "
        "cores: the background of runnable threads, measured during every run, is stated). "
        "configs/imdb-quick.toml (d = 256, max length 384, modulation + magnitude), global batch 64 split over the ranks, "
        "one intra-op thread per rank, unpadded batches, sparse embedding sync, Open MPI over shared memory, ranks unbound.",
        "",
        "Inputs per round: one rank's compute(b) = a + k x b, fitted to one-rank runs at b = 16 and 48 (a = "
        + ", ".join(f"{p[1]['a'] * 1e3:.0f}" for p in per_round) + " ms; k = "
        + ", ".join(f"{p[1]['k'] * 1e3:.2f}" for p in per_round) + " ms per sample); the compute of W ranks sharing this "
        "node's 2 cores and memory bandwidth, measured as W independent one-rank runs at once (no collectives: "
        + "; ".join(f"W = {w}: " + ", ".join(f"{rnd['concurrent'][str(w)]['compute_s'] * 1e3:.0f}" for rnd in m["rounds"]) + " ms"
                    for w in (2, 4))
        + "); raw MPI_Allreduce latency and bandwidth at 2 and 4 ranks (bench/raw_allreduce.c at 256 KiB and 16 MiB); "
        "the sparse sync's local work (row scan, gather, scatter) timed with the same libtorch operations. Predicted "
        "step = compute + sync (the trainer does not overlap them); what the model predicts beyond its inputs is the "
        "gradient synchronisation and its composition with the compute.",
        "",
        "| ranks | per-rank batch | background threads | predicted compute ms | predicted sync ms | predicted step ms "
        "| measured step ms | error | per round (predicted / measured ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    worst = 0.0
    for w in (1, 2, 4):
        rs = [p[w] for p in per_round]
        pred, meas = median([r["predicted"] for r in rs]), median([r["measured"] for r in rs])
        error = pred / meas - 1
        worst = max(worst, abs(error))
        lines.append(f"| {w} | {64 // w} | {median([r['background'] for r in rs]):.1f} | {median([r['compute'] for r in rs]) * 1e3:.0f} "
                     f"| {median([r['sync'] for r in rs]) * 1e3:.1f} | {pred * 1e3:.0f} | {meas * 1e3:.0f} | {error:+.0%} "
                     "| " + ", ".join(f"{r['predicted'] * 1e3:.0f} / {r['measured'] * 1e3:.0f}" for r in rs) + " |")
    eff = lambda key: {w: median([p[1][key] for p in per_round]) * 64 / (median([p[w][key] for p in per_round]) * 64) for w in (1, 2, 4)}
    pe, me = eff("predicted"), eff("measured")
    lines += [
        "",
        "Strong-scaling speed-up over one rank (global batch 64): predicted "
        + ", ".join(f"{w} ranks {pe[w]:.2f}x" for w in (2, 4)) + "; measured "
        + ", ".join(f"{w} ranks {me[w]:.2f}x" for w in (2, 4)) + ".",
        "",
        f"**Largest step-time error: {worst:.0%}** (goal: within 20%). Measured step = compute + skew + reduction + data "
        "wait from the trainer's metrics. Every run's figure is its quietest two-step window (the least disturbed by the "
        "other jobs), inputs and checks alike; rounds alternate all runs.",
        "",
    ]
    return lines


# ---------------------------------------------------------------------------------------------
# The GPU table
# ---------------------------------------------------------------------------------------------

def gpu_table(args, rows, batch_per_gpu):
    d, vocab, tokens = 768, 30522, args.tokens_per_sample
    non_embedding = 2 * (d * d + d) + 2 * (d * d + d) + 2 * d + (d * 2 + 2)
    params = vocab * d + non_embedding
    model = dict(params=params, vocab=vocab, d=d)
    # Training FLOPs per sample (forward + backward = 3x forward): the two projections per token,
    # the feed-forward block once per input (magnitude after modulation).
    flops = 6 * (2 * d * d) * tokens + 6 * (2 * d * d)
    compute = batch_per_gpu * flops / args.gpu_flops + args.gpu_step_overhead_s
    net = dict(gpus_per_node=args.gpus_per_node, nvlink_Bps=args.nvlink_gbps * 1e9, nvlink_latency_s=args.nvlink_latency_us * 1e-6,
               nic_Bps=args.nic_gbit * 1e9 / 8, nic_latency_s=args.nic_latency_us * 1e-6)
    header = [
        "# Scaling model: predicted step time and efficiency, 1-512 GPUs",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `bench/scaling.py` (the model is in its docstring; "
        "its CPU predictions are checked against real runs in bench/results/scaling_cpu_check.md).",
        "",
        "Assumptions (no GPU was lent when this was written: every GPU figure is an assumption, stated here):",
        f"- Model: IMDB recipe, d = {d}, BERT vocabulary ({vocab} x {d} embedding), modulation + magnitude, {params / 1e6:.1f}M parameters "
        f"({4 * params / 2**20:.0f} MiB of fp32 gradients), unpadded batches of {tokens:.0f} real tokens per sample on average "
        f"(IMDB at max length 384, measured); a fixed number of samples per GPU per step (weak scaling: the global batch grows "
        "with the GPUs), one table per per-GPU batch below.",
        f"- Compute per step: {flops / 1e9:.2f} GFLOP per sample at {args.gpu_flops / 1e12:.0f} TFLOP/s achieved "
        f"(fp32 with TF32 products on an H100/H200-class GPU at ~40% of its dense TF32 peak) plus {args.gpu_step_overhead_s * 1e3:.1f} ms "
        "per step for kernel launches, memory-bound element-wise work and AdamW over every parameter.",
        f"- {args.gpus_per_node} GPUs per node on NVLink at {args.nvlink_gbps:.0f} GB/s achieved bus bandwidth per GPU, "
        f"{args.nvlink_latency_us:.0f} us per ring step; between nodes one {args.nic_gbit:.0f} Gb/s NIC per GPU, "
        f"{args.nic_latency_us:.0f} us per ring step; hierarchical all-reduce.",
        "- No overlap of the gradient reduction with the backward pass (the trainer reduces after backward), so step = compute + sync.",
        "- Sparse embedding sync: the union of touched rows is measured on IMDB for each global batch (consecutive rows; at "
        f"512 GPUs the global batch of {512 * batch_per_gpu} samples exceeds the {len(rows)} training rows and wraps, as epochs do); "
        "the dense all-reduce is taken when the union's rows exceed half the table, as the trainer does (after the flags, "
        "which it then skips for 100 steps: amortised here).",
        "",
        "Efficiency = compute / (compute + sync): the fraction of the one-GPU throughput per GPU that is kept (weak scaling). "
        "Sparse bytes: what one GPU puts into the collectives (a flag per table row, the union's rows and the dense "
        "non-embedding gradients), against the dense all-reduce of every gradient.",
        "",
    ]
    lines = [
        f"## {batch_per_gpu} samples per GPU (compute {compute * 1e3:.2f} ms per step)",
        "",
        "| GPUs | nodes | global batch | union rows (of 30522) | dense sync ms | dense step ms | dense efficiency "
        "| sparse bytes / dense | sparse sync ms | sparse step ms | sparse efficiency |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for gpus in (1, 8, 16, 32, 64, 128, 256, 512):
        union, touched = union_rows(rows, gpus * batch_per_gpu, batch_per_gpu, samples=3)
        out = {}
        for sparse in (False, True):
            sync, sent = sync_cost(sync_collectives(model, union, sparse), lambda b: hier_allreduce_s(b, gpus, net))
            if gpus == 1:
                sync = 0.0
            out[sparse] = (sent, sync, compute + sync, compute / (compute + sync))
        nodes = max(1, gpus // args.gpus_per_node)
        lines.append(f"| {gpus} | {nodes} | {gpus * batch_per_gpu} | {union:.0f} | {out[False][1] * 1e3:.2f} | {out[False][2] * 1e3:.2f} "
                     f"| {out[False][3]:.0%} | {out[True][0] / out[False][0]:.0%} | {out[True][1] * 1e3:.2f} | {out[True][2] * 1e3:.2f} "
                     f"| {out[True][3]:.0%} |")
    return header, lines + [""]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/imdb")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cores", type=int, default=os.cpu_count())
    p.add_argument("--table-only", action="store_true", help="skip the measurements (keep the CPU check already written)")
    p.add_argument("--check-only", action="store_true", help="redo the CPU check from the saved " + INPUTS)
    p.add_argument("--batch-per-gpu", default="64,16", help="comma-separated: one table each")
    p.add_argument("--tokens-per-sample", type=float, default=None, help="default: measured on --data at max length 384")
    p.add_argument("--gpu-tflops", type=float, default=200.0, help="achieved training TFLOP/s per GPU (assumption)")
    p.add_argument("--gpu-step-overhead-ms", type=float, default=2.0)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--nvlink-gbps", type=float, default=360.0, help="achieved NVLink bus bandwidth, GB/s per GPU")
    p.add_argument("--nvlink-latency-us", type=float, default=5.0)
    p.add_argument("--nic-gbit", type=float, default=400.0, help="inter-node link per GPU, Gb/s")
    p.add_argument("--nic-latency-us", type=float, default=10.0)
    args = p.parse_args()
    args.gpu_flops = args.gpu_tflops * 1e12
    args.gpu_step_overhead_s = args.gpu_step_overhead_ms * 1e-3
    rows = token_ids(args.data)
    if args.tokens_per_sample is None:
        args.tokens_per_sample = sum(map(len, rows)) / len(rows)
    if not args.table_only:
        if args.check_only:
            m = json.load(open(INPUTS))
        else:
            m = measure(args)
            json.dump(m, open(INPUTS, "w"), indent=1)
        lines = cpu_check(json.loads(json.dumps(m)))
        lines += ["Command (measures, then writes " + INPUTS + "; `--check-only` recomputes this file from it):", "", "```",
                  f"python bench/scaling.py --data {args.data} --steps {args.steps} --rounds {len(m['rounds'])}", "```"]
        text = "\n".join(lines) + "\n"
        open("bench/results/scaling_cpu_check.md", "w").write(text)
        print(text)
        if args.check_only:
            return
    tables = [gpu_table(args, rows, int(b)) for b in args.batch_per_gpu.split(",")]
    command = ["Command:", "", "```", f"python bench/scaling.py --data {args.data} --table-only --batch-per-gpu "
               f"{args.batch_per_gpu} --gpu-tflops {args.gpu_tflops:.0f}", "```"]
    text = "\n".join(tables[0][0] + [line for _, t in tables for line in t] + command) + "\n"
    open("bench/results/scaling_gpu.md", "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
