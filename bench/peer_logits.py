"""Logits of bench/wave_peer.py's WaveNetwork for given inputs: the PyTorch side of the export interop check.

    wave-dist checkpoint export <ckpt-uri> --out DIR          # DIR/model.safetensors + DIR/config.json
    wave-dist eval --config C --weights DIR/model.safetensors --dump-logits rust.json
    python bench/peer_logits.py DIR rust.json                 # prints {"logits": [[...], ...]}

The inputs file is JSON with "ids" and "mask" (lists of rows); any other keys are ignored.
"""

import json
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wave_peer import WaveNetwork  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: peer_logits.py EXPORT_DIR INPUTS_JSON")
    export_dir, inputs_path = sys.argv[1], sys.argv[2]
    cfg = json.load(open(os.path.join(export_dir, "config.json")))
    model = WaveNetwork(cfg)
    model.load_state_dict(load_file(os.path.join(export_dir, "model.safetensors")), strict=True)
    model.eval()
    inputs = json.load(open(inputs_path))
    ids = torch.tensor(inputs["ids"], dtype=torch.int64)
    mask = torch.tensor(inputs["mask"], dtype=torch.int64)
    with torch.no_grad():
        logits = model(ids, mask).float()
    print(json.dumps({"logits": logits.tolist()}))


if __name__ == "__main__":
    main()
