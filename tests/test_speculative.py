"""Self-speculative decoding: invariants 5-7 of docs/design.md ("Invariants the tests prove").

5. greedy speculative output == greedy `generate` (float64, many prompts, every style and depth);
6. speculative sampling reproduces the exact target distribution (enumerated on a tiny vocabulary);
7. cached drafts == drafts from a full forward; no stale (rolled-back) entry is ever read.

Random untrained models reject almost every sequential draft, so the acceptance and rollback paths
are also run on tiny models trained for a few seconds on a "words" language (deterministic inside a
word, random between words), where drafts are often, but not always, accepted.
"""
import pytest
import torch

from mtp_edu import MTPConfig, MTPModel, mtp_loss
from mtp_edu.decoding import divergence, generate, speculative_generate, target_probs
from mtp_edu.drafting import DecodeState, MTPDrafter, PromptLookupDrafter
from mtp_edu.model import KVCache

from conftest import tiny_model

D = 3


def random_prompts(count, vocab, seed, min_len=D + 1, max_len=12):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (count,), generator=g).tolist()
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


# ---- tiny trained models: drafts are often accepted ---------------------------------------------
WORDS = [[1, 2, 3, 4], [5, 6, 7], [8, 9, 2, 6, 3], [4, 8, 1]]     # token 0 separates words
WORDS_V = 10


def words_sequence(n, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < n:
        out += WORDS[int(torch.randint(0, len(WORDS), (1,), generator=g))] + [0]
    return torch.tensor(out[:n])


_TRAINED = {}


def trained_model(style):
    """A D = 3 model trained 60 steps on the words language (float32 training, float64 after):
    enough for most drafts to be accepted, not enough for all of them."""
    if style not in _TRAINED:
        torch.manual_seed(0)
        cfg = MTPConfig(vocab_size=WORDS_V, d_model=32, n_layers=2, n_heads=4, max_seq_len=64,
                        mtp_depth=D, mtp_style=style)
        model = MTPModel(cfg)
        data = words_sequence(20_000, seed=1)
        opt = torch.optim.Adam(model.parameters(), lr=3e-2)
        g = torch.Generator().manual_seed(2)
        for _ in range(60):
            starts = torch.randint(0, len(data) - 33, (8,), generator=g)
            chunk = torch.stack([data[s:s + 33] for s in starts])
            loss = mtp_loss(model(chunk[:, :-1]), chunk[:, 1:], mtp_loss_scale=1.0).total
            opt.zero_grad()
            loss.backward()
            opt.step()
        _TRAINED[style] = model.double().eval()
    return _TRAINED[style]


def words_prompts(count, seed):
    data = words_sequence(2_000, seed=seed)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        s, n = torch.randint(0, 1_900, (2,), generator=g).tolist()
        out.append(data[s:s + 4 + n % 10].tolist())
    return out


# ---- 5. greedy speculative == greedy generate ----------------------------------------------------
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_greedy_speculative_equals_greedy_random_models(style, depth):
    model = tiny_model(mtp_style=style, max_seq_len=40)
    for i, prompt in enumerate(random_prompts(12, 37, seed=depth)):
        want = generate(model, prompt, 20)
        got, trace = speculative_generate(model, prompt, 20, draft_depth=depth)
        assert got == want, (style, depth, i)
        assert trace.tokens == got and len(got) == 20


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_greedy_speculative_equals_greedy_trained_models(style, depth):
    model = trained_model(style)
    histogram = [0] * (depth + 1)
    for prompt in words_prompts(15, seed=depth) + random_prompts(5, WORDS_V, seed=depth):
        want = generate(model, prompt, 30)
        got, trace = speculative_generate(model, prompt, 30, draft_depth=depth)
        assert got == want
        for s in trace.steps:
            if len(s.drafted) == depth:
                histogram[s.accepted] += 1
    # the paths that matter were really taken: full acceptance, and rejection at the first draft
    assert histogram[depth] > 0 and histogram[0] > 0, histogram
    if depth == 3:
        assert sum(histogram[1:depth]) > 0, histogram      # partial acceptance: modules roll back
    print(f"{style} depth {depth}: accepted-count histogram {histogram}")


def test_sample_rule_at_temperature_zero_is_greedy(style):
    model = trained_model(style)
    for prompt in words_prompts(5, seed=7):
        got, _ = speculative_generate(model, prompt, 25, rule="sample", temperature=0.0, seed=3)
        assert got == generate(model, prompt, 25)


def test_greedy_agreement_in_float32_reported():
    """float32: a verify forward over several positions and a one-token forward may round apart, so
    a near-tie can flip an argmax (real engines report the same). We print the agreement rate;
    the assertion is only what must hold: every run agrees at least up to its first speculative step."""
    model = MTPModel(MTPConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_seq_len=96,
                               mtp_depth=D)).eval()
    same, prompts = 0, random_prompts(12, 256, seed=11, max_len=16)
    for prompt in prompts:
        want = generate(model, prompt, 30)
        got, trace = speculative_generate(model, prompt, 30)
        same += got == want
        assert got[0] == want[0]                    # the prefill forward is the same computation
    print(f"float32 greedy agreement: {same}/{len(prompts)} runs token-identical")
    assert same >= len(prompts) // 2


def test_dynamic_draft_length_is_lossless_and_saves_forwards(style):
    """min_draft_confidence stops drafting early: same output, fewer module forwards, and the
    modules that sat a step out catch up with correct caches (drafts == full-forward drafts)."""
    model = trained_model(style)
    spent = {0.0: 0, 0.6: 0}
    for prompt in words_prompts(4, seed=29) + random_prompts(3, WORDS_V, seed=29):
        want = generate(model, prompt, 30)
        for confidence in spent:
            got, trace = speculative_generate(model, prompt, 30, min_draft_confidence=confidence)
            assert got == want
            check_drafts_against_full_forward(model, prompt, trace)
            spent[confidence] += sum(s.draft_forwards for s in trace.steps)
    assert spent[0.6] < spent[0.0]


def test_prompt_lookup_drafter_is_lossless_and_drafts():
    model = trained_model("sequential")
    for prompt in words_prompts(6, seed=5):
        got, trace = speculative_generate(model, prompt, 30, drafter="prompt_lookup", draft_depth=4)
        assert got == generate(model, prompt, 30)
        assert trace.tau() > 1.2                    # the words repeat: copying them is often right
        assert all(s.draft_forwards == 0 and s.q == [1.0] * len(s.drafted) for s in trace.steps)


def test_prompt_lookup_copies_the_latest_match():
    tokens = torch.tensor([5, 1, 2, 7, 1, 2, 8, 9, 1, 2, 0, 0, 0])
    state = DecodeState(tokens.clone(), torch.empty(0), n=9)        # accepted ..., 9, 1; pending 2
    count, q = PromptLookupDrafter(max_ngram=2).draft(state, 3, pick=None)
    assert (count, q) == (3, None) and state.tokens[10:13].tolist() == [8, 9, 1]   # after the 2nd "1 2"
    state = DecodeState(torch.tensor([3, 4, 6, 0, 0]), torch.empty(0), n=2)
    assert PromptLookupDrafter().draft(state, 3, pick=None) == (0, None)           # 6 never seen


def test_experimental_reuse_beyond_depth_is_lossless():
    model = trained_model("sequential")
    for prompt in words_prompts(4, seed=9):
        got, trace = speculative_generate(model, prompt, 30, draft_depth=D + 2, experimental_reuse_modules=True)
        assert got == generate(model, prompt, 30)
        assert max(len(s.drafted) for s in trace.steps) == D + 2


# ---- 7. cached drafts == full-forward drafts; no stale entries ----------------------------------
def full_forward_drafts(model, context, m):
    """d_k = argmax of depth k's logits at the frontier, from model(x_1..x_{n+1}, d_1..d_{k-1}),
    the training forward: no cache at all. Returns the drafts and their softmax probabilities."""
    drafts, q = [], []
    for k in range(1, m + 1):
        logits = model(torch.tensor([context + drafts])).logits[k][0, len(context) - 2]
        drafts.append(int(logits.argmax()))
        q.append(float(logits.detach().softmax(-1).max()))
    return drafts, q


def check_drafts_against_full_forward(model, prompt, trace):
    context = prompt + [trace.first_token]
    for step in trace.steps:
        drafts, q = full_forward_drafts(model, context, len(step.drafted))
        assert step.drafted == drafts
        torch.testing.assert_close(torch.tensor(step.q, dtype=torch.float64), torch.tensor(q, dtype=torch.float64))
        context += step.emitted


@pytest.mark.parametrize("trained", [False, True])
def test_cached_drafts_equal_full_forward_drafts(style, trained):
    model = trained_model(style) if trained else tiny_model(mtp_style=style)
    prompts = words_prompts(4, seed=13) if trained else random_prompts(4, 37, seed=13)
    for prompt in prompts:
        _, trace = speculative_generate(model, prompt, 24)
        check_drafts_against_full_forward(model, prompt, trace)


def test_stale_module_cache_would_be_caught():
    """The check above can fail: a drafter that never rolls its module caches back drafts differently."""
    class NoRollback(MTPDrafter):
        def rollback(self, state):
            pass
    model = trained_model("sequential")
    mismatches = 0
    for prompt in words_prompts(4, seed=13):
        _, trace = speculative_generate(model, prompt, 24, drafter=NoRollback())
        try:
            check_drafts_against_full_forward(model, prompt, trace)
        except AssertionError:
            mismatches += 1
    assert mismatches > 0


def test_rolled_back_entries_are_never_read(style, monkeypatch):
    """Poison everything past each rollback point (KV caches, hidden-state buffers, token buffer) with
    NaN / garbage: outputs and drafts stay exactly the same."""
    model = trained_model(style)
    prompts = words_prompts(4, seed=17)
    clean = [speculative_generate(model, p, 30) for p in prompts]

    rollback = KVCache.rollback
    def poisoned_rollback(self, length):
        rollback(self, length)
        self.k[:, :, length:] = float("nan")
        self.v[:, :, length:] = float("nan")
    drafter_rollback = MTPDrafter.rollback
    def poisoned_drafter_rollback(self, state):
        drafter_rollback(self, state)
        for h in self.inputs:
            h[:, state.n:] = float("nan")          # beyond the accepted tokens nothing is true
        state.tokens[state.n + 1:] = WORDS_V - 1   # drafts of the last step, and the unused tail
    monkeypatch.setattr(KVCache, "rollback", poisoned_rollback)
    monkeypatch.setattr(MTPDrafter, "rollback", poisoned_drafter_rollback)
    for prompt, (tokens, trace) in zip(prompts, clean):
        got, got_trace = speculative_generate(model, prompt, 30)
        assert got == tokens and got_trace.steps == trace.steps


# ---- 6. speculative sampling is lossless in distribution -----------------------------------------
def exact_joint(model, prompt, n_tokens, **sampling):
    """P(x_1..x_n) of `generate`'s sampling, enumerated: product of target_probs along each path."""
    V = model.config.vocab_size
    paths = {(): 1.0}
    for _ in range(n_tokens):
        longer = {}
        for path, prob in paths.items():
            logits = model(torch.tensor([prompt + list(path)])).logits[0][0, -1]
            p = target_probs(logits, **sampling)
            for t in range(V):
                longer[path + (t,)] = prob * float(p[t])
        paths = longer
    return paths


def chi_square_p_value(counts, probs, n):
    """Pearson's chi-square goodness of fit. Outcomes of probability 0 must never be drawn; outcomes
    expected fewer than 5 times are pooled into one cell (the usual validity rule of the test)."""
    assert set(counts) <= set(probs)
    cells, rare = [], [0, 0.0]
    for key, p in probs.items():
        observed = counts.get(key, 0)
        if p == 0:
            assert observed == 0, f"{key} has probability 0 but was drawn {observed} times"
        elif n * p < 5:
            rare[0] += observed
            rare[1] += p
        else:
            cells.append((observed, p))
    if rare[1] * n >= 5:
        cells.append(tuple(rare))
    stat = sum((o - n * p) ** 2 / (n * p) for o, p in cells)
    df = torch.tensor((len(cells) - 1) / 2, dtype=torch.float64)
    return float(torch.special.gammaincc(df, torch.tensor(stat / 2, dtype=torch.float64)))


ALPHA = 1e-3        # false-alarm rate of each test; the seeds are fixed, so each run is deterministic


def sampled_counts(model, prompt, n_tokens, n_samples, **kwargs):
    """Counts of the first n_tokens of n_tokens + 1 generated ones: with one more token to go, the
    first step drafts D = 2 tokens, so both modules' drafts are verified."""
    counts = {}
    for seed in range(n_samples):
        tokens, _ = speculative_generate(model, prompt, n_tokens + 1, seed=seed, **kwargs)
        key = tuple(tokens[:n_tokens])
        counts[key] = counts.get(key, 0) + 1
    return counts


def small_vocab_model(style, sharpen):
    """V = 4, D = 2; `sharpen` scales the tied embedding, hence the logits, away from uniform."""
    model = tiny_model(vocab_size=4, mtp_style=style, max_seq_len=16, mtp_depth=2).requires_grad_(False)
    model.embed.weight.mul_(sharpen)
    return model


@pytest.mark.parametrize("style,sharpen,sampling", [
    ("sequential", 2.0, dict(temperature=1.0)),
    ("parallel", 1.5, dict(temperature=0.7, top_k=3, top_p=0.9)),   # 37 of 64 outcomes impossible
])
def test_speculative_sampling_matches_the_exact_distribution(style, sharpen, sampling):
    model = small_vocab_model(style, sharpen)
    prompt, n, N = [1, 3, 0], 3, 1500
    probs = exact_joint(model, prompt, n, **sampling)
    counts = sampled_counts(model, prompt, n, N, rule="sample", **sampling)
    p_value = chi_square_p_value(counts, probs, N)
    print(f"{style} {sampling}: chi-square p-value {p_value:.3f} over {len(probs)} outcomes")
    assert p_value > ALPHA
    # and the drafts were both accepted and rejected along the way
    _, trace = speculative_generate(model, prompt, 13, rule="sample", seed=0, **sampling)
    assert 0 < trace.accepted_histogram()[0] < len(trace.steps)


def test_the_sampling_test_has_power():
    """Accepting every draft (threshold 0) samples from the drafter, not the target: rejected."""
    model = small_vocab_model("sequential", 2.0)
    prompt, n, N = [1, 3, 0], 3, 300
    probs = exact_joint(model, prompt, n, temperature=1.0)
    counts = sampled_counts(model, prompt, n, N, rule="threshold", threshold=0.0, temperature=1.0)
    assert chi_square_p_value(counts, probs, N) < ALPHA


def test_sampling_repeats_with_a_seed():
    model = trained_model("sequential")
    a = speculative_generate(model, [1, 2, 3, 4, 0], 30, rule="sample", temperature=1.0, seed=5)
    b = speculative_generate(model, [1, 2, 3, 4, 0], 30, rule="sample", temperature=1.0, seed=5)
    assert a[0] == b[0] and a[1].steps == b[1].steps


# ---- threshold rule, traces ---------------------------------------------------------------------
def test_threshold_rule_is_lossy_and_measured():
    model = tiny_model(mtp_style="sequential")
    results = []
    for prompt in random_prompts(10, 37, seed=19):
        want = generate(model, prompt, 30)
        got, trace = speculative_generate(model, prompt, 30, rule="threshold", threshold=0.02)
        assert trace.lossy and len(got) == 30
        results.append(divergence(got, want))
    assert any(r.first_difference is not None for r in results)     # a low threshold drifts
    for r in results:
        if r.first_difference is not None:
            assert 0 < r.fraction_differing <= 1
    same = divergence([1, 2, 3], [1, 2, 3])
    assert same.first_difference is None and same.fraction_differing == 0.0
    assert divergence([1, 2, 3, 4], [1, 2, 5, 4]).first_difference == 2


def test_trace_records_every_step():
    model = trained_model("sequential")
    prompt = words_prompts(1, seed=23)[0]
    tokens, trace = speculative_generate(model, prompt, 40)
    assert trace.prompt == prompt and trace.rule == "greedy" and trace.draft_depth == D and not trace.lossy
    assert trace.tokens == tokens
    assert trace.tau() == (len(tokens) - 1) / len(trace.steps)            # first token is the prefill's
    assert sum(trace.accepted_histogram()) == len(trace.steps)
    for s in trace.steps:
        assert s.main_forwards == 1 and s.draft_forwards == len(s.drafted)
        assert len(s.q) == len(s.p) == len(s.drafted)
        assert all(0 <= x <= 1 for x in s.p + s.q)
        # greedy: a kept draft is the main argmax; the correction differs from the rejected draft
        if s.extra_kind == "correction":
            assert s.extra_token != s.drafted[s.accepted]
    rates = trace.acceptance_per_depth()
    assert len(rates) == D and all(r is None or 0 <= r <= 1 for r in rates)
    assert 1 <= trace.expected_tokens() <= D + 1
