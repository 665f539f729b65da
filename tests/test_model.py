"""The model: shapes, causality per depth and style, D = 0 == plain GPT, clear input errors."""
import pytest
import torch

from mtp_edu import MTPModel

from conftest import tiny_config, tiny_model

V, T = 37, 14


def random_ids(seed, shape=(2, T)):
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


def test_output_layout(style):
    model = tiny_model(mtp_style=style)
    out = model(random_ids(0))
    assert len(out.logits) == len(out.hidden) == 4
    for k in range(4):
        assert out.logits[k].shape == (2, T - k, V)
        assert out.hidden[k].shape == (2, T - k, 32)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_causality_future_tokens_never_matter(style, k):
    """Depth k at position i sees t_1..t_{i+k} (sequential) and nothing later, in every style."""
    model = tiny_model(mtp_style=style)
    ids = random_ids(1)
    base = model(ids).logits[k]
    for i in range(1, T - k + 1):                  # 1-indexed position
        changed = ids.clone()
        changed[:, i + k:] = (changed[:, i + k:] + 1 + torch.arange(T - i - k)) % V   # t_{i+k+1} .. t_T
        logits = model(changed).logits[k]
        torch.testing.assert_close(logits[:, :i], base[:, :i], rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_token_t_i_plus_k_matters_only_for_sequential(style, k):
    """Sequential module k embeds t_{i+k}; parallel and linear heads read h^0_i alone."""
    model = tiny_model(mtp_style=style)
    ids = random_ids(2)
    i = 5
    changed = ids.clone()
    changed[:, i + k - 1] = (changed[:, i + k - 1] + 7) % V   # t_{i+k} (0-indexed i+k-1)
    delta = (model(changed).logits[k][:, i - 1] - model(ids).logits[k][:, i - 1]).abs().max()
    if style == "sequential":
        assert delta > 1e-6
    else:
        assert delta == 0


def test_d0_is_the_plain_gpt_inside_every_style(style):
    plain = MTPModel(tiny_config(mtp_depth=0)).double().eval()
    mtp = MTPModel(tiny_config(mtp_depth=3, mtp_style=style)).double().eval()
    trunk_keys = plain.state_dict().keys()
    for key in trunk_keys:                          # same seed -> same trunk weights, whatever D is
        torch.testing.assert_close(mtp.state_dict()[key], plain.state_dict()[key], rtol=0, atol=0)
    ids = random_ids(3)
    torch.testing.assert_close(mtp(ids).logits[0], plain(ids).logits[0], rtol=0, atol=0)
    main_before = mtp(ids).logits[0]
    mtp.mtp = torch.nn.ModuleList()                 # discard the MTP modules
    mtp.config = mtp.config.replace(mtp_depth=0)
    out = mtp(ids)
    assert len(out.logits) == 1
    torch.testing.assert_close(out.logits[0], main_before, rtol=0, atol=0)


def test_other_seed_other_weights():
    a, b = MTPModel(tiny_config(init_seed=0)), MTPModel(tiny_config(init_seed=1))
    assert not torch.equal(a.embed.weight, b.embed.weight)
    assert not torch.equal(a.mtp[0].block.attn.qkv.weight, a.mtp[1].block.attn.qkv.weight)


def test_param_counts(style):
    model = MTPModel(tiny_config(mtp_style=style))
    counts = model.param_counts()
    assert counts["total"] == sum(v for key, v in counts.items() if key != "total")
    assert counts["output_head"] == 0                       # tied to the embedding
    untied = MTPModel(tiny_config(mtp_style=style, tie_embeddings=False)).param_counts()
    assert untied["output_head"] == V * 32 and untied["total"] == counts["total"] + V * 32
    d, ff = 32, tiny_config().ff_width
    block = 4 * d * d + 3 * d * ff + 2 * d
    expected = {"sequential": 2 * d * d + block + 3 * d, "parallel": block + d, "linear": d * d + d}[style]
    assert counts["mtp_1"] == expected
    assert counts["trunk"] == 2 * block + d


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(5, dtype=torch.long), "2-d integer"),
    (torch.zeros(1, 5), "2-d integer"),
    ([[1, 2, 3, 4, 5]], "2-d integer"),
    (torch.full((1, 6), V), r"\[0, 37\)"),
    (torch.full((1, 6), -1), r"\[0, 37\)"),
    (torch.zeros(1, 49, dtype=torch.long), "max_seq_len=48"),
    (torch.zeros(1, 3, dtype=torch.long), "too short for mtp_depth=3"),
    # issue 11: these reached torch's own error
    (torch.zeros(1, 5, dtype=torch.uint8), r"input_ids must be a 2-d integer tensor .* got a 2-d torch.uint8"),
    (torch.zeros(1, 5, dtype=torch.int16), r"int64 or int32; got a 2-d torch.int16 tensor"),
    (torch.zeros(1, 5, dtype=torch.bool), r"int64 or int32; got a 2-d torch.bool tensor"),
    (torch.zeros(1, 5, dtype=torch.complex64), r"int64 or int32; got a 2-d torch.complex64 tensor"),
    (torch.zeros(1, 5, dtype=torch.long, device="meta"), r"input_ids is on the meta device, which holds no values"),
])
def test_bad_input_is_refused_clearly(bad, match):
    with pytest.raises(ValueError, match=match):
        tiny_model()(bad)


def test_int32_ids_give_exactly_the_int64_output():
    model, ids = tiny_model(), random_ids(15)
    want, got = model(ids), model(ids.int())
    assert all(torch.equal(a, b) for a, b in zip(want.logits, got.logits))


def test_kv_cache_matches_full_forward(style):
    """Feeding the trunk in pieces through the KV cache gives the full forward's states."""
    model = tiny_model(mtp_style=style)
    ids = random_ids(4, (1, T))
    full = model.trunk(ids)
    caches, _ = model.new_caches()
    parts = [model.trunk(ids[:, a:b], caches) for a, b in [(0, 5), (5, 6), (6, 11), (11, T)]]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-12)
    for c in caches:
        c.rollback(6)                               # drop positions 7.. and feed them again
        c.k[:, :, 6:] = float("nan")                # stale entries must never be read
        c.v[:, :, 6:] = float("nan")
    again = model.trunk(ids[:, 6:], caches)
    torch.testing.assert_close(again, full[:, 6:], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="roll back"):
        caches[0].rollback(T + 1)
