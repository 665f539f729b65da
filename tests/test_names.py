"""Every parameter of a sequential model has a DeepSeek-V3 and a Megatron-core name, one-to-one."""
import pytest

from mtp_edu import MTPConfig, MTPModel
from mtp_edu.names import name_table, real_system_names


def test_every_parameter_is_named_and_names_are_distinct():
    model = MTPModel(MTPConfig(n_layers=3, mtp_depth=2, tie_embeddings=False))
    rows = name_table(model)
    assert [r[0] for r in rows] == [n for n, _ in model.named_parameters()]
    for col in (2, 3):
        names = [r[col] for r in rows]
        assert len(set(names)) == len(names)


def test_module_k_is_the_layer_after_the_trunk():
    # DeepSeek-V3: 61 trunk layers (0..60), its MTP module is model.layers.61
    assert real_system_names("mtp.0.eh_proj.weight", 61) == ("model.layers.61.eh_proj.weight",
                                                             "mtp.layers.0.eh_proj.weight")
    assert real_system_names("mtp.1.norm.weight", 61) == ("model.layers.62.shared_head.norm.weight",
                                                          "mtp.layers.1.final_layernorm.weight")
    assert real_system_names("mtp.0.block.attn_norm.weight", 61)[0] == "model.layers.61.input_layernorm.weight"
    # the MTP layer is an MoE layer (as are trunk layers 3..60); trunk layers 0..2 are dense
    assert real_system_names("mtp.0.block.mlp.w1.weight", 61)[0] == (
        "model.layers.61.mlp.experts.{e}.gate_proj.weight + mlp.shared_experts.gate_proj.weight "
        "(MoE; router mlp.gate.weight)")
    assert real_system_names("blocks.0.mlp.w2.weight", 61)[0].startswith("model.layers.0.mlp.down_proj.weight")


def test_other_styles_are_refused_clearly():
    with pytest.raises(ValueError, match="only 'sequential'"):
        name_table(MTPModel(MTPConfig(mtp_style="parallel")))
    with pytest.raises(ValueError, match="no real-system name"):
        real_system_names("mtp.0.proj.weight", 4)
