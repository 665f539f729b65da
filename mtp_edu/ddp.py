"""Data parallelism under torchrun, by hand: join the process group, average gradients after backward.

Started under `torchrun --nproc_per_node N`, `setup` reads WORLD_SIZE/RANK, joins a process group
(gloo on CPU, nccl on CUDA) and picks this rank's device; a plain start is rank 0 of 1.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .machine import pick_device


def setup(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)            # a device that is not here is an error before any work
    if world == 1:
        return 0, 1, device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Give every process rank 0's weights."""
    for p in model.parameters():
        dist.broadcast(p.detach(), src=0)


def all_reduce_mean(tensors: list[torch.Tensor], world: int) -> None:
    """Average tensors across processes in place, as one flat buffer.

    This is what DistributedDataParallel does with gradients (bucketed and overlapped with the
    backward pass there); doing it by hand after backward lets the memory-efficient loss, which
    calls backward once per depth, run unchanged under torchrun.
    """
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def average_gradients(model: torch.nn.Module, world: int, extra: list[torch.Tensor] = ()) -> None:
    """Give every process the mean gradient of every parameter (and the mean of each `extra` tensor).

    A parameter that took no part in this process's loss has no gradient (None); it gets a zero
    gradient first, so that it joins the average like on every other process and the optimizer
    updates it the same way everywhere.
    """
    for p in model.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)
    all_reduce_mean([p.grad for p in model.parameters() if p.requires_grad] + list(extra), world)


def finish(world: int) -> None:
    """Wait for every process, then leave the process group (nothing to do for one process)."""
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
