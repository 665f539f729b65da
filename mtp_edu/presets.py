"""Named starting configurations: the recipes of the shipped models, a notebook-sized run and a GPU run.

    model_config, train_config = preset("tiny")       # what `mtp-edu train --preset tiny` starts from
"""
from __future__ import annotations

from .config import MTPConfig, TrainConfig

# The shipped models read subword tokens (a 2048-token BPE trained on the corpus's training
# split). The trunk (8 blocks) is much deeper than one MTP module (1 block): a
# CPU decode step costs about the same per layer whatever the number of tokens, so drafting must be
# cheap next to verifying. d = 160 keeps the four shipped models under 30 MB in float16.
_STAR = dict(vocab_size=2048, d_model=160, n_layers=8, n_heads=4, max_seq_len=512, mtp_loss_scale=0.3)
_STAR_TRAIN = dict(tokenizer="bpe:2048", steps=4000, batch_size=8, seq_len=512, lr=2e-3, warmup_steps=200,
                   eval_every=500, log_every=10, save_every=250)
PRESETS: dict[str, tuple[dict, dict]] = {
    "tiny": (dict(vocab_size=256, d_model=64, n_layers=2, n_heads=2, max_seq_len=128, mtp_depth=2),
             dict(steps=1000, batch_size=8, seq_len=128, lr=3e-3, warmup_steps=30, eval_every=250,
                  eval_chunks=16, final_eval_chunks=32, card_chunks=16, log_every=10, threads=1)),
    "mtp-seq-d3": (dict(_STAR, mtp_depth=3, mtp_style="sequential"), dict(_STAR_TRAIN)),
    "mtp-d0": (dict(_STAR, mtp_depth=0), dict(_STAR_TRAIN)),
    "mtp-par-d3": (dict(_STAR, mtp_depth=3, mtp_style="parallel"), dict(_STAR_TRAIN)),
    "mtp-lin-d3": (dict(_STAR, mtp_depth=3, mtp_style="linear"), dict(_STAR_TRAIN)),
    # For a CUDA GPU (bf16 autocast, fused SDPA attention): ~49M parameters, byte tokens (V = 256) on the same corpus.
    # Not trained for the package: no GPU numbers are claimed for it. Add --compile to try torch.compile.
    "gpu": (dict(vocab_size=256, d_model=512, n_layers=12, n_heads=8, max_seq_len=512, mtp_depth=3,
                 mtp_style="sequential", mtp_loss_scale=0.3),
            dict(steps=5000, batch_size=32, seq_len=512, lr=6e-4, warmup_steps=200, eval_every=500,
                 log_every=10, save_every=1000, device="auto")),
}


def preset(name: str) -> tuple[MTPConfig, TrainConfig]:
    """The (model, training) configs of a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    model_kw, train_kw = PRESETS[name]
    return MTPConfig(**model_kw), TrainConfig(**train_kw)
