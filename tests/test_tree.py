"""Tree drafting (mtp_edu.tree): the tree rows of docs/design.md's "Invariants the tests prove".

- mask and positions: a two-level tree in Medusa's format, checked against what Medusa's code derives
  from it, and every node's verified logits equal a plain causal forward over its path (float64);
- greedy tree output == greedy `generate` (float64; every style; widths, Medusa paths, dynamic; random and
  trained models); the chain (1, 1, 1) gives exactly `speculative_generate`'s trace;
- tree sampling reproduces the exact target distribution (enumerated on a tiny vocabulary, a statistical
  test with a fixed false-alarm rate), and a broken rule is caught;
- after every step the caches equal a fresh prefill of the accepted text, and entries past the kept
  path are never read;
- bad input gives a clear error.
"""
import pytest
import test_speculative as chain_tests  # its tiny trained models, prompts and chi-square test
import torch

from mtp_edu import tree_generate
from mtp_edu.decoding import generate, speculative_generate
from mtp_edu.model import KVCache
from mtp_edu.traces import TreeTrace
from mtp_edu.tree import DynamicTree, TreeDecoder, TreeSpec, tree_mask, verify_layout

from conftest import tiny_model

MEDUSA_TOY = [[0], [0, 0], [0, 1], [0, 2], [1], [1, 0], [1, 1], [1, 2]]   # a two-level tree, Medusa's format
SHAPES = [(1, 1, 1), (3, 2, 1), (2, 2), MEDUSA_TOY, DynamicTree(budget=6, top_k=3), DynamicTree(budget=1, top_k=1)]


# ---- the mask and the positions --------------------------------------------------------------------
def test_medusa_toy_tree_positions_mask_and_retrieve_indices():
    spec = TreeSpec.from_paths(MEDUSA_TOY)
    assert spec.position_ids() == [0, 1, 1, 2, 2, 2, 2, 2, 2]
    # derived the way Medusa's generate_medusa_buffers derives them: choices sorted by (length, value),
    # node i + 1 is choice i; the mask is the identity, the root column, and each choice's ancestors
    order = sorted(MEDUSA_TOY, key=lambda c: (len(c), c))
    assert spec.paths()[1:] == [tuple(c) for c in order]
    expected = torch.eye(9, dtype=torch.bool)
    expected[:, 0] = True
    for i, choice in enumerate(order, 1):
        for c in range(1, len(choice)):
            expected[i, order.index(choice[:c]) + 1] = True
    assert torch.equal(spec.mask(), expected)
    assert spec.mask()[6].tolist() == [1, 0, 1, 0, 0, 0, 1, 0, 0]           # [1, 0] sees the root, [1], itself
    # retrieve indices: each choice not already inside a longer one, from the last back, as node numbers
    assert spec.retrieve_indices() == [[0, 2, 8], [0, 2, 7], [0, 2, 6], [0, 1, 5], [0, 1, 4], [0, 1, 3]]


def test_mask_rows_are_parent_row_or_self():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        n = int(torch.randint(1, 15, (1,), generator=g))
        parents = [-1] + [int(torch.randint(0, j, (1,), generator=g)) for j in range(1, n)]
        mask = tree_mask(parents)
        for j in range(n):
            ancestors, a = set(), j
            while a != -1:                            # j itself, its parent, ..., the root
                ancestors.add(a)
                a = parents[a]
            assert set(mask[j].nonzero().flatten().tolist()) == ancestors
            if j:
                assert torch.equal(mask[j], mask[parents[j]] | torch.eye(n, dtype=torch.bool)[j])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_node_gets_its_paths_logits(seed):
    """The mask and position invariant: one masked forward over a random tree gives node j the logits
    of a plain causal forward over prompt + path(j), for every node."""
    model = tiny_model()
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, 37, (int(torch.randint(5, 12, (1,), generator=g)),), generator=g).tolist()
    n_nodes = int(torch.randint(2, 14, (1,), generator=g))
    parents = [-1] + [int(torch.randint(0, j, (1,), generator=g)) for j in range(1, n_nodes)]
    tokens = torch.randint(0, 37, (n_nodes,), generator=g).tolist()
    with torch.inference_mode():
        caches, _ = model.new_caches()
        model.trunk(torch.tensor([prompt]), caches)                     # the committed prefix
        positions, mask = verify_layout(parents, len(prompt))
        logits = model.head_logits(0, model.trunk(torch.tensor([tokens]), caches, positions, mask)[0])
        for j in range(n_nodes):
            path, a = [], j
            while a != -1:
                path.insert(0, tokens[a])
                a = parents[a]
            plain = model(torch.tensor([prompt + path])).logits[0][0, -1]
            torch.testing.assert_close(logits[j], plain, rtol=0, atol=1e-12)


# ---- greedy: identical to generate ----------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_greedy_tree_equals_greedy_random_models(style, shape):
    model = tiny_model(mtp_style=style, max_seq_len=40)
    for prompt in chain_tests.random_prompts(5, 37, seed=1):
        got, trace = tree_generate(model, prompt, 20, tree=shape)
        assert got == generate(model, prompt, 20) and trace.tokens == got


@pytest.mark.parametrize("shape", [(3, 2, 1), [[0], [1], [2], [0, 0], [1, 0], [0, 0, 0]], DynamicTree(budget=6)],
                         ids=str)
def test_greedy_tree_equals_greedy_trained_models(style, shape):
    model = chain_tests.trained_model(style)
    branch_taken = 0                                  # an accepted node that was not its parent's first child
    for prompt in chain_tests.words_prompts(6, seed=3) + chain_tests.random_prompts(2, chain_tests.WORDS_V, seed=3):
        got, trace = tree_generate(model, prompt, 30, tree=shape)
        assert got == generate(model, prompt, 30)
        for s in trace.steps:
            kids = s.children()
            branch_taken += sum(kids[s.parents[j]][0] != j for j in s.path)
            if isinstance(shape, DynamicTree):
                assert s.nodes <= shape.budget and s.depth <= 3
    assert branch_taken > 0                           # the tree did more than the chain could


def test_chain_tree_gives_speculative_generates_trace(style):
    """(1, 1, 1) is the chain: the same drafts, q, p, acceptances and extra tokens, step for step."""
    model = chain_tests.trained_model(style)
    for prompt in chain_tests.words_prompts(4, seed=5):
        tokens, chain = speculative_generate(model, prompt, 30)
        got, tree = tree_generate(model, prompt, 30, tree=(1, 1, 1))
        assert got == tokens and tree.first_token == chain.first_token
        assert [s.chain_step() for s in tree.steps] == chain.steps
        assert tree.tau() == chain.tau() and tree.acceptance_per_depth() == chain.acceptance_per_depth()


def test_experimental_reuse_beyond_depth_is_lossless():
    model = chain_tests.trained_model("sequential")
    for prompt in chain_tests.words_prompts(3, seed=9):
        got, trace = tree_generate(model, prompt, 30, tree=(2, 1, 1, 1, 1), experimental_reuse_modules=True)
        assert got == generate(model, prompt, 30) and max(s.depth for s in trace.steps) == 5


# ---- the drafts and the caches ----------------------------------------------------------------------
def full_forward_children(model, context, path_tokens, k):
    """Depth k's probabilities after context + path_tokens, from the training forward (no cache)."""
    with torch.inference_mode():
        return model(torch.tensor([context + path_tokens])).logits[k][0, len(context) - 2].softmax(-1)


def check_tree_drafts(model, prompt, trace):
    """Every drafted node's token is its parent's top candidate of its rank, with the same q, as an
    uncached full forward over the accepted text plus the parent's path gives."""
    context = prompt + [trace.first_token]
    for s in trace.steps:
        kids = s.children()
        for u, children in enumerate(kids):
            if not children:
                continue
            path = []
            a = u
            while a != 0:
                path.insert(0, s.tokens[a])
                a = s.parents[a]
            probs = full_forward_children(model, context, path, s.depths[u] + 1)
            assert [s.tokens[c] for c in children] == probs.topk(len(children)).indices.tolist()
            torch.testing.assert_close(torch.tensor([s.q[c] for c in children], dtype=torch.float64),
                                       probs[[s.tokens[c] for c in children]], rtol=0, atol=1e-12)
        context += s.emitted


@pytest.mark.parametrize("trained", [False, True])
def test_cached_tree_drafts_equal_full_forward_drafts(style, trained):
    model = chain_tests.trained_model(style) if trained else tiny_model(mtp_style=style)
    prompts = chain_tests.words_prompts(3, seed=13) if trained else chain_tests.random_prompts(3, 37, seed=13)
    for prompt in prompts:
        _, trace = tree_generate(model, prompt, 24, tree=(3, 2, 1))
        check_tree_drafts(model, prompt, trace)


def test_caches_equal_a_fresh_prefill_after_every_step(style):
    """Main cache, h^0 buffer, every module cache and its h^k buffer: the kept path (moved to contiguous
    positions) equals what a fresh prefill of the accepted text computes."""
    model = chain_tests.trained_model(style)
    close = dict(rtol=0, atol=1e-12)
    for prompt, shape in zip(chain_tests.words_prompts(3, seed=21), [(3, 2, 1), MEDUSA_TOY, DynamicTree(budget=5)]):
        dec = TreeDecoder(model, prompt, 30, tree=shape)
        while not dec.done:
            dec.step()
            n, ids = dec.state.n, dec.state.tokens
            with torch.inference_mode():
                fresh, _ = model.new_caches()
                model.trunk(ids[:n].view(1, -1), fresh)
                out = model(ids[:n + 1].view(1, -1))                    # accepted tokens + the pending one
                for mine, theirs in zip(dec.caches, fresh):
                    assert mine.length == n
                    torch.testing.assert_close(mine.k[:, :, :n], theirs.k[:, :, :n], **close)
                    torch.testing.assert_close(mine.v[:, :, :n], theirs.v[:, :, :n], **close)
                torch.testing.assert_close(dec.state.h0[:, :n], out.hidden[0][:, :n], **close)
                for k, cache in enumerate(dec.drafter.caches, 1):
                    if cache is None:
                        continue
                    L = cache.length
                    assert L <= n - k + 1 if style == "sequential" else L <= n
                    h_prev = out.hidden[k - 1 if style == "sequential" else 0][:, :L]
                    again = KVCache(1, cache.k.shape[1], cache.k.shape[3], L, dtype=cache.k.dtype)
                    h = model.mtp_hidden(k, h_prev, ids[k:k + L].view(1, -1), again)
                    torch.testing.assert_close(cache.k[:, :, :L], again.k, **close)
                    torch.testing.assert_close(cache.v[:, :, :L], again.v, **close)
                    if style == "sequential" and k < len(dec.drafter.inputs):
                        torch.testing.assert_close(dec.drafter.inputs[k][:, :L], h, **close)


def test_entries_past_the_kept_path_are_never_read(style, monkeypatch):
    """Poison everything past each kept path (KV caches, h buffers, token buffer): same output and trace."""
    model = chain_tests.trained_model(style)
    prompts = chain_tests.words_prompts(3, seed=17)
    clean = [tree_generate(model, p, 30, tree=(3, 2, 1)) for p in prompts]
    keep = KVCache.keep

    def poisoned_keep(self, start, slots):
        keep(self, start, slots)
        self.k[:, :, self.length:] = float("nan")
        self.v[:, :, self.length:] = float("nan")
    keep_path = TreeDecoder.keep_path

    def poisoned_keep_path(self, *args):
        keep_path(self, *args)
        n = self.state.n
        self.state.h0[:, n:] = float("nan")
        self.state.tokens[n + 1:] = chain_tests.WORDS_V - 1
        for k, cache in enumerate(self.drafter.caches, 1):
            if cache is not None and self.drafter.sequential and k < len(self.drafter.inputs):
                self.drafter.inputs[k][:, cache.length:] = float("nan")
    monkeypatch.setattr(KVCache, "keep", poisoned_keep)
    monkeypatch.setattr(TreeDecoder, "keep_path", poisoned_keep_path)
    for prompt, (tokens, trace) in zip(prompts, clean):
        got, got_trace = tree_generate(model, prompt, 30, tree=(3, 2, 1))
        assert got == tokens and got_trace.steps == trace.steps


# ---- sampling: lossless in distribution ------------------------------------------------------------
def tree_counts(model, prompt, n_tokens, n_samples, **kwargs):
    """Counts of the first n_tokens of n_tokens + 1 generated ones (the first step drafts the whole tree)."""
    counts = {}
    for seed in range(n_samples):
        tokens, _ = tree_generate(model, prompt, n_tokens + 1, seed=seed, rule="sample", **kwargs)
        counts[tuple(tokens[:n_tokens])] = counts.get(tuple(tokens[:n_tokens]), 0) + 1
    return counts


@pytest.mark.parametrize("style,sharpen,shape,sampling", [
    ("sequential", 2.0, (3, 1), dict(temperature=1.0)),
    ("parallel", 1.5, DynamicTree(budget=4, top_k=2), dict(temperature=0.7, top_k=3, top_p=0.9)),
], ids=["sequential-(3,1)", "parallel-dynamic-topk-topp"])
def test_tree_sampling_matches_the_exact_distribution(style, sharpen, shape, sampling):
    model = chain_tests.small_vocab_model(style, sharpen)
    prompt, n, N = [1, 3, 0], 3, 1000
    probs = chain_tests.exact_joint(model, prompt, n, **sampling)
    p_value = chain_tests.chi_square_p_value(tree_counts(model, prompt, n, N, tree=shape, **sampling), probs, N)
    print(f"{style} {shape}: chi-square p-value {p_value:.3f} over {len(probs)} outcomes")
    assert p_value > chain_tests.ALPHA
    # siblings were both accepted and rejected along the way (the multi-round rule was exercised)
    _, trace = tree_generate(model, prompt, 13, tree=shape, rule="sample", seed=0, **sampling)
    outcomes = [o for s in trace.steps for o in s.outcomes()]
    assert "rejected" in outcomes and "accepted" in outcomes


def test_the_tree_sampling_test_has_power(monkeypatch):
    """A rule that forgets to remove a rejected sibling's mass accepts a later sibling x with probability
    p(x) instead of p_res(x), which changes the distribution: the test must catch it."""
    import mtp_edu.tree as tree_module
    monkeypatch.setattr(tree_module, "without", lambda p, token: p)
    model = chain_tests.small_vocab_model("sequential", 2.0)
    prompt, n, N = [1, 3, 0], 3, 500
    probs = chain_tests.exact_joint(model, prompt, n, temperature=1.0)
    counts = tree_counts(model, prompt, n, N, tree=(3, 1), temperature=1.0)
    assert chain_tests.chi_square_p_value(counts, probs, N) < chain_tests.ALPHA


def test_sample_at_temperature_zero_and_threshold_rule():
    model = chain_tests.trained_model("sequential")
    prompt = chain_tests.words_prompts(1, seed=7)[0]
    assert tree_generate(model, prompt, 25, rule="sample", seed=3)[0] == generate(model, prompt, 25)
    lossy, trace = tree_generate(model, prompt, 25, rule="threshold", threshold=0.05)
    assert trace.lossy and len(lossy) == 25


# ---- traces and errors --------------------------------------------------------------------------------
def test_tree_trace_counts_and_round_trip():
    model = chain_tests.trained_model("sequential")
    tokens, trace = tree_generate(model, chain_tests.words_prompts(1, seed=23)[0], 40, tree=(3, 2, 1))
    assert trace.tree == "(3, 2, 1)" and trace.tokens == tokens
    assert trace.tau() == (len(tokens) - 1) / len(trace.steps)
    assert sum(trace.accepted_histogram()) == len(trace.steps)
    assert all(s.nodes <= 15 and s.q[0] == s.p[0] == 1.0 for s in trace.steps)
    assert 1 < trace.nodes_per_step() <= 15
    assert len(trace.acceptance_per_depth()) == 3 and 1 <= trace.expected_tokens() <= 4
    assert TreeTrace.from_json(trace.to_json()) == trace


class DigitTokenizer:
    """Token i is the digit i: enough text for the words models (V = 10)."""
    def encode(self, text):
        return [int(c) for c in text if c.isdigit()]

    def decode(self, ids):
        return "".join(str(i) for i in ids)


def test_tree_pictures_and_stepper():
    from mtp_edu.viz.tree_view import TreeStepperState, mask_heatmap, parse_tree, tree_diagram, tree_html, tree_stepper
    model = chain_tests.trained_model("sequential")
    _, trace = tree_generate(model, chain_tests.words_prompts(1, seed=23)[0], 30, tree=(3, 2, 1))
    step = next(s for s in trace.steps if "rejected" in s.outcomes())
    source = tree_diagram(step).source                              # DOT text: no Graphviz needed
    assert source.count("->") == step.nodes + 1                     # one edge per node, one to the extra token
    assert "#1a7f37" in source and "#cf222e" in source and "#0969da" in source
    page = tree_html(step)
    assert page.count("mtp-tree-node") == step.nodes + 2            # every node, the root and the extra token
    assert "mtp-tree-accepted" in page and "mtp-tree-rejected" in page
    assert mask_heatmap([-1, 0, 0, 1, 1], prefix=5).axes
    state = TreeStepperState(svg=False)
    state.load_trace(trace)
    assert state.step() and "mtp-tau" in state.html() and "mtp-tree-node" in state.html()
    state.set(tree="3,x")                                            # bad input: a message, never an exception
    assert not state.step() and "is not a tree" in state.html()
    live = TreeStepperState.for_model(model, DigitTokenizer(), 12, prompt="1234", tree="dynamic 4", svg=False)
    assert live.step() and live.trace.tree == "dynamic(budget=4, top_k=3)"
    live.set(rule="greedy", temperature=0.5)
    assert not live.step() and "temperature 0" in live.html()
    ex = tree_stepper(trace=trace, svg=False)
    ex.buttons["step"].click()
    assert "mtp-tree-node" in ex.view.value and "mtp-tree-node" in ex.static_html()
    with pytest.raises(ValueError, match="budget"):
        parse_tree("dynamic 0")


def test_bad_input_gives_clear_errors():
    model = tiny_model()
    for tree, words in [((), "not a tree shape"), ((0, 1), "tree width at depth 1"), ([[1, 0]], "needs its parent"),
                        ([[0], [0]], "listed twice"), ("wide", "not a tree shape"), ((2, True), "not a tree shape"),
                        ((40,), "vocabulary has 37"), ((1, 1, 1, 1), "4 deep, but this model has D=3")]:
        with pytest.raises((ValueError, TypeError), match=words):
            tree_generate(model, [1, 2, 3, 4], 5, tree=tree)
    for budget in (0, -2):
        with pytest.raises(ValueError, match="budget"):
            DynamicTree(budget=budget)
    with pytest.raises(ValueError, match="earlier node"):
        TreeSpec(parents=(-1, 1), ranks=(0, 0))
    with pytest.raises(ValueError, match="two children of rank 0"):
        TreeSpec(parents=(-1, 0, 0), ranks=(0, 0, 0))
    with pytest.raises(ValueError, match="sequential"):
        tree_generate(tiny_model(mtp_style="parallel"), [1, 2, 3, 4], 5, tree=(1,) * 4,
                      experimental_reuse_modules=True)
    with pytest.raises(ValueError, match="no MTP modules"):
        tree_generate(tiny_model(mtp_depth=0), [1, 2, 3, 4], 5)
