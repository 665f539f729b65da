"""compile_for_decoding (torch.compile with dynamic shapes): the compiled decode path emits the same
tokens as eager decoding, and after a warm-up no KV-cache length, prompt length or draft depth makes it
recompile. Float64 tiny models, so that a different kernel's rounding never meets a near-tie."""
import os
import sys

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from mtp_edu import compile_for_decoding, generate, speculative_generate
from conftest import tiny_model

pytestmark = pytest.mark.skipif(os.name == "nt" or sys.platform == "win32", reason="torch.compile needs Linux or macOS")


@pytest.mark.parametrize("style", ["sequential", "linear"])
def test_compiled_decoding_is_exact_and_compiles_once_for_every_length(style):
    torch._dynamo.reset()
    counters.clear()
    eager, compiled = tiny_model(mtp_style=style), compile_for_decoding(tiny_model(mtp_style=style))
    # warm-up: prefill, steps with one new position and with several (rejections and full accepts)
    speculative_generate(compiled, [1, 2, 3, 4, 5], 24)
    generate(compiled, [1, 2, 3, 4, 5], 4)
    graphs = counters["stats"]["unique_graphs"]
    # the trunk and the module forward, each at most: empty cache, one new position, several
    # (static shapes would need one graph per cache length and hit torch's recompile limit)
    assert 2 <= graphs <= 6
    g = torch.Generator().manual_seed(5)
    with torch._dynamo.config.patch(error_on_recompile=True):      # any recompile now raises
        for length in (2, 9, 17):
            prompt = torch.randint(0, 37, (length,), generator=g).tolist()
            want = generate(eager, prompt, 20)
            assert generate(compiled, prompt, 20) == want
            for depth in (1, 2, 3):
                assert speculative_generate(compiled, prompt, 20, draft_depth=depth)[0] == want
    assert counters["stats"]["unique_graphs"] == graphs


def test_compile_for_decoding_is_idempotent():
    model = compile_for_decoding(tiny_model())
    trunk = model.trunk
    assert compile_for_decoding(model) is model and model.trunk is trunk     # not wrapped twice
