"""Why the shipped models use a 2048-token BPE: bytes per token against compute per byte.

For each vocabulary size V, train the byte-level BPE on the default corpus's training split, measure
bytes per token on the held-out files, and count the FLOPs of one training step (forward + backward,
torch's FlopCounterMode) of the shipped trunk at that V, for the D = 3 star and the D = 0 twin.
FLOPs per byte = FLOPs per token / bytes per token: the compute the model spends to learn one byte
of Python. A larger V packs more bytes into a token but makes every output head (one per depth)
and the embedding bigger. Counting FLOPs, not seconds, makes the result the same on every machine.

    python benchmarks/vocab_choice.py --out benchmarks/vocab_choice.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from mtp_edu import MTPModel, mtp_loss
from mtp_edu.data import BPETokenizer, stdlib_corpus
from mtp_edu.presets import preset


def step_flops(model: MTPModel, seq_len: int) -> int:
    """FLOPs of one forward + backward of the eq. 25 loss on one chunk of seq_len tokens."""
    x = torch.randint(0, model.config.vocab_size, (1, seq_len + 1), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        mtp_loss(model(x[:, :-1]), x[:, 1:], 0.3).total.backward()
    return counter.get_total_flops()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", default="512,1024,2048,4096,8192")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    corpus = stdlib_corpus()
    val_bytes = len(corpus.val.encode("utf-8"))
    rows = []
    for V in [int(v) for v in args.vocab.split(",")]:
        tok = BPETokenizer.train(corpus.train, V)
        bytes_per_token = val_bytes / len(tok.encode_tensor(corpus.val))
        row = {"vocab_size": V, "val_bytes_per_token": round(bytes_per_token, 4)}
        for name in ("mtp-seq-d3", "mtp-d0"):
            cfg, tc = preset(name)
            model = MTPModel(cfg.replace(vocab_size=V))
            flops_per_token = step_flops(model, tc.seq_len) / tc.seq_len
            row[name] = {"params": sum(p.numel() for p in model.parameters()),
                         "train_flops_per_token": round(flops_per_token),
                         "train_flops_per_byte": round(flops_per_token / bytes_per_token)}
        rows.append(row)
        print(f"V={V:5d}  bytes/token {bytes_per_token:.3f}  " + "  ".join(
            f"{n}: {row[n]['train_flops_per_byte'] / 1e6:.1f} MFLOP/byte, {row[n]['params']:,} params"
            for n in ("mtp-seq-d3", "mtp-d0")), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"command": "python " + " ".join(sys.argv), "corpus_sha256": corpus.sha256,
                       "python": platform.python_version(), "torch": torch.__version__, "rows": rows}, f, indent=1)
            f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
