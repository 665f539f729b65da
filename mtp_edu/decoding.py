"""Decoding: KV-cached generation and self-speculative decoding with the MTP modules as drafters.

`generate` is plain autoregressive decoding of the main model (greedy, temperature, top-k, top-p).
`speculative_generate` lets the MTP modules draft and the main model verify (docs/design.md, "Decoding"):

    state:   accepted x_1..x_n (in the main KV cache), h^0_n, and the pending next token x_{n+1}
    draft:   module k at position n reads (h^{k-1}_n, x_{n+k}) and drafts d_k for x_{n+k+1}
             (x_{n+k} = d_{k-1} for k >= 2: the modules chain exactly as in training)
    verify:  ONE main forward over [x_{n+1}, d_1..d_D] gives P^0 at every drafted position
    accept:  a rule keeps a prefix d_1..d_a and adds one main-model token: the correction at the
             first rejection, or the bonus token when all D drafts were kept
    rollback every KV cache past what is no longer true; the added token is the new pending token.

Rules
- "greedy": keep d_k while it equals the main argmax. Lossless: the output equals `generate` greedy.
- "sample": speculative sampling (Leviathan et al. 2023, arXiv 2211.17192, Alg. 1; Chen et al. 2023,
  arXiv 2302.01318): keep d_k ~ q with probability min(1, p(d_k) / q(d_k)); at the first rejection
  sample from norm(max(0, p - q)); bonus from p. Lossless in distribution: every token is
  distributed exactly as `generate(temperature, top_k, top_p)` would draw it.
- "threshold" (the 'Complete Guide' tutorial, docs/references.md): keep d_k while p(d_k) > threshold.
  Lossy: `Trace.lossy` is True, and `divergence` measures how far the output drifts from greedy.
  (At temperature 0, p is the plain softmax; a threshold >= 0.5 then keeps only argmax drafts and
  cannot change the output, it only rejects more; the tutorial's example 0.1 can.)

Context limit (both functions alike): prompt + generated tokens never exceed `max_seq_len`. When
`max_new_tokens` does not fit, a `ContextLimitWarning` says so and generation stops at the limit,
returning fewer tokens; the window does not slide.

Numerics: the algorithm is exact, but a verify forward over several positions and a one-token
forward round differently in float32, so a near-tie can flip an argmax; in float64 the greedy
outputs match token for token (tests/test_speculative.py).
"""
from __future__ import annotations

import contextlib
import types
import warnings
from dataclasses import dataclass

import torch

from .checks import check_int, check_number
from .drafting import DRAFTERS, DecodeState, MTPDrafter
from .model import MTPModel
from .traces import Step, Trace

RULES = ("greedy", "sample", "threshold")


class ContextLimitWarning(UserWarning):
    """Generation stopped because prompt + generated tokens reached the model's max_seq_len."""


# ---- input checks shared by both functions ----------------------------------------------------
def _check_prompt(model: MTPModel, prompt_ids) -> list[int]:
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.dim() != 1 or prompt_ids.is_floating_point() or prompt_ids.is_meta:
            where = " on the meta device (no values)" if prompt_ids.is_meta else ""
            raise ValueError(f"prompt_ids must be a list of ints or a 1-d integer tensor; got a "
                             f"{prompt_ids.dim()}-d {prompt_ids.dtype} tensor{where}")
        prompt_ids = prompt_ids.tolist()
    if not isinstance(prompt_ids, (list, tuple)) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in prompt_ids):
        raise ValueError("prompt_ids must be a list of ints or a 1-d integer tensor")
    cfg = model.config
    if len(prompt_ids) == 0:
        raise ValueError("prompt_ids is empty: give at least one token (e.g. a BOS or newline token)")
    if len(prompt_ids) > cfg.max_seq_len:
        raise ValueError(f"prompt_ids holds {len(prompt_ids)} tokens, more than the context "
                         f"max_seq_len={cfg.max_seq_len}; shorten it to at most {cfg.max_seq_len}")
    bad = [t for t in prompt_ids if not 0 <= t < cfg.vocab_size]
    if bad:
        raise ValueError(f"prompt_ids: token ids must lie in [0, {cfg.vocab_size}); got {bad[:5]}")
    return list(prompt_ids)


def _check_seed(seed) -> None:
    check_int("seed", seed, minimum=0, maximum=2**64 - 1, optional=True,
              note="a torch.Generator seed; None = a fresh random seed")


def _check_sampling(temperature, top_k, top_p, vocab_size: int) -> None:
    check_number("temperature", temperature, minimum=0, note="0 = greedy")
    check_int("top_k", top_k, minimum=1, optional=True, note=f"values above vocab_size={vocab_size} keep every token")
    check_number("top_p", top_p, above=0, maximum=1, optional=True)


def _budget(model: MTPModel, prompt_len: int, max_new_tokens: int) -> int:
    """How many tokens fit: prompt + generated <= max_seq_len (warns when that cuts the request)."""
    room = model.config.max_seq_len - prompt_len
    if max_new_tokens > room:
        warnings.warn(f"context limit: a {prompt_len}-token prompt leaves room for {room} of the "
                      f"{max_new_tokens} requested tokens (max_seq_len={model.config.max_seq_len}); "
                      f"generation stops there", ContextLimitWarning, stacklevel=3)
        return room
    return max_new_tokens


def _generator(device: torch.device, seed: int | None) -> torch.Generator:
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g


@contextlib.contextmanager
def _eval_mode(model: MTPModel):
    """Decode with dropout off, and hand the model back in the mode it came in."""
    was_training = model.training
    if was_training:                  # .eval() walks every submodule: skip it when there is nothing to do
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_training:
            model.train()


# ---- the target distribution ------------------------------------------------------------------
def target_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None) -> torch.Tensor:
    """The distribution decoding draws from: softmax(logits / T), kept to the top_k most likely tokens
    and to the smallest set whose mass reaches top_p (nucleus sampling, Holtzman et al. 2020), then
    renormalised. T = 0 gives the one-hot argmax (greedy). logits (..., V) -> probabilities (..., V)."""
    if temperature == 0:
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    scaled = logits / temperature
    # a tiny temperature (e.g. 1e-45 in float32) overflows a row of logits / T to inf, whose softmax is
    # NaN; such a row is scaled as (logits - max) / T instead (<= 0, the same softmax). Other rows: as is.
    overflow = ~torch.isfinite(scaled.amax(-1, keepdim=True))
    logits = torch.where(overflow, (logits - logits.amax(-1, keepdim=True)) / temperature, scaled)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if top_p is not None and top_p < 1:
        sorted_p, order = probs.sort(-1, descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p >= top_p            # mass before it already reaches top_p
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p.masked_fill(outside, 0.0))
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def _sample(probs: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.multinomial(probs, 1, generator=g).squeeze(-1)


# ---- optional: torch.compile ---------------------------------------------------------------------
def compile_for_decoding(model: MTPModel, backend: str = "inductor") -> MTPModel:
    """torch.compile the model's trunk (as one graph) and each of its MTP modules, in place.

    A decode step in eager PyTorch is mostly Python and per-op dispatch (dozens of tiny ops per
    block); a compiled graph fuses them. `dynamic=True` keeps the KV-cache length and the number of
    new positions symbolic: a handful of graphs (empty cache, one-token prompt, one new position,
    several) serve every cache length, where static shapes would need one graph per length.
    The maths is unchanged; compiled kernels may round float32 differently, as any kernel change may.

    - The first calls pay the compile time (tens of seconds on a laptop CPU); `backend="inductor"`
      needs a C++ compiler on a CPU (Triton on a GPU). A second call does nothing, whatever `backend`.
    - Every later call of `model.trunk` and of the modules is compiled, training included (it works,
      with graphs of its own). To keep an eager model, compile a separately loaded one.
    - Compile after `copy.deepcopy` or `.double()`, not before; save with `state_dict` (unchanged),
      never by pickling the model object.
    Returns the same model, so `model = compile_for_decoding(load_pretrained(...)[0])` works.
    """
    if "trunk" in vars(model):
        return model                                                            # compiled already
    # bound to `model` here, so a deepcopy of the model binds the copy (a compiled bound method would
    # keep calling the original's trunk)
    model.trunk = types.MethodType(torch.compile(MTPModel.trunk, dynamic=True, backend=backend), model)
    for module in model.mtp:
        module.compile(dynamic=True, backend=backend)
    return model


# ---- plain decoding -----------------------------------------------------------------------------
def generate(model: MTPModel, prompt_ids, max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, seed: int | None = 0) -> list[int]:
    """KV-cached autoregressive decoding of the main model: x_{n+1} ~ P^0_{n+1}, one forward per token.

    temperature 0 is greedy (argmax; top_k / top_p then change nothing); otherwise tokens are drawn
    from `target_probs` with a torch.Generator seeded from `seed` (None: a fresh random seed), so a
    run repeats exactly. Returns the generated tokens only. Stops at the context limit with a
    `ContextLimitWarning` (see the module docstring), exactly as `speculative_generate` does.
    """
    prompt = _check_prompt(model, prompt_ids)
    check_int("max_new_tokens", max_new_tokens, minimum=0)
    _check_sampling(temperature, top_k, top_p, model.config.vocab_size)
    _check_seed(seed)
    budget = _budget(model, len(prompt), max_new_tokens)
    device = next(model.parameters()).device
    g = _generator(device, seed)
    with _eval_mode(model):
        caches, _ = model.new_caches()
        seq = torch.tensor(prompt + [0] * budget, device=device)
        n = len(prompt)
        x = seq[:n].view(1, n)
        for _ in range(budget):
            logits = model.head_logits(0, model.trunk(x, caches)[0, -1])    # (V,) predicting x_{n+1}
            seq[n] = logits.argmax() if temperature == 0 else _sample(
                target_probs(logits, temperature, top_k, top_p), g)
            x = seq[n:n + 1].view(1, 1)
            n += 1
        return seq[len(prompt):].tolist()


# ---- self-speculative decoding --------------------------------------------------------------------
@dataclass
class _Rule:
    """One acceptance rule with its sampling settings. `accept` returns (a, extra token)."""
    name: str
    temperature: float
    top_k: int | None
    top_p: float | None
    threshold: float
    g: torch.Generator

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """What the trace shows as p and q: the sampling distribution, or at T = 0 the plain softmax."""
        return target_probs(logits, self.temperature or 1.0, self.top_k, self.top_p)

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        """The token `generate` would emit from these logits (drafts are picked the same way)."""
        if self.temperature == 0:
            return logits.argmax(-1)
        return _sample(target_probs(logits, self.temperature, self.top_k, self.top_p), self.g)

    def accept(self, logits: torch.Tensor, drafts: torch.Tensor, q: torch.Tensor,
               p: torch.Tensor) -> tuple[int, torch.Tensor]:
        """logits (m+1, V): P^0 at the pending token and the m drafts; drafts (m,);
        q (m, V): the drafter's distributions (one-hot for a deterministic drafter); p = probs(logits)."""
        m = len(drafts)
        if self.name == "greedy":                    # keep d_k while it is the main argmax
            keep = logits[:m].argmax(-1) == drafts
        elif self.name == "threshold":               # 'Complete Guide' tutorial: keep while p > threshold
            keep = p[torch.arange(m), drafts] > self.threshold
        else:                                         # Leviathan et al. 2023, Alg. 1
            rows = torch.arange(m)
            r = torch.rand(m, generator=self.g, device=logits.device, dtype=p.dtype)
            keep = r * q[rows, drafts] < p[rows, drafts]                  # r < min(1, p(d) / q(d))
            a = int(keep.cumprod(0).sum())
            if a == m:
                return a, _sample(p[m], self.g)                           # bonus ~ p
            residual = (p[a] - q[a]).clamp_min(0)                         # norm(max(0, p - q))
            return a, _sample(residual if residual.sum() > 0 else p[a], self.g)
        a = int(keep.cumprod(0).sum())
        return a, self.pick(logits[a])                                    # correction or bonus


def _make_drafter(drafter, experimental_reuse_modules: bool):
    if drafter is None or drafter == "mtp":
        return MTPDrafter(experimental_reuse_modules)
    if isinstance(drafter, str):
        if drafter not in DRAFTERS:
            raise ValueError(f"drafter={drafter!r} is not allowed: must be None, one of {sorted(DRAFTERS)}, "
                             f"or a drafter object")
        return DRAFTERS[drafter]()
    if not all(hasattr(drafter, name) for name in ("check_depth", "start", "draft", "rollback")):
        raise ValueError("a drafter object needs check_depth, start, draft and rollback methods "
                         "(see mtp_edu.drafting)")
    return drafter


def check_speculative_args(model: MTPModel, prompt_ids, max_new_tokens, rule, temperature, top_k, top_p,
                           threshold, seed) -> list[int]:
    """The checks every speculative decoder (chain or tree) makes of its common arguments; returns the
    prompt as a list of ids."""
    prompt = _check_prompt(model, prompt_ids)
    check_int("max_new_tokens", max_new_tokens, minimum=0)
    if rule not in RULES:
        raise ValueError(f"rule={rule!r} is not allowed: must be one of {', '.join(RULES)}")
    _check_sampling(temperature, top_k, top_p, model.config.vocab_size)
    if rule == "greedy" and temperature != 0:
        raise ValueError(f"rule='greedy' decodes at temperature 0 (got temperature={temperature}); "
                         f"for temperature > 0 use rule='sample' (lossless) or rule='threshold' (lossy)")
    check_number("threshold", threshold, minimum=0, below=1, note="used by rule='threshold'")
    _check_seed(seed)
    return prompt


def speculative_generate(model: MTPModel, prompt_ids, max_new_tokens: int, rule: str = "greedy",
                         draft_depth: int | None = None, temperature: float = 0.0,
                         top_k: int | None = None, top_p: float | None = None, threshold: float = 0.5,
                         seed: int | None = 0, drafter=None, min_draft_confidence: float = 0.0,
                         experimental_reuse_modules: bool = False) -> tuple[list[int], Trace]:
    """Self-speculative decoding: the MTP modules draft, the main model verifies (module docstring).

    rule: "greedy" (temperature must be 0; output == generate greedy), "sample" (any temperature;
    output distributed exactly as generate's; at temperature 0 it is greedy), "threshold" (lossy:
    keep drafts with p > threshold, p at `temperature` or 1 when temperature is 0).
    draft_depth: drafts per step, None = D; at most D unless experimental_reuse_modules=True.
    drafter: None or "mtp" (the MTP modules), "prompt_lookup" (n-gram copy, training-free), or an
    object with check_depth / start / draft / rollback (mtp_edu.drafting).
    min_draft_confidence: dynamic draft length. Drafting stops after d_k once the drafter's
    q(d_1)...q(d_k) (softmax probabilities) falls below it, saving module forwards whose drafts
    would likely be rejected (cf. EAGLE-2's confidence-based drafting). Lossless; 0 = always `draft_depth`.

    Returns exactly max_new_tokens generated tokens (fewer only at the context limit, with a
    `ContextLimitWarning`, as in `generate`) and the `Trace`: one Step per verification forward.
    Near the end the draft depth shrinks so no step runs past max_new_tokens.
    At temperature 0, the p and q in the trace are plain softmax probabilities (the models' confidence).
    """
    prompt = check_speculative_args(model, prompt_ids, max_new_tokens, rule, temperature, top_k, top_p,
                                    threshold, seed)
    check_number("min_draft_confidence", min_draft_confidence, minimum=0, maximum=1)
    drafter = _make_drafter(drafter, experimental_reuse_modules)
    depth = drafter.check_depth(model, draft_depth)
    budget = _budget(model, len(prompt), max_new_tokens)
    trace = Trace(prompt=prompt, rule=rule, draft_depth=depth, lossy=rule == "threshold")
    if budget == 0:
        return [], trace
    device = next(model.parameters()).device
    judge = _Rule(rule, temperature, top_k, top_p, threshold, _generator(device, seed))
    with _eval_mode(model):
        caches, _ = model.new_caches()
        n = len(prompt)
        state = DecodeState(torch.tensor(prompt + [0] * budget, device=device),
                            torch.empty(1, model.config.max_seq_len, model.config.d_model,
                                        device=device, dtype=next(model.parameters()).dtype), n)
        drafter.start(model, state, depth)
        h = model.trunk(state.tokens[:n].view(1, n), caches)                # prefill
        state.h0[:, :n] = h
        state.tokens[n] = judge.pick(model.head_logits(0, h[0, -1]))
        trace.first_token = int(state.tokens[n])
        emitted = 1
        while emitted < budget:
            step = _speculative_step(model, state, caches, drafter, judge, min(depth, budget - emitted - 1),
                                     min_draft_confidence)
            trace.steps.append(step)
            emitted += step.accepted + 1
        return state.tokens[len(prompt):].tolist(), trace


def _speculative_step(model, state, caches, drafter, judge: _Rule, depth: int, min_confidence: float) -> Step:
    """Draft up to `depth` tokens, verify them in one main forward, accept, roll back."""
    n, tokens = state.n, state.tokens
    m, draft_logits = drafter.draft(state, depth, judge.pick, min_confidence) if depth else (0, None)
    drafts = tokens[n + 1:n + 1 + m]
    h = model.trunk(tokens[n:n + m + 1].view(1, -1), caches)         # verify: (1, m+1, d)
    state.h0[:, n:n + m + 1] = h
    logits = model.head_logits(0, h[0])                               # (m+1, V): P^0 of x_{n+2}..x_{n+m+2}
    p = judge.probs(logits)
    one_hot = lambda t: torch.zeros_like(p[:m]).scatter_(-1, t[:, None], 1.0)
    q = one_hot(drafts) if draft_logits is None else judge.probs(draft_logits)    # (m, V)
    rows = torch.arange(m)
    shown = drafts.tolist(), q[rows, drafts].tolist(), p[rows, drafts].tolist()
    if judge.name == "sample" and judge.temperature == 0:
        p, q = target_probs(logits, 0.0), one_hot(drafts)             # greedy drafts: p, q one-hot
    a, extra = judge.accept(logits, drafts, q, p)
    state.n = n + a + 1                                                # accepted + the kept drafts
    tokens[state.n] = extra                                            # the new pending token
    for cache in caches:
        cache.rollback(state.n)
    drafter.rollback(state)
    return Step(drafted=shown[0], q=shown[1], p=shown[2], accepted=a, extra_token=int(extra),
                extra_kind="bonus" if a == m else "correction", main_forwards=1,
                draft_forwards=getattr(drafter, "forwards", 0) if m else 0)


# ---- how far a lossy rule drifts ----------------------------------------------------------------
@dataclass
class Divergence:
    """first_difference: index of the first token that differs (None: identical up to the shorter);
    fraction_differing: share of the compared positions whose tokens differ (after the first
    difference the two texts usually go separate ways, so this is a crude number)."""
    first_difference: int | None
    fraction_differing: float
    compared: int


def divergence(tokens: list[int], reference: list[int]) -> Divergence:
    """Compare a lossy rule's output with the reference (e.g. `generate` greedy on the same prompt):
    `divergence(speculative_generate(m, p, n, rule="threshold")[0], generate(m, p, n))`."""
    n = min(len(tokens), len(reference))
    differ = [i for i in range(n) if tokens[i] != reference[i]]
    return Divergence(differ[0] if differ else None, len(differ) / n if n else 0.0, n)
