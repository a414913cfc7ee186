"""The benchmark peer: the same Wave Network and training loop as wave-dist, in plain PyTorch eager.

This is the program a user would otherwise write. It mirrors crates/wave-model (same parameter
names, so weights exported by wave-dist load here) and crates/wave-train (AdamW with decay on
matrices only, linear warmup then decay, global-norm clipping), and reads the same Parquet shards
(pre-tokenized `input_ids`) in file order.

    python bench/wave_peer.py --data data/imdb --steps 20 --d-model 768 --max-length 256 --batch-size 64
"""

import argparse
import json
import math
import resource
import time

import pyarrow.parquet as pq
import torch
import torch.nn as nn
import torch.nn.functional as F


def imaginary_part(u, causal, eps):
    """s = sqrt(clamp(S - u^2, 0) + eps), S the (prefix) sum of squares over tokens; fp32 for half inputs."""
    if u.dtype in (torch.float16, torch.bfloat16):
        u = u.float()
    sq = u.square()
    total = sq.cumsum(1) if causal else sq.sum(1, keepdim=True)
    return ((total - sq).clamp_min(0.0) + eps).sqrt()


def combine(mode, u, s_u, v, s_v):
    u, v = u.to(s_u.dtype), v.to(s_u.dtype)
    if mode == "interference":
        return u + v, s_u + s_v
    return u * v - s_u * s_v, u * s_v + v * s_u


class WaveLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, h = cfg["d_model"], cfg.get("ffn_dim") or cfg["d_model"]
        self.cfg = cfg
        self.proj_u = nn.Linear(d, d)
        self.proj_v = nn.Linear(d, d)
        self.to_real = nn.Linear(2 * d, d) if cfg["to_real"] == "concat" else None
        self.ffn_in = nn.Linear(d, h)
        self.ffn_out = nn.Linear(h, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x, m):
        causal, eps = self.cfg["head"] == "causal_lm", self.cfg["eps"]
        u = self.proj_u(x) * m
        v = self.proj_v(x) * m
        re, im = combine(self.cfg["mode"], u, imaginary_part(u, causal, eps), v, imaginary_part(v, causal, eps))
        if self.to_real is not None:
            h = self.to_real(torch.cat([re, im], -1).to(x.dtype))
        else:
            h = (re.square() + im.square() + eps).sqrt().to(x.dtype)
        return self.norm(h + self.ffn_out(F.gelu(self.ffn_in(h))))


def sinusoidal_table(n, d):
    pos = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    i = torch.arange(d, dtype=torch.float32)
    inv_freq = torch.exp((torch.div(i, 2, rounding_mode="floor") * 2 / d) * -math.log(10000.0)).unsqueeze(0)
    angles = pos * inv_freq
    return torch.where(torch.arange(d) % 2 == 0, angles.sin(), angles.cos())


class WaveNetwork(nn.Module):
    """Classification head only (what the benchmark and the export interop need)."""

    def __init__(self, cfg):
        super().__init__()
        d = cfg["d_model"]
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg["vocab_size"], d)
        self.position_embedding = nn.Embedding(cfg["max_positions"], d) if cfg["position"] == "learned" else None
        if cfg["position"] == "sinusoidal":
            self.register_buffer("sinusoidal", sinusoidal_table(cfg["max_positions"], d), persistent=False)
        self.layers = nn.ModuleList(WaveLayer(cfg) for _ in range(cfg["n_layers"]))
        self.classifier = nn.Linear(d, cfg["num_classes"])

    def forward(self, ids, mask):
        t = ids.shape[1]
        x = self.token_embedding(ids)
        if self.position_embedding is not None:
            x = x + self.position_embedding(torch.arange(t, device=ids.device)).unsqueeze(0)
        elif self.cfg["position"] == "sinusoidal":
            x = x + self.sinusoidal[:t].unsqueeze(0).to(x.dtype)
        m = mask.to(x.dtype).unsqueeze(-1)
        x = x * m
        for layer in self.layers:
            x = (x + F.dropout(layer(x, m), self.cfg["dropout"], self.training)) * m
        if self.cfg["pooling"] == "first":
            pooled = x[:, 0]
        else:
            pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.classifier(F.dropout(pooled, self.cfg["dropout"], self.training))


def lr_at(step, total, lr, warmup, min_lr=0.0):
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return min_lr + (lr - min_lr) * (1.0 - progress)


def batches(data_dir, split, batch_size, max_length, pad_id=0):
    """Rows of the split's shards in file order, dynamically padded like wave-dist's loader."""
    manifest = json.load(open(f"{data_dir}/manifest.json"))
    ids_buf, labels_buf = [], []
    while True:
        for shard in manifest["splits"][split]["shards"]:
            table = pq.read_table(f"{data_dir}/{shard['path']}", columns=["input_ids", "label"])
            for ids, label in zip(table.column("input_ids").to_pylist(), table.column("label").to_pylist()):
                ids_buf.append(ids[:max_length])
                labels_buf.append(label)
                if len(ids_buf) == batch_size:
                    t = max(len(r) for r in ids_buf)
                    x = torch.full((batch_size, t), pad_id, dtype=torch.long)
                    m = torch.zeros((batch_size, t), dtype=torch.long)
                    for i, r in enumerate(ids_buf):
                        x[i, : len(r)] = torch.tensor(r)
                        m[i, : len(r)] = 1
                    yield x, m, torch.tensor(labels_buf), int(m.sum())
                    ids_buf, labels_buf = [], []


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="prepared data set folder (manifest.json + shards)")
    p.add_argument("--split", default="train")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps before measuring")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--mode", default="modulation")
    p.add_argument("--to-real", default="magnitude")
    p.add_argument("--position", default="none")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    manifest = json.load(open(f"{args.data}/manifest.json"))
    cfg = dict(vocab_size=manifest["tokenizer"]["vocab_size"], d_model=args.d_model, n_layers=1, mode=args.mode,
               to_real=args.to_real, position=args.position, max_positions=512, ffn_dim=0, dropout=0.1,
               head="classification", pooling="mean", num_classes=len(manifest["label_names"]), eps=1e-6)
    model = WaveNetwork(cfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    model.train()
    total = args.warmup_steps + args.steps
    samples = tokens = 0
    losses = []
    start = None
    for step, (ids, mask, labels, real) in enumerate(batches(args.data, args.split, args.batch_size, args.max_length)):
        if step == args.warmup_steps:
            start = time.perf_counter()
            samples = tokens = 0
        if step == total:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, args.lr, 100)
        loss = F.cross_entropy(model(ids, mask).float(), labels, ignore_index=-100)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        samples += ids.shape[0]
        tokens += real
    secs = time.perf_counter() - start
    print(json.dumps({
        "event": "peer_summary", "steps": args.steps, "train_samples_per_s": samples / secs,
        "train_tokens_per_s": tokens / secs, "final_loss": losses[-1],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
