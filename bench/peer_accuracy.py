"""The accuracy peer: the same model and recipe as a wave-dist config, trained in plain PyTorch with a
full per-epoch shuffle (torch.randperm over the whole split), then evaluated on a held-out split.

It answers "what accuracy does this recipe reach when every batch is an i.i.d. draw from the
split?", the reference for wave-dist's streaming shuffle (bench/shuffle_accuracy.py runs both).

    python bench/peer_accuracy.py --data data/imdb --config configs/imdb-quick.toml --seed 0
"""

import argparse
import json
import math
import os
import sys
import time
import tomllib

import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wave_peer import WaveNetwork, lr_at  # noqa: E402


def load_split(data_dir, split, max_length):
    """Every row of a split: (token ids truncated to max_length, label), in storage order."""
    manifest = json.load(open(f"{data_dir}/manifest.json"))
    rows = []
    for shard in manifest["splits"][split]["shards"]:
        table = pq.read_table(f"{data_dir}/{shard['path']}", columns=["input_ids", "label"])
        ids = table.column("input_ids").to_pylist()
        labels = table.column("label").to_pylist()
        for r, label in zip(ids, labels):
            if len(r) > max_length:
                # Keep the final [SEP], as the tokenizer's own truncation does.
                r = r[: max_length - 1] + r[-1:]
            rows.append((r, label))
    return manifest, rows


def collate(rows, pad_id):
    t = max(len(r) for r, _ in rows)
    x = torch.full((len(rows), t), pad_id, dtype=torch.long)
    m = torch.zeros((len(rows), t), dtype=torch.long)
    for i, (r, _) in enumerate(rows):
        x[i, : len(r)] = torch.tensor(r)
        m[i, : len(r)] = 1
    return x, m, torch.tensor([label for _, label in rows])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--config", required=True, help="a wave-dist job config: its [model], [data] and [train] recipe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--linear-init", choices=["pytorch", "tch"], default="pytorch",
                   help="weights of every linear layer: PyTorch's default (uniform, bound 1/sqrt(fan_in)) "
                        "or tch's (Kaiming uniform with the ReLU gain, bound sqrt(6/fan_in)), to measure "
                        "what the initialisation alone is worth")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    job = tomllib.load(open(args.config, "rb"))
    model_cfg, data_cfg, train_cfg = job.get("model", {}), job["data"], job.get("train", {})
    max_length = data_cfg.get("max_length", 128)
    manifest, train_rows = load_split(args.data, data_cfg.get("train_split", "train"), max_length)
    _, eval_rows = load_split(args.data, data_cfg.get("eval_split", "validation"), max_length)
    pad_id = manifest["tokenizer"]["pad_id"]
    cfg = dict(vocab_size=manifest["tokenizer"]["vocab_size"], d_model=model_cfg.get("d_model", 768),
               n_layers=model_cfg.get("n_layers", 1), mode=model_cfg.get("mode", "modulation"),
               to_real=model_cfg.get("to_real", "magnitude"), position=model_cfg.get("position", "none"),
               max_positions=model_cfg.get("max_positions", 512), ffn_dim=model_cfg.get("ffn_dim", 0),
               dropout=model_cfg.get("dropout", 0.1), head="classification",
               pooling=model_cfg.get("pooling", "mean"), num_classes=len(manifest["label_names"]),
               eps=model_cfg.get("eps", 1e-6))
    model = WaveNetwork(cfg)
    if args.linear_init == "tch":
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.Linear):
                    bound = math.sqrt(6.0 / m.in_features)
                    m.weight.uniform_(-bound, bound)
    lr, wd = train_cfg.get("lr", 1e-3), train_cfg.get("weight_decay", 0.01)
    decay = [q for q in model.parameters() if q.dim() >= 2]
    no_decay = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(train_cfg.get("beta1", 0.9), train_cfg.get("beta2", 0.999)),
                            eps=train_cfg.get("adam_eps", 1e-8))
    batch = data_cfg.get("batch_size", 64)
    epochs = train_cfg.get("epochs", 1)
    per_epoch = math.ceil(len(train_rows) / batch)
    total = epochs * per_epoch
    warmup = train_cfg.get("warmup_steps", 100)
    clip = train_cfg.get("grad_clip", 1.0)
    gen = torch.Generator().manual_seed(args.seed)
    started = time.perf_counter()
    step = 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train_rows), generator=gen).tolist()
        for start in range(0, len(order), batch):
            ids, mask, labels = collate([train_rows[i] for i in order[start:start + batch]], pad_id)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, lr, warmup, train_cfg.get("min_lr", 0.0))
            loss = F.cross_entropy(model(ids, mask).float(), labels)
            opt.zero_grad(set_to_none=False)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            step += 1
    train_secs = time.perf_counter() - started
    model.eval()
    correct = loss_sum = 0.0
    with torch.no_grad():
        for start in range(0, len(eval_rows), 256):
            ids, mask, labels = collate(eval_rows[start:start + 256], pad_id)
            logits = model(ids, mask).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(-1) == labels).sum().item()
    print(json.dumps({
        "event": "peer_accuracy", "seed": args.seed, "linear_init": args.linear_init, "steps": step, "train_secs": train_secs,
        "eval": {"accuracy": correct / len(eval_rows), "loss": loss_sum / len(eval_rows), "samples": len(eval_rows)},
    }))


if __name__ == "__main__":
    main()
