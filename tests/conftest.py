"""Shared fixtures: tiny models in float64 so that exactness tests never meet a rounding near-tie."""
import pytest
import torch

from mtp_edu import MTPConfig, MTPModel
from mtp_edu.config import MTP_STYLES


def tiny_config(**changes) -> MTPConfig:
    base = dict(vocab_size=37, d_model=32, n_layers=2, n_heads=4, max_seq_len=48, mtp_depth=3)
    base.update(changes)
    return MTPConfig(**base)


def tiny_model(**changes) -> MTPModel:
    model = MTPModel(tiny_config(**changes)).double().eval()
    # perturb the RMSNorm gains and the zero-initialised linear heads so every parameter matters
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 or name.endswith("proj.weight") and "mtp" in name and "eh_proj" not in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


@pytest.fixture(params=MTP_STYLES)
def style(request):
    return request.param
