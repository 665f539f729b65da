"""Our parameter names beside those of the released DeepSeek-V3 weights and of Megatron-core.

DeepSeek-V3 stores its one MTP module as the layer after the trunk (`model.layers.61.*`, the trunk being
layers 0..60) with `enorm`, `hnorm`, `eh_proj`, a decoder layer and `shared_head.{norm,head}`; its
config calls D `num_nextn_predict_layers`. Megatron-core keeps the modules under
`mtp.layers.{k-1}.*` with `enorm`, `hnorm`, `eh_proj`, `transformer_layer`, `final_layernorm`; its
flags are `--mtp-num-layers` and `--mtp-loss-scaling-factor`. The inner layer's name depends on the
version: older versions name the module `transformer_layer`, as Megatron-core's distributed checkpoints
still do; recent versions name it `mtp_model_layer` and map it back to `transformer_layer` when they save.
The names inside a Transformer layer are those of Megatron-core's Transformer Engine layer spec, which
fuses the norms before attention and before a dense MLP into the next linear layer. Where a part has no
one-to-one counterpart (DeepSeek-V3 attends with MLA and uses MoE feed-forwards in most layers; Megatron's
fused norms) the entry says so instead of inventing a name. DeepSeek-V3's MTP layer is
an MoE layer like every trunk layer after the first three, so our module's dense SwiGLU matrices map
onto each routed expert's and the shared expert's, with a router (`mlp.gate`) choosing the experts.
"""
from __future__ import annotations

import re

_BLOCK = {  # our block sub-name -> (DeepSeek-V3 decoder-layer name, Megatron-core transformer-layer name)
    "attn_norm.weight": ("input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight"),
    "attn.qkv.weight": ("self_attn.* (MLA: q_a_proj, kv_a_proj_with_mqa, ...; ours is plain multi-head)",
                        "self_attention.linear_qkv.weight"),
    "attn.proj.weight": ("self_attn.o_proj.weight", "self_attention.linear_proj.weight"),
    "mlp_norm.weight": ("post_attention_layernorm.weight", "mlp.linear_fc1.layer_norm_weight"),
    "mlp.w1.weight": ("mlp.gate_proj.weight (dense layers; MoE experts elsewhere)",
                      "mlp.linear_fc1.weight (gate half)"),
    "mlp.w3.weight": ("mlp.up_proj.weight (dense layers; MoE experts elsewhere)", "mlp.linear_fc1.weight (up half)"),
    "mlp.w2.weight": ("mlp.down_proj.weight (dense layers; MoE experts elsewhere)", "mlp.linear_fc2.weight"),
}


def real_system_names(name: str, n_layers: int) -> tuple[str, str]:
    """(DeepSeek-V3 checkpoint name, Megatron-core name) of one of our sequential model's parameters.

    n_layers is our trunk depth L: DeepSeek-V3 numbers MTP module k as layer L + k - 1."""
    if name == "embed.weight":
        return ("model.embed_tokens.weight (a copy also at model.layers.{L}.embed_tokens.weight)",
                "embedding.word_embeddings.weight")
    if name == "out_head.weight":
        return ("lm_head.weight (a copy also at model.layers.{L}.shared_head.head.weight)", "output_layer.weight")
    if name == "norm.weight":
        return "model.norm.weight", "decoder.final_layernorm.weight"
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
    if m and m.group(2) in _BLOCK:
        ds, mg = _BLOCK[m.group(2)]
        return f"model.layers.{m.group(1)}.{ds}", f"decoder.layers.{m.group(1)}.{mg}"
    m = re.fullmatch(r"mtp\.(\d+)\.(.+)", name)
    if m:
        k0, rest = int(m.group(1)), m.group(2)
        ds_prefix, mg_prefix = f"model.layers.{n_layers + k0}.", f"mtp.layers.{k0}."
        if rest in ("enorm.weight", "hnorm.weight", "eh_proj.weight"):
            return ds_prefix + rest, mg_prefix + rest
        if rest == "norm.weight":
            return ds_prefix + "shared_head.norm.weight", mg_prefix + "final_layernorm.weight"
        if rest.startswith("block.") and rest[6:] in _BLOCK:
            ds, mg = _BLOCK[rest[6:]]
            if rest.startswith("block.mlp."):                                    # the MTP layer is MoE
                proj = ds.split(".weight")[0].removeprefix("mlp.")
                ds = f"mlp.experts.{{e}}.{proj}.weight + mlp.shared_experts.{proj}.weight (MoE; router mlp.gate.weight)"
            return ds_prefix + ds, mg_prefix + "transformer_layer." + mg
    raise ValueError(f"no real-system name for parameter {name!r} (only the sequential style has one)")


def name_table(model) -> list[tuple[str, tuple[int, ...], str, str]]:
    """(our name, shape, DeepSeek-V3 name, Megatron-core name) for every parameter of a sequential model."""
    if model.config.mtp_style != "sequential":
        raise ValueError(f"mtp_style={model.config.mtp_style!r}: only 'sequential' (DeepSeek-V3) modules "
                         "have counterparts in the DeepSeek-V3 weights and Megatron-core")
    L = model.config.n_layers
    return [(n, tuple(p.shape), *(s.replace("{L}", str(L)) for s in real_system_names(n, L)))
            for n, p in model.named_parameters()]
