"""Small pretrained models that ship inside the package: no download, no network.

Each subfolder is a checkpoint directory (see mtp_edu.checkpoint) holding model.safetensors
(float16 storage, loaded as float32), checkpoint.json and card.json, the model card: the exact
`mtp-edu train` command that made it, training time and hardware, tokens seen, and per-depth
validation loss and top-1 accuracy measured on the stored weights.

    mtp-seq-d3   sequential MTP modules (DeepSeek-V3), D = 3: the star of the notebooks
    mtp-d0       the same trunk trained as a plain next-token model (D = 0)
    mtp-par-d3   parallel heads (Gloeckle et al. 2024), D = 3
    mtp-lin-d3   residual linear heads (Medusa-like), D = 3
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
DESCRIPTIONS = {
    "mtp-seq-d3": "sequential MTP modules (DeepSeek-V3), D = 3",
    "mtp-d0": "same trunk, plain next-token model (D = 0)",
    "mtp-par-d3": "parallel heads (Meta, Gloeckle et al. 2024), D = 3",
    "mtp-lin-d3": "residual linear heads (Medusa-like), D = 3",
}


def list_pretrained() -> list[str]:
    """Names of the shipped models present in this installation."""
    return [name for name in DESCRIPTIONS if (HERE / name / "checkpoint.json").is_file()]


def pretrained_path(name: str) -> Path:
    if name not in list_pretrained():
        raise ValueError(f"no shipped model {name!r}; available: {', '.join(list_pretrained()) or 'none'}")
    return HERE / name


def load_pretrained(name: str):
    """(model, tokenizer) of a shipped model; the model is float32, on the CPU, in eval mode."""
    from ..checkpoint import load_checkpoint
    state = load_checkpoint(pretrained_path(name))
    return state.model, state.tokenizer


def pretrained_card(name: str) -> dict:
    """The model card (card.json) of a shipped model."""
    from ..checkpoint import read_card
    return read_card(pretrained_path(name))
