"""Rebuild the model card of an exported checkpoint with the current card code.

A card is a function of the stored weights, the tokenizer, the corpus and the facts of training
(commands, time, hardware, history), all of which the checkpoint keeps. When the card gains a
measurement (the quality gates, say), this recomputes it for a model already trained, without
training again; the weights are written back unchanged.

    python -m mtp_edu.tools.cards mtp_edu/pretrained/mtp-seq-d3 [...]
"""
from __future__ import annotations

import argparse

from ..card import format_card, make_card
from ..checkpoint import load_checkpoint, read_card, save_checkpoint
from ..cli import UserError
from ..config import TrainConfig
from ..data import load_corpus


def rebuild_card(path: str) -> dict:
    """Recompute and store the card of the checkpoint at `path`; return the new card."""
    state = load_checkpoint(path)
    meta, old = state.meta, read_card(path)
    if old is None:
        raise UserError(f"{path}: no card to rebuild (only an exported or finished checkpoint has one)")
    tc = TrainConfig.from_dict(meta["train_config"])
    corpus = load_corpus(tc.data)
    if corpus.sha256 != meta["corpus"]["sha256"]:
        raise UserError(f"{path} was trained on a corpus with sha256 {meta['corpus']['sha256'][:16]}...; this "
                        f"machine's {tc.data!r} has {corpus.sha256[:16]}... (another Python version?)")
    code = corpus.name == "stdlib"
    card = make_card(state.model, meta["corpus"], state.tokenizer.encode_tensor(corpus.val), tc, name=old["name"],
                     command=old["command"], commands=meta.get("commands"), history=meta.get("history"),
                     training_time_s=old["training_time_s"], tokens_seen=old["tokens_seen"],
                     hardware=old["hardware"], weights_dtype=old["weights_dtype"], steps=old["steps"],
                     tokenizer=state.tokenizer if code else None, val_text=corpus.val if code else None)
    card["software"] = old["software"]                  # what trained it, not what measured the card
    save_checkpoint(path, state.model, state.tokenizer, {k: v for k, v in meta.items() if k not in (
        "format", "version", "config", "tokenizer", "weights_dtype", "files", "optimizer")},
        card=card, dtype=old["weights_dtype"])
    return card


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mtp_edu.tools.cards", description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="exported checkpoint directories")
    args = ap.parse_args(argv)
    try:
        for path in args.paths:
            print(format_card(rebuild_card(path)), flush=True)
    except (UserError, ValueError) as e:                 # a CheckpointError is a ValueError
        print(f"cards: error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
