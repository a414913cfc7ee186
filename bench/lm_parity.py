"""Loss parity of wave-dist's language-model objectives with the PyTorch peer on the same weights and batch.

    wave-dist train --config C --set train.objective='"masked_lm"' ...      # a few steps: weights off init
    wave-dist checkpoint export <run>/checkpoints --out DIR                 # DIR/model.safetensors + config.json
    wave-dist eval --config <run>/config.toml --weights DIR/model.safetensors --dump-logits dump.json --dump-rows 16
    python bench/lm_parity.py DIR dump.json                                # exits 1 on a mismatch

`DIR` is an export folder (config.json) or a run folder (config.toml); both hold model.safetensors.
The dump holds wave-dist's model inputs after its fixed evaluation mask (`ids`, `mask`), the supervised
positions (flat into rows x length), their `targets`, and wave-dist's summed cross-entropy over them
(`loss_sum`, computed with the head on the gathered positions, in chunks). From the same inputs this
script computes, with bench/wave_peer.py's WaveNetwork:

- the summed loss with the head on the gathered positions only (what wave-dist does), in fp32;
- the summed loss with the head on every position, then gathered (the textbook way), in fp32;
- the gathered loss in fp64 (a reference with negligible rounding);

and requires each to equal wave-dist's within --rtol (default 1e-4), and the per-position logits of
the two fp32 paths to agree. It also checks that the dump's targets are what the objective says
(causal LM: exactly the next real token at every position whose successor is real; masked LM: real,
non-special tokens) and that the weights are trained (the head bias starts at zero). Prints one JSON
line with every figure; exits 1 with both values on a mismatch.
"""

import argparse
import json
import os
import sys
import tomllib

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wave_peer import WaveNetwork, special_token_ids  # noqa: E402


def model_config(folder):
    """The [model] section of an export (config.json) or a run folder (config.toml)."""
    if os.path.isfile(os.path.join(folder, "config.json")):
        return json.load(open(os.path.join(folder, "config.json")))
    with open(os.path.join(folder, "config.toml"), "rb") as f:
        return tomllib.load(f)["model"]


def check_targets(cfg, ids, mask, positions, targets, special):
    """Problems with the dump's supervised positions and targets, as messages."""
    problems = []
    n, t = ids.shape
    flat_ids, flat_mask = ids.reshape(-1), mask.reshape(-1)
    if positions.numel() != targets.numel():
        return [f"{positions.numel()} positions but {targets.numel()} targets"]
    if positions.numel() == 0:
        return ["no supervised positions"]
    if positions.min() < 0 or positions.max() >= n * t:
        return [f"positions outside 0..{n * t}"]
    if positions.unique().numel() != positions.numel():
        problems.append("repeated positions")
    if not bool((flat_mask[positions] == 1).all()):
        problems.append("a supervised position is padding")
    if cfg["head"] == "causal_lm":
        expected = torch.zeros_like(mask, dtype=torch.bool)
        expected[:, :-1] = mask[:, 1:].bool()
        want = expected.reshape(-1).nonzero().squeeze(1)
        if not torch.equal(positions.sort().values, want):
            problems.append(f"causal LM supervises {positions.numel()} positions, expected every position with "
                            f"a real successor ({want.numel()})")
        elif not torch.equal(targets, flat_ids[positions + 1]):
            problems.append("a causal LM target is not the next input token")
    elif special is not None and bool(torch.isin(targets, special).any()):
        problems.append("a masked LM target is a special token")
    return problems


def loss_sums(model, ids, mask, positions, targets):
    """(gathered-head loss sum, all-positions-head loss sum, max |logit difference| between the two)."""
    with torch.no_grad():
        features = model.encode(ids, mask)
        d = features.shape[-1]
        gathered_logits = model.lm_logits(features.reshape(-1, d)[positions])
        gathered = F.cross_entropy(gathered_logits, targets, reduction="sum").item()
        all_logits = model.lm_logits(features)
        full_logits = all_logits.reshape(-1, all_logits.shape[-1])[positions]
        full = F.cross_entropy(full_logits, targets, reduction="sum").item()
        diff = (gathered_logits - full_logits).abs().max().item()
    return gathered, full, diff


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", help="export folder (config.json) or run folder (config.toml), with model.safetensors")
    p.add_argument("dump", help="JSON written by `wave-dist eval --dump-logits`")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance on the loss sums")
    p.add_argument("--logit-atol", type=float, default=1e-4,
                   help="tolerance on logits of the gathered vs all-positions head")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer.json whose special ids masked LM never selects (default: the BERT uncased one "
                        "under $WAVE_DIST_HOME/tokenizers; checked only when the file exists)")
    args = p.parse_args()

    cfg = model_config(args.weights)
    if cfg["head"] not in ("masked_lm", "causal_lm"):
        sys.exit(f"{args.weights}: model.head = {cfg['head']!r}, not a language model")
    dump = json.load(open(args.dump))
    if dump.get("objective") != cfg["head"]:
        sys.exit(f"{args.dump}: objective {dump.get('objective')!r} but the weights are a {cfg['head']!r} model")
    for key in ("ids", "mask", "positions", "targets", "loss_sum", "count"):
        if key not in dump:
            sys.exit(f"{args.dump}: no {key!r} (written by a wave-dist without LM dumps?)")
    state = load_file(os.path.join(args.weights, "model.safetensors"))
    model = WaveNetwork(cfg)
    model.load_state_dict(state, strict=True)
    model.eval()
    if float(state["lm_head.bias"].abs().max()) == 0.0:
        sys.exit(f"{args.weights}: lm_head.bias is all zeros (its initial value): train a few steps first")

    ids = torch.tensor(dump["ids"], dtype=torch.int64)
    mask = torch.tensor(dump["mask"], dtype=torch.int64)
    positions = torch.tensor(dump["positions"], dtype=torch.int64)
    targets = torch.tensor(dump["targets"], dtype=torch.int64)
    special = None
    if cfg["head"] == "masked_lm":
        home = os.environ.get("WAVE_DIST_HOME", os.path.expanduser("~/.cache/wave-dist"))
        tokenizer = args.tokenizer or f"{home}/tokenizers/bert-base-uncased/tokenizer.json"
        if args.tokenizer or os.path.isfile(tokenizer):
            special = special_token_ids(tokenizer)[1]
    problems = check_targets(cfg, ids, mask, positions, targets, special)
    if int(dump["count"]) != positions.numel():
        problems.append(f"count {dump['count']} but {positions.numel()} positions")

    ours = float(dump["loss_sum"])
    gathered, full, logit_diff = loss_sums(model, ids, mask, positions, targets)
    model.double()
    reference = loss_sums(model, ids, mask, positions, targets)[0]
    peers = {"peer_gathered_head": gathered, "peer_all_positions_head": full, "peer_f64": reference}
    rel = {k: abs(v - ours) / max(abs(ours), 1e-12) for k, v in peers.items()}
    for name, value in peers.items():
        if rel[name] > args.rtol:
            problems.append(f"loss sum: wave-dist {ours!r} vs {name} {value!r} "
                            f"(relative difference {rel[name]:.3e} > {args.rtol:g})")
    if logit_diff > args.logit_atol:
        problems.append(f"gathered-head and all-positions-head logits differ by {logit_diff:.3e}")

    print(json.dumps({
        "objective": cfg["head"], "rows": ids.shape[0], "length": ids.shape[1], "count": positions.numel(),
        "wave_dist_loss_sum": ours, **peers, "max_relative_difference": max(rel.values()),
        "max_logit_difference": logit_diff, "ok": not problems,
    }))
    if problems:
        sys.exit("lm_parity: " + "; ".join(problems))


if __name__ == "__main__":
    main()
