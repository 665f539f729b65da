"""The loss against a slow reference written straight from DeepSeek-V3 eqs. 21-25, schedules,
masking, and the memory-efficient path's gradients."""
import math

import pytest
import torch
import torch.nn.functional as F

from mtp_edu import mtp_loss, mtp_loss_backward
from mtp_edu.config import MTP_STYLES
from mtp_edu.losses import Constant, Curriculum, Decay, DeepSeekStep, depth_weights

from conftest import tiny_model

V, D = 37, 3


def reference_logits(model, t, k, i):
    """P^k at 1-indexed position i, one position at a time (eqs. 21-23); t is the 1-indexed chunk."""
    def h(k, i):                                     # h^k_i, each from the prefix 1..i (causality)
        if k == 0:
            x = model.embed(torch.tensor([t[1:i + 1]]))
            for block in model.blocks:
                x = block(x, model.rope)
            return model.norm(x)[0, -1]
        module = model.mtp[k - 1]
        if model.config.mtp_style == "linear":
            h0 = h(0, i)
            return h0 + F.silu(module.proj(h0))
        if model.config.mtp_style == "parallel":
            prev = torch.stack([h(0, j) for j in range(1, i + 1)])
            return module.block(prev[None], model.rope)[0, -1]
        rows = [module.eh_proj(torch.cat([module.enorm(model.embed.weight[t[j + k]]), module.hnorm(h(k - 1, j))]))
                for j in range(1, i + 1)]           # h'^k_j = M_k[RMSNorm(Emb(t_{j+k})); RMSNorm(h^{k-1}_j)]
        return module.block(torch.stack(rows)[None], model.rope)[0, -1]
    hk = h(k, i)
    return model.out_head(hk if k == 0 else model.mtp[k - 1].norm(hk))


def reference_loss(model, chunk, lam, reduction, weights=None, ignored=()):
    """L = L_main + lam/D sum_k L^k with L^k = (1/N) sum_{i=1}^{T-k} -log P^k_i[t_{i+k+1}] (eqs. 24-25).

    `ignored` holds the 1-indexed j whose t_j is never a target (padding)."""
    t = [None] + chunk                               # 1-indexed: t[1] .. t[T+1]
    T = len(chunk) - 1
    losses = []
    for k in range(D + 1):
        total, count = 0.0, 0.0
        for i in range(1, T - k + 1):
            target = t[i + k + 1]
            if i + k + 1 in ignored:
                continue
            w = 1.0 if weights is None else weights[i + k - 1]   # weights align with targets t_2..t_{T+1}
            total += -w * torch.log_softmax(reference_logits(model, t, k, i), -1)[target]
            count += w
        losses.append(total / (T if reduction == "paper" else count))
    return losses[0] + lam / D * sum(losses[1:]), losses


@pytest.mark.parametrize("style", MTP_STYLES)
@pytest.mark.parametrize("reduction", ["valid", "paper"])
def test_loss_equals_slow_reference(style, reduction):
    model = tiny_model(mtp_style=style)
    g = torch.Generator().manual_seed(5)
    chunk = torch.randint(0, V, (10,), generator=g)
    inputs, targets = chunk[:-1].clone(), chunk[1:].clone()
    targets[[2, 6]] = -100                           # t_4 and t_8 are padding: never a target
    weights = torch.rand(9, generator=g, dtype=torch.float64) + 0.5
    with torch.no_grad():
        got = mtp_loss(model(inputs[None]), targets[None], mtp_loss_scale=0.3, reduction=reduction,
                       token_weights=weights[None])
        want, parts = reference_loss(model, chunk.tolist(), 0.3, reduction, weights.tolist(), ignored={4, 8})
    torch.testing.assert_close(got.total, want, rtol=1e-10, atol=1e-10)
    for k in range(1, D + 1):
        torch.testing.assert_close(got.depths[k - 1], parts[k], rtol=1e-10, atol=1e-10)


def test_reductions_differ_exactly_by_counts():
    """'paper' divides each depth's sum by T; 'valid' by its T-k valid targets."""
    model = tiny_model()
    chunk = torch.randint(0, V, (2, 13), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out = model(chunk[:, :-1])
        valid = mtp_loss(out, chunk[:, 1:], reduction="valid")
        paper = mtp_loss(out, chunk[:, 1:], reduction="paper")
    T = 12
    for k in range(1, D + 1):
        torch.testing.assert_close(paper.depths[k - 1], valid.depths[k - 1] * (T - k) / T)
    torch.testing.assert_close(paper.main, valid.main)


def test_everything_ignored_gives_zero_not_nan():
    model = tiny_model()
    ids = torch.randint(0, V, (1, 8), generator=torch.Generator().manual_seed(7))
    targets = torch.full((1, 8), -100)
    targets[0, 0] = 3                                # only the main depth has a valid target
    with torch.no_grad():
        loss = mtp_loss(model(ids), targets)
    assert all(float(x) == 0.0 for x in loss.depths) and math.isfinite(float(loss.total))


def test_schedules():
    assert Constant(0.2)(10**6) == 0.2
    ds = DeepSeekStep(total_steps=148)
    assert ds(0) == 0.3 and ds(99) == 0.3 and ds(100) == 0.1 and ds(147) == 0.1
    dec = Decay(0.3, 100, alpha=2.0)
    assert dec(0) == 0.3 and abs(dec(50) - 0.075) < 1e-12 and dec(100) == 0.0 and dec(200) == 0.0
    cur = Curriculum(0.3, depth=3, steps_per_depth=10)
    assert cur(0) == [0.3, 0.0, 0.0] and cur(10) == [0.3, 0.3, 0.0] and cur(25) == [0.3, 0.3, 0.3]
    assert depth_weights(3, cur, 10) == pytest.approx([1.0, 0.1, 0.1, 0.0])
    assert depth_weights(2, 0.3) == pytest.approx([1.0, 0.15, 0.15])


def test_schedule_changes_the_total():
    model = tiny_model()
    chunk = torch.randint(0, V, (1, 11), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        out = model(chunk[:, :-1])
        early = mtp_loss(out, chunk[:, 1:], mtp_loss_scale=Curriculum(0.3, D, 10), step=0)
        late = mtp_loss(out, chunk[:, 1:], mtp_loss_scale=Curriculum(0.3, D, 10), step=20)
    torch.testing.assert_close(early.total, early.main + 0.1 * early.depths[0])
    torch.testing.assert_close(late.total, late.main + 0.1 * sum(late.depths))


@pytest.mark.parametrize("kwargs,match", [
    (dict(reduction="sum"), "reduction"),
    (dict(mtp_loss_scale=-1.0), "lambda"),
    (dict(mtp_loss_scale=lambda step: [0.1, 0.2]), "D=3"),
    (dict(token_weights=torch.ones(1, 5)), "token_weights"),
])
def test_bad_loss_arguments(kwargs, match):
    model = tiny_model()
    ids = torch.randint(0, V, (1, 8), generator=torch.Generator().manual_seed(9))
    with pytest.raises(ValueError, match=match):
        mtp_loss(model(ids), ids, **kwargs)


def test_targets_must_match_the_logits():
    model = tiny_model()
    ids = torch.randint(0, V, (1, 8), generator=torch.Generator().manual_seed(10))
    with pytest.raises(ValueError, match="targets have shape"):
        mtp_loss(model(ids), ids[:, 1:])
    with pytest.raises(ValueError, match="integer tensor"):
        mtp_loss(model(ids), ids.double())


# ---- issue 11: bad lambdas, weights, targets and outputs are refused, naming the argument -------------------
@pytest.mark.parametrize("kwargs,error,match", [
    (dict(mtp_loss_scale=math.nan), ValueError, r"mtp_loss_scale=nan is not allowed: must be a finite number >= 0"),
    (dict(mtp_loss_scale=math.inf), ValueError, r"mtp_loss_scale=inf is not allowed"),
    (dict(mtp_loss_scale=True), TypeError, r"mtp_loss_scale=True is not allowed"),
    (dict(mtp_loss_scale=lambda step: math.nan), ValueError, r"mtp_loss_scale\(step=0\)=nan .*lambda schedule"),
    (dict(mtp_loss_scale=lambda step: math.inf), ValueError, r"mtp_loss_scale\(step=0\)=inf"),
    (dict(mtp_loss_scale=lambda step: True), TypeError, r"mtp_loss_scale\(step=0\)=True"),
    (dict(mtp_loss_scale=lambda step: [0.1, math.nan, 0.1]), ValueError, r"mtp_loss_scale\(step=0\)\[1\]"),
    (dict(step=-1), ValueError, r"step=-1 is not allowed"),
    (dict(token_weights=-torch.ones(1, 7)), ValueError, r"token_weights must be finite and >= 0; got min -1"),
    (dict(token_weights=torch.full((1, 7), math.nan)), ValueError, r"token_weights must be finite and >= 0"),
    (dict(token_weights=[[1.0] * 7]), ValueError, r"token_weights must be None or a real \(B, T\) tensor"),
    (dict(ignore_index=2**63), ValueError, r"ignore_index=9223372036854775808 is not allowed"),
])
def test_bad_lambdas_and_weights_are_refused(kwargs, error, match):
    model = tiny_model()
    ids = torch.randint(0, V, (1, 8), generator=torch.Generator().manual_seed(12))
    with pytest.raises(error, match=match):
        mtp_loss(model(ids[:, :-1]), ids[:, 1:], **kwargs)


@pytest.mark.parametrize("make,error,match", [
    (lambda: DeepSeekStep(-5), ValueError, r"DeepSeekStep.total_steps=-5 is not allowed: must be an integer >= 1"),
    (lambda: Decay(0.3, 0), ValueError, r"Decay.total_steps=0 is not allowed"),
    (lambda: Decay(alpha=-1, lambda0=0.3, total_steps=10), ValueError, r"Decay.alpha=-1 is not allowed: .* > 0"),
    (lambda: Decay(0.3, 10, alpha=math.inf), ValueError, r"Decay.alpha=inf"),
    (lambda: Constant(math.nan), ValueError, r"Constant.value=nan"),
    (lambda: Curriculum(0.3, 0, 10), ValueError, r"Curriculum.depth=0"),
    (lambda: DeepSeekStep(10, switch_fraction=2.0), ValueError, r"DeepSeekStep.switch_fraction=2.0"),
    (lambda: DeepSeekStep(True), TypeError, r"DeepSeekStep.total_steps=True"),
])
def test_schedules_refuse_bad_arguments_when_built(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_int32_targets_give_the_int64_loss_and_other_dtypes_are_refused():
    model = tiny_model()
    ids = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(13))
    out = model(ids[:, :-1])
    want = mtp_loss(out, ids[:, 1:]).total
    torch.testing.assert_close(mtp_loss(out, ids[:, 1:].int()).total, want, rtol=0, atol=0)
    for dtype in (torch.bool, torch.uint8, torch.int16):
        with pytest.raises(ValueError, match=rf"targets must be a 2-d integer tensor .* int64 or int32; got .*{dtype}"):
            mtp_loss(out, ids[:, 1:].to(dtype))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 37\) or equal ignore_index=-100; got \[37\]"):
        mtp_loss(out, ids[:, 1:].masked_fill(ids[:, 1:] == ids[0, 1], V))
    with pytest.raises(TypeError, match="output must be the MTPOutput of a model's forward"):
        mtp_loss(None, ids[:, 1:])


@pytest.mark.parametrize("style", MTP_STYLES)
@pytest.mark.parametrize("reduction", ["valid", "paper"])
def test_memory_efficient_path_gives_the_same_gradients(style, reduction):
    model = tiny_model(mtp_style=style)
    g = torch.Generator().manual_seed(11)
    chunk = torch.randint(0, V, (2, 16), generator=g)
    targets = chunk[:, 1:].clone()
    targets[0, -3:] = -100
    weights = torch.rand(2, 15, generator=g, dtype=torch.float64)
    kwargs = dict(mtp_loss_scale=DeepSeekStep(10), step=3, reduction=reduction, token_weights=weights)

    plain = mtp_loss(model(chunk[:, :-1]), targets, **kwargs)
    plain.total.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    lean = mtp_loss_backward(model, chunk[:, :-1], targets, **kwargs)
    torch.testing.assert_close(lean.total, plain.total.detach(), rtol=1e-12, atol=1e-12)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[name], rtol=1e-10, atol=1e-12, msg=name)
    assert any(float(g.abs().sum()) > 0 for n, g in want.items() if n.startswith("mtp.2."))
