"""The mtp-edu model: a small pre-norm GPT trunk plus D multi-token-prediction modules.

Read top to bottom: RoPE, KV cache, attention, SwiGLU MLP, block, the three MTP module styles,
then MTPModel, which ties them together.

References
- DeepSeek-V3 Technical Report, arXiv 2412.19437, sec. 2.2 (MTP modules, eqs. 21-25).
- Gloeckle et al. 2024, "Better & Faster Large Language Models via Multi-token Prediction",
  arXiv 2404.19737 (parallel heads on a shared trunk).
- Cai et al. 2024, Medusa, arXiv 2401.10774 (residual linear heads on the last hidden state).
- Su et al. 2021, RoFormer (rotary position embedding); Shazeer 2020 (SwiGLU); Zhang & Sennrich 2019 (RMSNorm).

Notation follows docs/design.md: the model reads t_1..t_T; depth k = 0 is the main model,
depth k >= 1 is MTP module k, which predicts t_{i+k+1} at position i = 1..T-k.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import check_token_ids
from .config import MTPConfig
from .shifts import check_length, depth_inputs


class Rotary(nn.Module):
    """Rotary position embedding: rotates each (x1, x2) pair of q and k by angle pos * theta^(-2j/hd)."""

    def __init__(self, head_dim: int, max_len: int, theta: float):
        super().__init__()
        inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)  # (max_len, hd/2)
        # non-persistent: recomputed from the config, never stored in a checkpoint
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor, start: int, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Positions start .. start+T-1, or the explicit `positions` (T,) (tree decoding: prefix + depth)."""
        T = x.shape[-2]                                              # x: (B, H, T, hd)
        at = slice(start, start + T) if positions is None else positions
        cos = self.cos[at].to(x.dtype)                               # (T, hd/2)
        sin = self.sin[at].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class KVCache:
    """Pre-allocated keys and values of one attention layer, filled up to `length`.

    Rolling back (speculative decoding) only lowers `length`: entries past it are never read and
    are overwritten by the next `append`.
    """

    def __init__(self, batch: int, n_heads: int, head_dim: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.k = torch.zeros(batch, n_heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions requested, capacity {self.max_len}")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def rollback(self, length: int) -> None:
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot roll back to length {length}; cache holds {self.length}")
        self.length = length

    def keep(self, start: int, slots: list[int]) -> None:
        """Tree decoding (mtp_edu.tree): keep the entries at start + slots[0], start + slots[1], ... (the
        accepted path), moved to start, start + 1, ...; everything after them is rolled back.

        The keys were rotated at their node's depth past the prefix, which is exactly the position they
        move to, so nothing needs recomputing."""
        if not 0 <= start <= self.length or any(not 0 <= start + s < self.length for s in slots):
            raise ValueError(f"cannot keep slots {slots} after {start}; cache holds {self.length}")
        if list(slots) == list(range(len(slots))):                      # already in place (a chain)
            self.length = start + len(slots)
            return
        src = torch.tensor(slots, dtype=torch.long, device=self.k.device) + start
        self.k[:, :, start:start + len(slots)] = self.k[:, :, src]     # the gather copies before writing
        self.v[:, :, start:start + len(slots)] = self.v[:, :, src]
        self.length = start + len(slots)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with RoPE, through F.scaled_dot_product_attention."""

    def __init__(self, cfg: MTPConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, rope: Rotary, cache: KVCache | None = None,
                positions: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """positions (T,) and mask (T, keys) bool, both optional, are for tree decoding (mtp_edu.tree): each
        query's RoPE position and the keys (cache, then the T new ones) it may see. None: the causal layout."""
        B, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for z in (q, k, v))  # (B, H, T, hd)
        start = 0 if cache is None else cache.length
        q, k = rope(q, start, positions), rope(k, start, positions)
        dropout = self.dropout if self.training else 0.0
        if cache is None and mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        else:
            if cache is not None:
                k, v = cache.append(k, v)                             # (B, H, start+T, hd)
            if mask is None:
                # query j sits at position start+j and may see keys 0..start+j; one query sees them all
                mask = None if T == 1 else torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.proj(y.transpose(1, 2).reshape(B, T, d))          # (B, T, d)


class SwiGLU(nn.Module):
    """Feed-forward w2(silu(w1 x) * w3 x) (Shazeer 2020), as in LLaMA and DeepSeek-V3's dense layers."""

    def __init__(self, cfg: MTPConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.ff_width, bias=False)   # gate
        self.w3 = nn.Linear(cfg.d_model, cfg.ff_width, bias=False)   # up
        self.w2 = nn.Linear(cfg.ff_width, cfg.d_model, bias=False)   # down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    """Pre-norm decoder block: x + Attn(RMSNorm(x)), then + MLP(RMSNorm(x)). TRM_k in eq. 22."""

    def __init__(self, cfg: MTPConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, rope: Rotary, cache: KVCache | None = None,
                positions: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), rope, cache, positions, mask))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


# ---- the three MTP module styles --------------------------------------------------------------
# Each maps (h_prev, emb) -> h^k for the positions it is given; MTPModel.head_logits then applies
# the module's own `norm` (Norm_k) and the shared output head.

class SequentialMTP(nn.Module):
    """DeepSeek-V3 MTP module k (eqs. 21-22), with the released checkpoint's names.

        h'^k_i = M_k [RMSNorm(Emb(t_{i+k})) ; RMSNorm(h^{k-1}_i)]     (eq. 21; M_k = eh_proj)
        h^k    = TRM_k(h'^k)                                          (eq. 22)

    The paper writes [RMSNorm(h); RMSNorm(Emb)]; the engines that run the released weights (vLLM, SGLang)
    and Megatron-core put the embedding first. The two are the same model with M_k's two column blocks
    swapped.
    """

    def __init__(self, cfg: MTPConfig):
        super().__init__()
        self.enorm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.hnorm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.eh_proj = nn.Linear(2 * cfg.d_model, cfg.d_model, bias=False)
        self.block = Block(cfg)
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)        # Norm_k before OutHead (eq. 23)

    def forward(self, h_prev, emb, rope, cache=None, positions=None, mask=None):
        h = self.eh_proj(torch.cat([self.enorm(emb), self.hnorm(h_prev)], dim=-1))  # (B, T-k, d)
        return self.block(h, rope, cache, positions, mask)


class ParallelMTP(nn.Module):
    """Meta's parallel head k (Gloeckle et al. 2024): h^k = TRM_k(h^0); it never sees t_{i+k}."""

    def __init__(self, cfg: MTPConfig):
        super().__init__()
        self.block = Block(cfg)
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)

    def forward(self, h_prev, emb, rope, cache=None, positions=None, mask=None):
        return self.block(h_prev, rope, cache, positions, mask)


class LinearMTP(nn.Module):
    """Medusa-like residual head k: h^k = h^0 + SiLU(W_k h^0). W_k starts at zero (as in Medusa),
    so every head starts out predicting what the main head predicts."""

    def __init__(self, cfg: MTPConfig):
        super().__init__()
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)

    def forward(self, h_prev, emb, rope, cache=None, positions=None, mask=None):
        return h_prev + F.silu(self.proj(h_prev))


MTP_MODULES = {"sequential": SequentialMTP, "parallel": ParallelMTP, "linear": LinearMTP}


@dataclass
class MTPOutput:
    """logits[k]: (B, T-k, V) predicting t_{i+k+1}; hidden[k]: (B, T-k, d).

    hidden[0] is h^0 after the final norm (exactly what OutHead reads, as in Megatron-core);
    hidden[k >= 1] is module k's block output h^k, before its Norm_k.
    """
    logits: list[torch.Tensor]
    hidden: list[torch.Tensor]


class MTPModel(nn.Module):
    """Main model plus `mtp_depth` MTP modules of style `mtp_style` (docs/design.md, "The model").

    Emb and OutHead are shared by every depth. With mtp_depth = 0 this is a plain GPT, and its
    weights equal the trunk of any D > 0 model built with the same init_seed.
    """

    def __init__(self, config: MTPConfig):
        super().__init__()
        cfg = self.config = config
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)          # FinalNorm
        self.out_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.out_head.weight = self.embed.weight
        self.mtp = nn.ModuleList(MTP_MODULES[cfg.mtp_style](cfg) for _ in range(cfg.mtp_depth))
        self.drop = nn.Dropout(cfg.dropout)
        self.rope = Rotary(cfg.d_model // cfg.n_heads, cfg.max_seq_len, cfg.rope_theta)
        self._init_weights()

    # -- initialisation: trunk and each module from their own generator, so D never changes the trunk
    def _init_weights(self) -> None:
        cfg = self.config
        residual_std = 0.02 / math.sqrt(2 * cfg.n_layers)              # GPT-2's scaled residual init
        trunk = [self.embed, self.blocks, self.norm] + ([] if cfg.tie_embeddings else [self.out_head])
        parts = [(trunk, cfg.init_seed)] + [([m], cfg.init_seed + 7919 * k) for k, m in enumerate(self.mtp, 1)]
        for modules, seed in parts:
            g = torch.Generator().manual_seed(seed)
            for module in modules:
                for name, p in module.named_parameters():
                    if p.dim() == 1:
                        continue                                            # RMSNorm gains start at 1
                    if isinstance(module, LinearMTP) and name == "proj.weight":
                        nn.init.zeros_(p)
                    elif name.endswith(("attn.proj.weight", "mlp.w2.weight")):
                        nn.init.normal_(p, 0.0, residual_std, generator=g)
                    else:
                        nn.init.normal_(p, 0.0, 0.02, generator=g)

    # -- the pieces, each one equation ------------------------------------------------------------
    def trunk(self, input_ids: torch.Tensor, caches: list[KVCache] | None = None,
              positions: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """h^0 = FinalNorm(Trunk(Emb(t_1..t_T))). (B, T) -> (B, T, d).
        positions / mask: tree decoding only (CausalSelfAttention.forward)."""
        x = self.drop(self.embed(input_ids))
        for j, block in enumerate(self.blocks):
            x = block(x, self.rope, None if caches is None else caches[j], positions, mask)
        return self.norm(x)

    def mtp_hidden(self, k: int, h_prev: torch.Tensor, tokens: torch.Tensor,
                   cache: KVCache | None = None, positions: torch.Tensor | None = None,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
        """h^k from module k (k = 1..D), eqs. 21-22.

        h_prev: h^{k-1} for `sequential`, h^0 for `parallel` / `linear`, at positions i;
        tokens: t_{i+k} at the same positions (read by `sequential` only). (B, t, d) -> (B, t, d).
        positions / mask: tree decoding only (CausalSelfAttention.forward).
        """
        module = self.mtp[k - 1]
        emb = self.embed(tokens) if isinstance(module, SequentialMTP) else None
        return module(h_prev, emb, self.rope, cache, positions, mask)

    def head_logits(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """P^k = OutHead(Norm_k(h^k)) (eq. 23); depth 0 reads h^0, already final-normed. (B, t, V)."""
        return self.out_head(h if k == 0 else self.mtp[k - 1].norm(h))

    def forward(self, input_ids: torch.Tensor) -> MTPOutput:
        """All depths at once: logits[k] and hidden[k] cover positions i = 1..T-k."""
        self.check_input(input_ids)
        T = input_ids.shape[1]
        hidden = [self.trunk(input_ids)]                                # h^0: (B, T, d)
        for k in range(1, self.config.mtp_depth + 1):
            h_prev = hidden[k - 1] if self.config.mtp_style == "sequential" else hidden[0]
            hidden.append(self.mtp_hidden(k, h_prev[:, :T - k], depth_inputs(input_ids, k)))  # (B, T-k, d)
        return MTPOutput([self.head_logits(k, h) for k, h in enumerate(hidden)], hidden)

    def check_input(self, input_ids: torch.Tensor) -> None:
        """ValueError unless input_ids is a (batch, T) int64 / int32 tensor on the model's device, with
        D + 1 <= T <= max_seq_len and every id in [0, vocab_size)."""
        cfg = self.config
        check_token_ids("input_ids", input_ids, 2, "(batch, T)", device=next(self.parameters()).device)
        T = input_ids.shape[1]
        if T > cfg.max_seq_len:
            raise ValueError(f"input_ids: sequence length T={T} exceeds max_seq_len={cfg.max_seq_len}")
        try:
            check_length(T, cfg.mtp_depth)
        except ValueError as err:
            raise ValueError(f"input_ids: {err}") from None
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= cfg.vocab_size):
            raise ValueError(f"input_ids: token ids must lie in [0, {cfg.vocab_size}); got min "
                             f"{int(input_ids.min())}, max {int(input_ids.max())}")

    def new_caches(self, batch: int = 1) -> tuple[list[KVCache], list[KVCache]]:
        """Empty KV caches for decoding: one per trunk block, one per MTP module with a block."""
        cfg, p = self.config, next(self.parameters())
        make = lambda: KVCache(batch, cfg.n_heads, cfg.d_model // cfg.n_heads, cfg.max_seq_len, p.device, p.dtype)
        return [make() for _ in self.blocks], [make() if hasattr(m, "block") else None for m in self.mtp]

    def param_counts(self) -> dict[str, int]:
        """Parameters per part: shared embedding/head, trunk, each MTP module, and the total."""
        n = lambda m: sum(p.numel() for p in m.parameters())
        counts = {"embedding": n(self.embed),
                  "output_head": 0 if self.config.tie_embeddings else n(self.out_head),
                  "trunk": n(self.blocks) + n(self.norm)}
        counts.update({f"mtp_{k}": n(m) for k, m in enumerate(self.mtp, 1)})
        counts["total"] = sum(p.numel() for p in self.parameters())  # tied weights counted once
        return counts
