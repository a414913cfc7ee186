"""The benchmark peer: the same Wave Network and training loop as wave-dist, in plain PyTorch eager.

This is the program a user would otherwise write. It mirrors crates/wave-model (same parameter
names, so weights exported by wave-dist load here) and crates/wave-train (AdamW with decay on
matrices only, linear warmup then decay, global-norm clipping), and reads the same Parquet shards
(pre-tokenized `input_ids`) in file order.

Objectives:
- classification: pooled features -> class logits, on labelled rows;
- masked_lm: BERT masking (15% of the real, non-special tokens; 80% [MASK], 10% random, 10% kept),
  drawn with torch's generator, then the vocabulary head on the selected positions only
  (gathered first) and `F.cross_entropy` on those rows;
- causal_lm: prefix norms, next-token loss at every position whose successor is real.

    python bench/wave_peer.py --data data/imdb --steps 20 --d-model 768 --max-length 256 --batch-size 64
    python bench/wave_peer.py --data data/gutenberg-packed --objective masked_lm --position learned \\
        --max-positions 128 --max-length 128 --batch-size 32 --d-model 256 --steps 20

The last stdout line is a JSON summary: throughput over the timed steps (data loading and masking
included), peak RSS, and the seconds spent in each phase of the step.
"""

import argparse
import json
import math
import os
import resource
import time

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn as nn
import torch.nn.functional as F

LM_OBJECTIVES = ("masked_lm", "causal_lm")


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


class LmHead(nn.Module):
    """Vocabulary logits tied to the token embedding E: LayerNorm(GELU(h W + b)) E^T / sqrt(d) + bias."""

    def __init__(self, d, vocab):
        super().__init__()
        self.transform = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, features, embedding):
        h = self.norm(F.gelu(self.transform(features)))
        return (h @ embedding.t()) * (1.0 / math.sqrt(embedding.shape[1])) + self.bias


class WaveNetwork(nn.Module):
    """Embedding, position encoding, stacked wave layers and the head `cfg["head"]` names."""

    def __init__(self, cfg):
        super().__init__()
        d = cfg["d_model"]
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg["vocab_size"], d)
        self.position_embedding = nn.Embedding(cfg["max_positions"], d) if cfg["position"] == "learned" else None
        if cfg["position"] == "sinusoidal":
            self.register_buffer("sinusoidal", sinusoidal_table(cfg["max_positions"], d), persistent=False)
        self.layers = nn.ModuleList(WaveLayer(cfg) for _ in range(cfg["n_layers"]))
        if cfg["head"] == "classification":
            self.classifier = nn.Linear(d, cfg["num_classes"])
        else:
            self.lm_head = LmHead(d, cfg["vocab_size"])

    def encode(self, ids, mask):
        """Token features (B, T, D) for ids and mask (B, T)."""
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
        return x

    def forward(self, ids, mask):
        """Class logits (B, C)."""
        x = self.encode(ids, mask)
        if self.cfg["pooling"] == "first":
            pooled = x[:, 0]
        else:
            m = mask.to(x.dtype).unsqueeze(-1)
            pooled = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.classifier(F.dropout(pooled, self.cfg["dropout"], self.training))

    def lm_logits(self, features):
        """Vocabulary logits (..., V) of token features (..., D)."""
        return self.lm_head(features, self.token_embedding.weight)


def lr_at(step, total, lr, warmup, min_lr=0.0):
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return min_lr + (lr - min_lr) * (1.0 - progress)


def batches(data_dir, split, batch_size, max_length, pad_id=0, labels=True):
    """(ids, mask, labels or None, real tokens) of the split's rows in file order, endlessly, each
    batch padded to its longest row like wave-dist's loader (packed rows all have the same length)."""
    manifest = json.load(open(f"{data_dir}/manifest.json"))
    columns = ["input_ids", "label"] if labels else ["input_ids"]
    rows, row_labels = [], []
    while True:
        for shard in manifest["splits"][split]["shards"]:
            table = pq.read_table(f"{data_dir}/{shard['path']}", columns=columns)
            ids = table.column("input_ids").combine_chunks()
            offsets, values = ids.offsets.to_numpy(), ids.values.to_numpy()
            shard_labels = table.column("label").to_numpy() if labels else None
            for r in range(len(ids)):
                rows.append(values[offsets[r]:offsets[r + 1]][:max_length])
                if labels:
                    row_labels.append(int(shard_labels[r]))
                if len(rows) == batch_size:
                    t = max(len(x) for x in rows)
                    x = np.full((batch_size, t), pad_id, dtype=np.int64)
                    m = np.zeros((batch_size, t), dtype=np.int64)
                    for i, row in enumerate(rows):
                        x[i, : len(row)] = row
                        m[i, : len(row)] = 1
                    y = torch.tensor(row_labels) if labels else None
                    yield torch.from_numpy(x), torch.from_numpy(m), y, int(m.sum())
                    rows, row_labels = [], []


def special_token_ids(tokenizer_json):
    """(mask id, ids never selected for masking): the added tokens flagged special, as wave-dist."""
    added = json.load(open(tokenizer_json))["added_tokens"]
    by_name = {t["content"]: t["id"] for t in added}
    mask_id = by_name.get("[MASK]", by_name.get("<mask>"))
    if mask_id is None:
        raise SystemExit(f"{tokenizer_json}: no [MASK] or <mask> token")
    return mask_id, torch.tensor(sorted({t["id"] for t in added if t["special"]} | {mask_id}))


def mask_tokens(ids, mask, mask_id, special, vocab, rate, gen):
    """BERT masking: returns (model inputs, selected positions (B, T) bool, targets (N,))."""
    selected = mask.bool() & ~torch.isin(ids, special) & (torch.rand(ids.shape, generator=gen) < rate)
    action = torch.rand(ids.shape, generator=gen)
    to_random = selected & (action >= 0.8) & (action < 0.9)
    inputs = ids.masked_fill(selected & (action < 0.8), mask_id)
    inputs[to_random] = torch.randint(vocab, (int(to_random.sum()),), generator=gen)
    return inputs, selected, ids[selected]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="prepared data set folder (manifest.json + shards)")
    p.add_argument("--split", default="train")
    p.add_argument("--objective", default="classification", choices=["classification", *LM_OBJECTIVES])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps before measuring")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--n-layers", type=int, default=1)
    p.add_argument("--mode", default="modulation")
    p.add_argument("--to-real", default=None, help="default: magnitude for classification, concat for LM")
    p.add_argument("--position", default="none")
    p.add_argument("--max-positions", type=int, default=512)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--mask-rate", type=float, default=0.15)
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer.json for masked_lm's special ids (default: "
                        "$WAVE_DIST_HOME/tokenizers/bert-base-uncased/tokenizer.json)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-warmup-steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    lm = args.objective in LM_OBJECTIVES
    manifest = json.load(open(f"{args.data}/manifest.json"))
    if "tokenizer" not in manifest:
        raise SystemExit(f"{args.data}: prepared without --tokenizer; the peer reads pre-tokenized input_ids")
    tok = manifest["tokenizer"]
    cfg = dict(vocab_size=tok["vocab_size"], d_model=args.d_model, n_layers=args.n_layers, mode=args.mode,
               to_real=args.to_real or ("concat" if lm else "magnitude"), position=args.position,
               max_positions=args.max_positions, ffn_dim=0, dropout=args.dropout, head=args.objective,
               pooling="mean", num_classes=0 if lm else len(manifest["label_names"]), eps=1e-6)
    if args.objective == "masked_lm":
        home = os.environ.get("WAVE_DIST_HOME", os.path.expanduser("~/.cache/wave-dist"))
        tokenizer = args.tokenizer or f"{home}/tokenizers/bert-base-uncased/tokenizer.json"
        mask_id, special = special_token_ids(tokenizer)
    model = WaveNetwork(cfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    model.train()
    total = args.warmup_steps + args.steps
    data = batches(args.data, args.split, args.batch_size, args.max_length, tok.get("pad_id", 0), labels=not lm)
    phases = dict.fromkeys(["data", "mask", "forward", "head_loss", "backward", "clip", "optimizer"], 0.0)
    samples = tokens = 0
    losses = []
    start = cpu_start = None
    for step in range(total):
        if step == args.warmup_steps:
            start, cpu_start = time.perf_counter(), time.process_time()
            samples = tokens = 0
            phases = dict.fromkeys(phases, 0.0)
        # CPU tensor ops are synchronous: each phase's wall time is its compute time.
        t0 = time.perf_counter()
        ids, mask, labels, real = next(data)
        t1 = time.perf_counter()
        if args.objective == "masked_lm":
            inputs, selected, targets = mask_tokens(ids, mask, mask_id, special, cfg["vocab_size"],
                                                    args.mask_rate, gen)
        elif args.objective == "causal_lm":
            # Position j predicts j + 1 wherever j + 1 is a real token.
            inputs, selected = ids, torch.zeros_like(mask, dtype=torch.bool)
            selected[:, :-1] = mask[:, 1:].bool()
            targets = ids[:, 1:][selected[:, :-1]]
        t2 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, args.lr, args.lr_warmup_steps)
        if lm:
            features = model.encode(inputs, mask)
            t3 = time.perf_counter()
            # The head and the loss on the supervised positions only.
            loss = F.cross_entropy(model.lm_logits(features[selected]).float(), targets)
        else:
            logits = model(ids, mask)
            t3 = time.perf_counter()
            loss = F.cross_entropy(logits.float(), labels, ignore_index=-100)
        t4 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        loss.backward()
        t5 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        t6 = time.perf_counter()
        opt.step()
        losses.append(loss.item())
        t7 = time.perf_counter()
        for name, secs in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6)):
            phases[name] += secs
        samples += ids.shape[0]
        tokens += real
    secs, cpu_secs = time.perf_counter() - start, time.process_time() - cpu_start
    print(json.dumps({
        "event": "peer_summary", "objective": args.objective, "steps": args.steps,
        "train_samples_per_s": samples / secs, "train_tokens_per_s": tokens / secs, "final_loss": losses[-1],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "phases_s": {k: round(v, 4) for k, v in phases.items()}, "timed_s": secs, "timed_cpu_s": cpu_secs,
        "params": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
