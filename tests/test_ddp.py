"""Data parallelism by hand (mtp_edu.ddp): after `average_gradients` every process holds the same, averaged
gradient, also for a parameter that took no part in some process's loss (its gradient was None there)."""
import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mtp_edu import ddp

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _rank(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        model.weight.grad = torch.full_like(model.weight, float(rank + 1))      # 1 on rank 0, 2 on rank 1
        if rank == 0:
            model.bias.grad = torch.full_like(model.bias, 4.0)                  # rank 1: None, no part in its loss
        extra = torch.tensor([float(rank)])
        ddp.average_gradients(model, 2, [extra])
        with open(f"{out_dir}/{rank}.json", "w") as f:
            json.dump({"weight": model.weight.grad.flatten().tolist(), "bias": model.bias.grad.tolist(),
                       "extra": extra.tolist()}, f)
    finally:
        dist.destroy_process_group()


def test_two_processes_end_with_the_same_averaged_gradients(tmp_path):
    mp.spawn(_rank, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"{rank}.json").read_text())
        assert got["weight"] == [1.5] * 6                   # (1 + 2) / 2
        assert got["bias"] == [2.0, 2.0]                    # (4 + 0) / 2 on both ranks, the missing one included
        assert got["extra"] == [0.5]


def test_a_missing_gradient_is_filled_in_and_averaged_in_place(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = torch.nn.Linear(3, 2)
        model.weight.grad = torch.ones_like(model.weight)
        frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
        model.register_parameter("frozen", frozen)
        ddp.average_gradients(model, 1)
        assert torch.equal(model.bias.grad, torch.zeros(2))        # the tensor the optimizer will read
        assert torch.equal(model.weight.grad, torch.ones(2, 3)) and frozen.grad is None
    finally:
        dist.destroy_process_group()
