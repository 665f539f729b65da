"""generate: KV-cached decoding == full forwards, sampling settings, bad input and the context limit
(the same checks for speculative_generate, which must behave alike)."""
import warnings

import pytest
import torch

from mtp_edu.decoding import ContextLimitWarning, generate, speculative_generate, target_probs

from conftest import tiny_model

V = 37


def full_forward_generate(model, prompt, n, pick):
    """The slow reference: a full forward over the whole sequence for every new token, no cache."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(pick(model(torch.tensor([ids])).logits[0][0, -1].detach()))
    return ids[len(prompt):]


def test_kv_cached_greedy_equals_argmax_of_full_forwards():
    model = tiny_model(mtp_depth=0)
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 15):
        prompt = torch.randint(0, V, (n,), generator=g).tolist()
        greedy = full_forward_generate(model, prompt, 20, lambda logits: int(logits.argmax()))
        assert generate(model, prompt, 20) == greedy


def test_kv_cached_sampling_equals_sampling_full_forwards():
    """Same generator stream, same distribution per token -> the very same tokens."""
    model = tiny_model()
    settings = dict(temperature=0.8, top_k=10, top_p=0.9)
    g = torch.Generator().manual_seed(4)
    pick = lambda logits: int(torch.multinomial(target_probs(logits, **settings), 1, generator=g))
    want = full_forward_generate(model, [3, 1, 4, 1, 5], 25, pick)
    assert generate(model, [3, 1, 4, 1, 5], 25, seed=4, **settings) == want


def test_prompt_as_tensor_and_list_agree():
    model = tiny_model()
    assert generate(model, torch.tensor([1, 2, 3]), 10) == generate(model, [1, 2, 3], 10)
    assert speculative_generate(model, torch.tensor([1, 2, 3]), 10)[0] == generate(model, [1, 2, 3], 10)


def test_seeds_repeat_and_differ():
    model = tiny_model()
    a = generate(model, [1, 2, 3], 30, temperature=1.0, seed=1)
    assert a == generate(model, [1, 2, 3], 30, temperature=1.0, seed=1)
    assert a != generate(model, [1, 2, 3], 30, temperature=1.0, seed=2)
    assert generate(model, [1, 2, 3], 30, temperature=1.0, top_k=1) == generate(model, [1, 2, 3], 30)


def test_target_probs():
    logits = torch.tensor([2.0, 1.0, 0.5, -1.0, 0.0], dtype=torch.float64)
    p = target_probs(logits, 1.0)
    torch.testing.assert_close(p, logits.softmax(-1))
    assert target_probs(logits, 0.0).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    torch.testing.assert_close(target_probs(logits, 0.5), (logits / 0.5).softmax(-1))
    top2 = target_probs(logits, 1.0, top_k=2)
    assert (top2 > 0).tolist() == [True, True, False, False, False]
    torch.testing.assert_close(top2.sum(), torch.tensor(1.0, dtype=torch.float64))
    # nucleus: the smallest set of most likely tokens whose mass reaches top_p
    sorted_p = p.sort(descending=True).values
    assert sorted_p[0] < 0.6 < sorted_p[:2].sum()
    assert ((target_probs(logits, 1.0, top_p=0.6) > 0).sum()) == 2
    assert ((target_probs(logits, 1.0, top_p=float(sorted_p[0]) / 2) > 0).sum()) == 1
    assert ((target_probs(logits, 1.0, top_p=1.0) > 0).sum()) == 5


def test_model_mode_is_restored_and_dropout_is_off():
    model = tiny_model(dropout=0.5)
    reference = generate(model, [1, 2, 3], 15)
    model.train()
    assert generate(model, [1, 2, 3], 15) == reference          # dropout switched off while decoding
    assert speculative_generate(model, [1, 2, 3], 15)[0] == reference
    assert model.training


# ---- bad input --------------------------------------------------------------------------------
BOTH = [generate, lambda m, p, n, **kw: speculative_generate(m, p, n, **kw)[0]]


@pytest.mark.parametrize("decode", BOTH, ids=["generate", "speculative"])
@pytest.mark.parametrize("prompt,n,kwargs,message", [
    ([], 5, {}, "empty"),
    (list(range(30)) * 2, 5, {}, "max_seq_len=48"),
    ([1, 2], -1, {}, "max_new_tokens=-1"),
    ([1, V], 5, {}, r"\[0, 37\)"),
    ([1, -2], 5, {}, r"\[0, 37\)"),
    ([1.0, 2.0], 5, {}, "list of ints"),
    (torch.zeros(1, 3, dtype=torch.long), 5, {}, "1-d"),
    ([1, 2], 5, {"temperature": -0.1}, "temperature"),
    ([1, 2], 5, {"top_k": 0}, "top_k"),
    ([1, 2], 5, {"top_p": 0.0}, "top_p"),
    ([1, 2], 5, {"top_p": 1.5}, "top_p"),
])
def test_bad_input_is_refused_clearly(decode, prompt, n, kwargs, message):
    model = tiny_model()
    if decode is not generate and "temperature" in kwargs:
        kwargs = dict(kwargs, rule="sample")
    with pytest.raises(ValueError, match=message):
        decode(model, prompt, n, **kwargs)


@pytest.mark.parametrize("decode", BOTH, ids=["generate", "speculative"])
@pytest.mark.parametrize("n,kwargs,message", [
    (2.5, {}, "max_new_tokens=2.5"), (True, {}, "max_new_tokens=True"), (5, {"top_k": 2.0}, "top_k=2.0"),
    (5, {"top_p": "all"}, "top_p='all'"),
])
def test_a_wrong_type_is_a_type_error(decode, n, kwargs, message):
    with pytest.raises(TypeError, match=message):
        decode(tiny_model(), [1, 2], n, **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    ({"rule": "medusa"}, "rule='medusa' is not allowed"),
    ({"draft_depth": 4}, "exceeds the model's D=3"),
    ({"draft_depth": -1}, "draft_depth=-1"),
    ({"rule": "greedy", "temperature": 0.7}, "rule='sample'"),
    ({"rule": "threshold", "threshold": 1.0}, "threshold=1.0"),
    ({"rule": "threshold", "threshold": -0.1}, "threshold=-0.1"),
    ({"drafter": "eagle"}, "drafter='eagle'"),
    ({"drafter": object()}, "check_depth"),
])
def test_speculative_options_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        speculative_generate(tiny_model(), [1, 2, 3], 5, **kwargs)


def test_depth_beyond_d_only_as_a_labelled_experiment():
    with pytest.raises(ValueError, match="sequential"):
        speculative_generate(tiny_model(mtp_style="parallel"), [1, 2], 5, draft_depth=4,
                             experimental_reuse_modules=True)
    tokens, trace = speculative_generate(tiny_model(), [1, 2], 12, draft_depth=5, experimental_reuse_modules=True)
    assert tokens == generate(tiny_model(), [1, 2], 12) and trace.draft_depth == 5


def test_a_model_without_mtp_modules_needs_another_drafter():
    model = tiny_model(mtp_depth=0)
    with pytest.raises(ValueError, match="no MTP modules"):
        speculative_generate(model, [1, 2, 3], 5)
    tokens, _ = speculative_generate(model, [1, 2, 3], 20, drafter="prompt_lookup")
    assert tokens == generate(model, [1, 2, 3], 20)


def test_zero_new_tokens():
    model = tiny_model()
    assert generate(model, [1, 2], 0) == []
    tokens, trace = speculative_generate(model, [1, 2], 0)
    assert tokens == [] and trace.steps == [] and trace.first_token is None


# ---- the context limit: both functions stop at the same place, with the same warning -----------
@pytest.mark.parametrize("prompt_len", [40, 47, 48])
def test_context_limit_is_handled_alike(prompt_len):
    model = tiny_model()                                    # max_seq_len = 48
    prompt = torch.randint(0, V, (prompt_len,), generator=torch.Generator().manual_seed(prompt_len)).tolist()
    with pytest.warns(ContextLimitWarning, match="max_seq_len=48"):
        plain = generate(model, prompt, 20)
    with pytest.warns(ContextLimitWarning, match="max_seq_len=48"):
        spec, trace = speculative_generate(model, prompt, 20)
    assert len(plain) == 48 - prompt_len and spec == plain
    with pytest.warns(ContextLimitWarning):
        sampled, _ = speculative_generate(model, prompt, 20, rule="sample", temperature=1.0)
    assert len(sampled) == 48 - prompt_len


def test_no_warning_when_it_fits():
    model = tiny_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(generate(model, [1] * 28, 20)) == 20
        assert speculative_generate(model, [1] * 28, 20)[0] == generate(model, [1] * 28, 20)
