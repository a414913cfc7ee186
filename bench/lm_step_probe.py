"""Where a masked-LM step's time goes: wave-dist's op sequences against alternatives, in CPU time.

wave-dist and the PyTorch peer run the same libtorch kernels, so replaying wave-dist's op sequence
here measures what it costs there (Python adds microseconds per op; these phases take tens to
thousands of milliseconds). Each case runs alternately with the others, `--reps` times; the best
CPU time (user + system of this process, less sensitive than wall time to other jobs on the cores)
is reported.

- head: the tied LM head's forward + backward on the masked rows of one batch
  (`LayerNorm(GELU(h W + b)) E^T / sqrt(d) + bias`, summed cross-entropy): in one shot as the peer
  does it; in chunks of 2^22 / V rows with a backward per chunk into a detached copy of the features
  and one surrogate backward into the trunk, as crates/wave-train's `token_loss` does it; and in
  chunks of max(2^22 / V, d) rows.
- adamw: one AdamW update of the (V, d) embedding with its gradient: optim.rs's op sequence on the
  whole tensor; the same ops on slices of 256 rows (bit-identical results, cache-sized temporaries);
  `torch._fused_adamw_` (one fused kernel); torch.optim.AdamW's default (the peer's).
- gemm: the head's (rows x d) @ (d x V) product in fp32 and in bf16.

    python bench/lm_step_probe.py --d-model 768 --rows 614 --threads 1
"""

import argparse
import math
import time

import torch
import torch.nn.functional as F

CHUNK_LOGITS = 1 << 22  # crates/wave-train/src/objective.rs: LOSS_CHUNK_LOGITS


def best_cpu_ms(cases, reps):
    """{name: best CPU milliseconds of one call}, the cases interleaved rep after rep."""
    best = {}
    for _ in range(reps):
        for name, fn in cases:
            fn()  # warm: allocations, lazy initialisation
            t = time.process_time()
            fn()
            best[name] = min(best.get(name, math.inf), (time.process_time() - t) * 1000)
    return best


def head_cases(d, vocab, rows):
    torch.manual_seed(0)
    emb = torch.randn(vocab, d, requires_grad=True)
    bias = torch.zeros(vocab, requires_grad=True)
    transform, norm = torch.nn.Linear(d, d), torch.nn.LayerNorm(d)
    features = torch.randn(rows, d, requires_grad=True)
    targets = torch.randint(vocab, (rows,))

    def logits(h):
        return (norm(F.gelu(transform(h))) @ emb.t()) * (1.0 / math.sqrt(d)) + bias

    def one_shot():
        (F.cross_entropy(logits(features), targets, reduction="sum") / rows).backward()

    def chunked(size):
        def run():
            detached = features.detach().requires_grad_(True)
            for start in range(0, rows, size):
                part = slice(start, start + size)
                (F.cross_entropy(logits(detached[part]), targets[part], reduction="sum") / rows).backward()
            (features * detached.grad).sum().backward()
        return run

    small, large = max(CHUNK_LOGITS // vocab, 64), max(CHUNK_LOGITS // vocab, d)
    return [("head in one shot (the peer)", one_shot),
            (f"head in chunks of {small} rows (wave-dist today)", chunked(small)),
            (f"head in chunks of max(2^22/V, d) = {large} rows", chunked(large))]


def adamw_cases(d, vocab):
    lr, b1, b2, eps, wd = 1e-3, 0.9, 0.999, 1e-8, 0.01
    p, g = torch.randn(vocab, d), torch.randn(vocab, d) * 1e-3
    m, v = torch.zeros(vocab, d), torch.zeros(vocab, d)
    step = [0]

    def optim_rs(p, g, m, v, t):
        # crates/wave-train/src/optim.rs AdamW::step, op for op.
        bias1, bias2 = 1 - b1 ** t, 1 - b2 ** t
        p.mul_(1 - lr * wd)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g * (1 - b2))
        denom = v.sqrt()
        denom.div_(math.sqrt(bias2)).add_(eps).div_(-lr / bias1)
        p.addcdiv_(m, denom)

    def whole():
        step[0] += 1
        optim_rs(p, g, m, v, step[0])

    def slices():
        step[0] += 1
        for a, b, c, e in zip(p.split(256), g.split(256), m.split(256), v.split(256)):
            optim_rs(a, b, c, e, step[0])

    def fused():
        step[0] += 1
        torch._fused_adamw_([p], [g], [m], [v], [], [torch.tensor(float(step[0]))], lr=lr, beta1=b1, beta2=b2,
                            weight_decay=wd, eps=eps, amsgrad=False, maximize=False)

    q = torch.nn.Parameter(p.clone())
    q.grad = g.clone()
    peer = torch.optim.AdamW([q], lr=lr, weight_decay=wd)
    return [("AdamW, optim.rs ops on the whole (V, d) tensor (wave-dist today)", whole),
            ("AdamW, optim.rs ops on slices of 256 rows", slices),
            ("AdamW, torch._fused_adamw_", fused),
            ("AdamW, torch.optim.AdamW default (the peer)", peer.step)]


def gemm_cases(d, vocab, rows):
    a, b = torch.randn(rows, d), torch.randn(d, vocab)
    a16, b16 = a.bfloat16(), b.bfloat16()
    return [("head GEMM fp32", lambda: a @ b), ("head GEMM bf16", lambda: a16 @ b16)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--rows", type=int, default=614, help="masked rows per batch (32 x 128 tokens x 15%% = 614)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--only", choices=["head", "adamw", "gemm"], default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    groups = {"head": lambda: head_cases(args.d_model, args.vocab, args.rows),
              "adamw": lambda: adamw_cases(args.d_model, args.vocab),
              "gemm": lambda: gemm_cases(args.d_model, args.vocab, args.rows)}
    print(f"d={args.d_model} V={args.vocab} rows={args.rows} threads={args.threads}, best CPU ms of {args.reps}:")
    for group, cases in groups.items():
        if args.only in (None, group):
            for name, ms in best_cpu_ms(cases(), args.reps).items():
                print(f"  {name}: {ms:.0f} ms")
    flops = 2 * args.rows * args.d_model * args.vocab
    print(f"  (head GEMM: {flops / 1e9:.1f} GFLOP)")


if __name__ == "__main__":
    main()
