"""The same invariants on a CUDA device: lossless greedy decoding (eager and compiled), cached ==
full-forward drafts, memory-efficient gradients, a bf16-autocast training step. Skipped (with the reason)
without a GPU."""
import pytest
import torch

from mtp_edu import compile_for_decoding, generate, mtp_loss, mtp_loss_backward, speculative_generate
from mtp_edu.config import MTP_STYLES
from mtp_edu.train import TrainConfig, train

from conftest import tiny_config, tiny_model

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is visible")]


@pytest.mark.parametrize("style", MTP_STYLES)
def test_greedy_speculative_is_lossless_on_cuda_float64(style):
    model = tiny_model(mtp_style=style).cuda()
    g = torch.Generator().manual_seed(0)
    for _ in range(8):
        prompt = torch.randint(0, 37, (int(torch.randint(1, 10, (1,), generator=g)),), generator=g).tolist()
        for depth in (1, 2, 3):
            tokens, _ = speculative_generate(model, prompt, 20, draft_depth=depth)
            assert tokens == generate(model, prompt, 20)


def test_compiled_decoding_on_cuda_is_lossless_float64():
    eager, compiled = tiny_model().cuda(), compile_for_decoding(tiny_model().cuda())
    g = torch.Generator().manual_seed(3)
    for length in (3, 8, 13):
        prompt = torch.randint(0, 37, (length,), generator=g).tolist()
        want = generate(eager, prompt, 20)
        assert generate(compiled, prompt, 20) == want
        assert speculative_generate(compiled, prompt, 20)[0] == want


@pytest.mark.parametrize("style", MTP_STYLES)
def test_memory_efficient_gradients_on_cuda(style):
    model = tiny_model(mtp_style=style).cuda()
    chunk = torch.randint(0, 37, (2, 16), generator=torch.Generator().manual_seed(1)).cuda()
    mtp_loss(model(chunk[:, :-1]), chunk[:, 1:]).total.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    mtp_loss_backward(model, chunk[:, :-1], chunk[:, 1:])
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[name], rtol=1e-10, atol=1e-12, msg=name)


def test_kv_cache_on_cuda_matches_full_forward():
    model = tiny_model().cuda()
    ids = torch.randint(0, 37, (1, 14), generator=torch.Generator().manual_seed(2)).cuda()
    caches, _ = model.new_caches()
    parts = [model.trunk(ids[:, a:b], caches) for a, b in [(0, 5), (5, 6), (6, 14)]]
    torch.testing.assert_close(torch.cat(parts, 1), model.trunk(ids), rtol=0, atol=1e-12)


def test_bf16_autocast_training_step(tmp_path):
    tc = TrainConfig(data="synthetic:cycle", steps=3, batch_size=4, seq_len=32, eval_every=0, eval_chunks=2,
                     final_eval_chunks=2, card_chunks=2, device="cuda")
    result = train(tiny_config(max_seq_len=64), tc, tmp_path / "run", progress=False)
    assert next(result.model.parameters()).is_cuda
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.history)
