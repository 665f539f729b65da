import pytest

from mtp_edu import MTPConfig

BAD_VALUE = [
    ("vocab_size", 1), ("vocab_size", 0), ("d_model", 0), ("d_model", 30), ("n_layers", 0), ("n_heads", 0),
    ("d_model", 130), ("max_seq_len", 0), ("mtp_depth", -1), ("mtp_style", "mixture"), ("mtp_loss_scale", -0.1),
    ("mtp_loss_scale", float("inf")), ("mtp_loss_scale", float("nan")), ("dropout", 1.0), ("dropout", -0.1),
    ("d_ff", 0), ("rope_theta", 0), ("rope_theta", float("inf")), ("norm_eps", 0.0), ("norm_eps", float("inf")),
    ("init_seed", 2**70), ("init_seed", 2**64), ("init_seed", -1), ("dropout", float("nan")),
]
BAD_TYPE = [
    ("vocab_size", 2.5), ("vocab_size", True), ("mtp_depth", 1.0), ("mtp_loss_scale", "0.3"), ("tie_embeddings", 1),
    ("dropout", False), ("d_ff", True), ("rope_theta", True), ("init_seed", 1.5),
]


@pytest.mark.parametrize("error,field,value", [(ValueError, *case) for case in BAD_VALUE] +
                                              [(TypeError, *case) for case in BAD_TYPE])
def test_bad_value_names_field_value_and_rule(error, field, value):
    with pytest.raises(error) as err:
        MTPConfig(**{field: value})
    text = str(err.value)
    assert f"MTPConfig.{field}" in text and repr(value) in text
    assert "must" in text          # says what is allowed


def test_head_size_must_be_even_for_rope():
    with pytest.raises(ValueError, match="RoPE"):
        MTPConfig(d_model=12, n_heads=4)


def test_context_must_hold_every_depth():
    with pytest.raises(ValueError, match="mtp_depth"):
        MTPConfig(max_seq_len=4, mtp_depth=3)
    MTPConfig(max_seq_len=5, mtp_depth=3)


def test_round_trip_and_unknown_keys():
    cfg = MTPConfig(mtp_depth=2, mtp_style="parallel")
    assert MTPConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown MTPConfig field"):
        MTPConfig.from_dict({**cfg.to_dict(), "mtp_num_layers": 2})


def test_ff_width_rule():
    assert MTPConfig(d_model=128).ff_width == 352          # 8/3 * 128 = 341.3, rounded up to 32
    assert MTPConfig(d_model=128, d_ff=100).ff_width == 100


def test_init_seed_is_bounded_by_what_torch_takes_for_every_module():
    """Module k is seeded with init_seed + 7919 k; torch.Generator.manual_seed takes [0, 2**64)."""
    import torch

    from mtp_edu.config import MODULE_SEED_STRIDE
    top = 2**64 - 1 - 3 * MODULE_SEED_STRIDE
    cfg = MTPConfig(vocab_size=16, d_model=8, n_layers=1, n_heads=2, max_seq_len=8, mtp_depth=3, init_seed=top)
    from mtp_edu import MTPModel
    MTPModel(cfg)                                          # builds: every module's seed fits
    with pytest.raises(ValueError, match=rf"MTPConfig.init_seed={top + 1} is not allowed: .*<= {top} "
                                         r"\(a torch seed is < 2\*\*64, and MTP module k uses init_seed \+ 7919"):
        cfg.replace(init_seed=top + 1)
    with pytest.raises(ValueError):                        # what the bound guards against
        torch.Generator().manual_seed(2**64)


def test_train_seed_is_a_torch_seed():
    from mtp_edu.config import TrainConfig
    assert TrainConfig(seed=2**64 - 1).seed == 2**64 - 1
    for bad in (-1, 2**64, 2**70):
        with pytest.raises(ValueError, match="TrainConfig.seed"):
            TrainConfig(seed=bad)
