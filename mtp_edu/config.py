"""The two configs, validated: MTPConfig (every hyper-parameter of a model) and TrainConfig (of a run).

Where a production system names the same knob, the comment gives its name there:
Megatron-core (`--mtp-num-layers`, `--mtp-loss-scaling-factor`) and the DeepSeek-V3 config
(`num_nextn_predict_layers`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .checks import check_int, check_number

MTP_STYLES = ("sequential", "parallel", "linear")
LAMBDA_SCHEDULES = ("constant", "deepseek")   # the lambda schedules train() builds
MODULE_SEED_STRIDE = 7919                      # MTPModel._init_weights seeds module k with init_seed + 7919 * k


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
        def name(field: str) -> str:
            return f"MTPConfig.{field}"

        def need(field: str, ok: bool, allowed: str) -> None:
            if not ok:
                raise ValueError(f"{name(field)}={getattr(self, field)!r} is not allowed: {allowed}")

        for field in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len"):
            check_int(name(field), getattr(self, field), minimum=1)
        check_int(name("vocab_size"), self.vocab_size, minimum=2)
        need("d_model", self.d_model % self.n_heads == 0, f"must be a multiple of n_heads={self.n_heads}")
        need("d_model", (self.d_model // self.n_heads) % 2 == 0,
             f"d_model / n_heads must be even for RoPE (got head size {self.d_model // self.n_heads})")
        check_int(name("mtp_depth"), self.mtp_depth, minimum=0, note="0 = plain next-token model")
        need("max_seq_len", self.max_seq_len >= self.mtp_depth + 2,
             f"must be >= mtp_depth + 2 = {self.mtp_depth + 2} so every depth has a position")
        need("mtp_style", self.mtp_style in MTP_STYLES, f"must be one of {', '.join(MTP_STYLES)}")
        check_number(name("mtp_loss_scale"), self.mtp_loss_scale, minimum=0)
        if not isinstance(self.tie_embeddings, bool):
            raise TypeError(f"{name('tie_embeddings')}={self.tie_embeddings!r} is not allowed: must be True or False")
        check_number(name("dropout"), self.dropout, minimum=0, below=1)
        check_int(name("d_ff"), self.d_ff, minimum=1, optional=True)
        check_number(name("rope_theta"), self.rope_theta, above=0)
        check_number(name("norm_eps"), self.norm_eps, above=0)
        # torch.Generator.manual_seed takes seeds in [0, 2**64) (a negative seed wraps around to the same
        # generator as seed + 2**64, so it is refused); MTPModel seeds module k with init_seed + 7919 * k
        check_int(name("init_seed"), self.init_seed, minimum=0, maximum=2**64 - 1 - MODULE_SEED_STRIDE * self.mtp_depth,
                  note=f"a torch seed is < 2**64, and MTP module k uses init_seed + {MODULE_SEED_STRIDE} * k")

    @property
    def ff_width(self) -> int:
        """SwiGLU hidden width: d_ff, or 8/3 * d rounded up to a multiple of 32 (LLaMA's rule)."""
        if self.d_ff is not None:
            return self.d_ff
        return -(-8 * self.d_model // 3 // 32) * 32

    def replace(self, **changes) -> "MTPConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class TrainConfig(DictConfig):
    """Every training knob; JSON-able, stored in each checkpoint."""
    data: str = "stdlib"             # 'stdlib' | 'synthetic:KIND[:NOISE]' | path to a UTF-8 text file
    tokenizer: str = "byte"          # 'byte' | 'bpe:VOCAB'
    steps: int = 1000                # optimizer steps in total
    batch_size: int = 16             # global batch: chunks per step, summed over all processes
    seq_len: int = 256               # T: tokens each chunk feeds the model (chunks hold T + 1)
    lr: float = 3e-3                 # peak learning rate
    min_lr_ratio: float = 0.1        # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100          # linear warmup from 0
    weight_decay: float = 0.1        # AdamW decay, on matrices only (not norms)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0           # max global gradient norm (0 = off)
    seed: int = 0                    # data order and dropout; weights use MTPConfig.init_seed
    lambda_schedule: str = "constant"  # 'constant' (MTPConfig.mtp_loss_scale) | 'deepseek' (0.3 then 0.1)
    reduction: str = "valid"         # per-depth loss reduction, see mtp_edu.losses
    memory_efficient: bool = False   # one depth's logits alive at a time (mtp_loss_backward)
    compile: bool = False            # torch.compile the forward (not on Windows)
    device: str = "auto"             # 'auto' = cuda, then mps, then cpu
    threads: int | None = None       # torch CPU threads (None = torch's default); 1 is fastest for
                                     # small models on a busy 2-core machine
    log_every: int = 10              # history gets the mean of each `log_every` steps
    eval_every: int = 200            # periodic validation (0 = only at the end)
    eval_chunks: int = 32            # validation chunks per periodic evaluation
    final_eval_chunks: int | None = None  # validation chunks for the card (None = the whole split)
    card_chunks: int = 32            # chunks of the fixed slice the card stores for re-checking
    save_every: int = 0              # checkpoint every N steps (0 = only at the end)

    def __post_init__(self) -> None:
        for field in ("steps", "batch_size", "seq_len", "log_every", "eval_chunks", "card_chunks"):
            check_int(f"TrainConfig.{field}", getattr(self, field), minimum=1)
        for field in ("warmup_steps", "eval_every", "save_every"):
            check_int(f"TrainConfig.{field}", getattr(self, field), minimum=0)
        check_number("TrainConfig.lr", self.lr, above=0)
        check_number("TrainConfig.min_lr_ratio", self.min_lr_ratio, minimum=0, maximum=1)
        check_int("TrainConfig.seed", self.seed, minimum=0, maximum=2**64 - 1, note="a torch seed is < 2**64")
        if self.lambda_schedule not in LAMBDA_SCHEDULES:
            raise ValueError(f"TrainConfig.lambda_schedule={self.lambda_schedule!r} is not allowed: "
                             f"must be one of {', '.join(LAMBDA_SCHEDULES)}")
        check_int("TrainConfig.threads", self.threads, minimum=1, optional=True)
        check_int("TrainConfig.final_eval_chunks", self.final_eval_chunks, minimum=1, optional=True)
        if self.device not in ("auto", "cpu", "cuda", "mps") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"TrainConfig.device={self.device!r} is not allowed: must be auto, cpu, cuda[:N] or mps")
