"""compile_for_decoding (torch.compile with dynamic shapes): the compiled decode path emits the same
tokens as eager decoding, and after a warm-up no KV-cache length, prompt length or draft depth makes it
recompile. Float64 tiny models, so that a different kernel's rounding never meets a near-tie."""
import copy
import shutil

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from mtp_edu import compile_for_decoding, generate, speculative_generate
from mtp_edu.config import MTP_STYLES

from conftest import tiny_model

pytestmark = pytest.mark.skipif(not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")),
                                reason="torch.compile's inductor backend needs a C++ compiler on a CPU")


@pytest.mark.parametrize("style", MTP_STYLES)
def test_compiled_decoding_is_exact_and_compiles_once_for_every_length(style):
    torch._dynamo.reset()
    counters.clear()
    eager, compiled = tiny_model(mtp_style=style), compile_for_decoding(tiny_model(mtp_style=style))
    # warm-up: prompts of one token and of several, steps with one new position and with several
    for prompt in ([6], [1, 2, 3, 4, 5]):
        speculative_generate(compiled, prompt, 24)
        generate(compiled, prompt, 4)
    graphs = counters["stats"]["unique_graphs"]
    # a few graphs each for the trunk and the module forward (dynamo specialises sizes and offsets of
    # 0 and 1); static shapes would compile one per cache length up to torch's recompile limit of
    # 8 per function (16 here) and then silently fall back to eager
    assert 2 <= graphs < 16
    g = torch.Generator().manual_seed(5)
    with torch._dynamo.config.patch(error_on_recompile=True):      # any recompile now raises
        for length in (1, 2, 9, 17):
            prompt = torch.randint(0, 37, (length,), generator=g).tolist()
            want = generate(eager, prompt, 20)
            assert generate(compiled, prompt, 20) == want
            for depth in (1, 2, 3):
                assert speculative_generate(compiled, prompt, 20, draft_depth=depth)[0] == want
    assert counters["stats"]["unique_graphs"] == graphs


def test_a_copy_of_a_compiled_model_runs_its_own_weights():
    model, reference = compile_for_decoding(tiny_model()), tiny_model()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in [*twin.parameters(), *reference.parameters()]:
            p.mul_(0.5)
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(twin.trunk(ids), reference.trunk(ids), rtol=1e-12, atol=1e-12)
    assert not torch.equal(twin.trunk(ids), model.trunk(ids))


def test_compile_for_decoding_is_idempotent():
    model = compile_for_decoding(tiny_model())
    trunk = model.trunk
    assert compile_for_decoding(model) is model and model.trunk is trunk     # not wrapped twice
