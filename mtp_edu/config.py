"""MTPConfig: every hyper-parameter of an mtp-edu model, validated.

Where a production system names the same knob, the comment gives its name there:
Megatron-core (`--mtp-num-layers`, `--mtp-loss-scaling-factor`) and the DeepSeek-V3 config
(`num_nextn_predict_layers`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MTP_STYLES = ("sequential", "parallel", "linear")


class DictConfig:
    """to_dict / from_dict for a config dataclass; unknown keys are an error, never ignored."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        """Build from a dict (e.g. a checkpoint's JSON)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known fields: {sorted(names)}")
        return cls(**data)


@dataclass
class MTPConfig(DictConfig):
    vocab_size: int = 256          # V; 256 = byte-level tokenizer
    d_model: int = 128             # d, the width of every hidden state
    n_layers: int = 4              # L, decoder blocks in the main trunk
    n_heads: int = 4               # attention heads (d_model must divide by it)
    max_seq_len: int = 256         # context length; RoPE tables and KV caches are this long
    mtp_depth: int = 1             # D; Megatron mtp_num_layers, DeepSeek num_nextn_predict_layers
    mtp_style: str = "sequential"  # sequential (DeepSeek-V3) | parallel (Meta 2024) | linear (Medusa-like)
    mtp_loss_scale: float = 0.3    # lambda in eq. 25; Megatron mtp_loss_scaling_factor (0.1 there)
    tie_embeddings: bool = True    # OutHead shares its weight with Emb
    dropout: float = 0.0           # on attention and residual branches, training only
    d_ff: int | None = None        # SwiGLU hidden width; None -> 8/3 * d_model rounded up to 32
    rope_theta: float = 10000.0    # RoPE base
    norm_eps: float = 1e-6         # RMSNorm epsilon
    init_seed: int = 0             # seeds the weight initialisation (trunk and each module separately)

    def __post_init__(self) -> None:
        def need(field: str, ok: bool, allowed: str) -> None:
            if not ok:
                value = getattr(self, field)
                raise ValueError(f"MTPConfig.{field}={value!r} is not allowed: {allowed}")

        for field in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len"):
            value = getattr(self, field)
            need(field, isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                 "must be an integer >= 1")
        need("vocab_size", self.vocab_size >= 2, "must be an integer >= 2")
        need("d_model", self.d_model % self.n_heads == 0,
             f"must be a multiple of n_heads={self.n_heads}")
        need("d_model", (self.d_model // self.n_heads) % 2 == 0,
             f"d_model / n_heads must be even for RoPE (got head size {self.d_model // self.n_heads})")
        need("mtp_depth", isinstance(self.mtp_depth, int) and not isinstance(self.mtp_depth, bool)
             and self.mtp_depth >= 0, "must be an integer >= 0 (0 = plain next-token model)")
        need("max_seq_len", self.max_seq_len >= self.mtp_depth + 2,
             f"must be >= mtp_depth + 2 = {self.mtp_depth + 2} so every depth has a position")
        need("mtp_style", self.mtp_style in MTP_STYLES, f"must be one of {', '.join(MTP_STYLES)}")
        need("mtp_loss_scale", isinstance(self.mtp_loss_scale, (int, float))
             and not isinstance(self.mtp_loss_scale, bool) and self.mtp_loss_scale >= 0,
             "must be a number >= 0")
        need("tie_embeddings", isinstance(self.tie_embeddings, bool), "must be True or False")
        need("dropout", isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0,
             "must be a number in [0, 1)")
        need("d_ff", self.d_ff is None or (isinstance(self.d_ff, int) and self.d_ff >= 1),
             "must be None or an integer >= 1")
        need("rope_theta", isinstance(self.rope_theta, (int, float)) and self.rope_theta > 0,
             "must be a number > 0")
        need("norm_eps", isinstance(self.norm_eps, (int, float)) and self.norm_eps > 0,
             "must be a number > 0")
        need("init_seed", isinstance(self.init_seed, int) and not isinstance(self.init_seed, bool),
             "must be an integer")

    @property
    def ff_width(self) -> int:
        """SwiGLU hidden width: d_ff, or 8/3 * d rounded up to a multiple of 32 (LLaMA's rule)."""
        if self.d_ff is not None:
            return self.d_ff
        return -(-8 * self.d_model // 3 // 32) * 32

    def replace(self, **changes) -> "MTPConfig":
        return dataclasses.replace(self, **changes)
