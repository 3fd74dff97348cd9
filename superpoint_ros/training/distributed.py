"""Multi-process training with PyTorch's own stack: ``torchrun`` + ``torch.distributed`` + DDP.

A tool started by ``torchrun`` finds ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous
``MASTER_ADDR``/``MASTER_PORT``) in its environment; ``setup`` then joins the process group
(NCCL for CUDA tensors plus gloo for small CPU control messages on GPUs, gloo alone on CPU) and
picks the rank's device (``cuda:LOCAL_RANK``). Without those variables everything here is a no-op
and a tool runs exactly as a plain single process.

Conventions used by the trainers (see ``engine``):

- ``batch_size`` is per rank; a step's global batch is ``batch_size x world_size`` consecutive
  dataset positions, rank ``r`` taking the ``r``-th contiguous block (``ShardedPositionSampler``).
- Loss terms that divide by a data-dependent count (valid cells, positive pairs) divide by the
  count summed over all ranks (``global_mean``), so DDP's averaged gradient is the gradient of the
  loss over the global batch, as one process with the combined batch would compute it.
- Per-step augmentation draws from ``rank_seed(seed, rank)``: rank 0 keeps the run seed (so a
  1-process group repeats a plain run), the other ranks get distinct seeds derived from it.
- Only rank 0 prints, writes TensorBoard, ``config.yaml``, ``state.pt`` and ``model.pt``.
"""
from __future__ import annotations

import datetime
import gc
import os
import random
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple, TypeVar

import numpy as np
import torch
import torch.distributed as dist

T = TypeVar("T")

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Group:
    """Where this process stands in the job. A plain run is ``Group()`` (rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        """True when started by torchrun (even with one process): collectives are available."""
        return dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def group_from_env() -> Group:
    """Rank and world size from torchrun's environment variables (``Group()`` without them)."""
    if not launched_by_torchrun():
        return Group()
    try:
        values = {name: int(os.environ[name]) for name in TORCHRUN_VARIABLES}
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", values["WORLD_SIZE"]))
    except ValueError as e:
        raise RuntimeError(f"malformed torchrun environment: {e}") from e
    group = Group(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"], local_world)
    if not (0 <= group.rank < group.world_size and 0 <= group.local_rank < group.local_world_size):
        raise RuntimeError(f"inconsistent torchrun environment: {group}")
    return group


def current() -> Group:
    """The group of an initialised process group, else ``Group()``."""
    if not (dist.is_available() and dist.is_initialized()):
        return Group()
    return group_from_env() if launched_by_torchrun() else Group(dist.get_rank(), dist.get_world_size())


def rank_device(name: str, group: Group) -> torch.device:
    """The device of this rank for a configured ``device`` (auto | cpu | cuda | cuda:N).

    Under torchrun, ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK`` (one GPU per process). An explicit
    ``cuda:N`` is refused when several processes share the machine: they would all use GPU N.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", group.local_rank)
        elif group.local_world_size > 1:
            raise RuntimeError(f"device {name!r} with {group.local_world_size} processes per machine: use "
                               "'cuda' or 'auto' (each process takes the GPU of its LOCAL_RANK)")
        if device.index >= torch.cuda.device_count():
            raise RuntimeError(f"rank {group.rank} wants {device} but this machine has "
                               f"{torch.cuda.device_count()} GPU(s): --nproc_per_node must not exceed it")
    return device


def setup(device_name: str, timeout_minutes: float = 30.0) -> Tuple[Group, torch.device]:
    """Join torchrun's process group (once) and return ``(group, device of this rank)``.

    Without torchrun: ``(Group(), device)`` and no process group, i.e. today's single process.
    """
    group = group_from_env()
    device = rank_device(device_name, group)
    if not launched_by_torchrun():
        return group, device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # NCCL for the gradients on GPUs; gloo for CPU tensors (time-budget votes, log gathering)
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes), **kwargs)
    return group, device


def shutdown() -> None:
    """Leave the process group (after a barrier, so no rank exits while rank 0 still writes)."""
    if dist.is_available() and dist.is_initialized():
        # free DDP wrappers (reference cycles) while their process group still exists: freed at
        # interpreter exit instead, they may abort the process ("terminate called ...")
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def rank_seed(seed: int, rank: int) -> int:
    """Seed of rank ``rank`` for a run seeded ``seed``: ``seed`` itself on rank 0, a distinct
    well-mixed 63-bit value on the others (so no two ranks draw the same augmentation)."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank), 9]).generate_state(1, np.uint64)[0] >> 1)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


class ShardedPositionSampler(torch.utils.data.Sampler):
    """This rank's dataset positions for steps ``start_step .. stop_step - 1``.

    Step ``s`` covers global positions ``s*G .. s*G + G - 1`` with ``G = batch_size * world_size``;
    rank ``r`` yields the block ``s*G + r*batch_size ..`` of ``batch_size`` of them. With one
    process this is ``range(start_step*B, stop_step*B)``, the plain run's order.
    """

    def __init__(self, start_step: int, stop_step: int, batch_size: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.start_step, self.stop_step = int(start_step), int(stop_step)
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)

    def __iter__(self):
        b, g = self.batch_size, self.batch_size * self.world_size
        for step in range(self.start_step, self.stop_step):
            first = step * g + self.rank * b
            yield from range(first, first + b)

    def __len__(self) -> int:
        return max(0, self.stop_step - self.start_step) * self.batch_size


def shard(items: Sequence[T], rank: int, world_size: int) -> List[Tuple[int, T]]:
    """``(index, item)`` of the items of rank ``rank``: every ``world_size``-th, from ``rank``.

    Indices refer to the whole sequence, so anything derived from them (the adaptation warps) is
    the same whichever rank handles the item, and the shards are disjoint and cover everything.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    return [(i, items[i]) for i in range(rank, len(items), world_size)]


def global_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``total / count`` such that DDP's gradient average is the global-batch mean.

    Single process: ``total / max(count, 1)``. In a group: ``total * W / max(sum_r count_r, 1)``,
    whose average over the W ranks is ``sum_r total_r / sum_r count_r``. The count carries no
    gradient; summing it is one tiny all-reduce (every rank calls this in the same order).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return total / count.clamp(min=1)
    count = count.detach().clone()
    dist.all_reduce(count)
    return total * dist.get_world_size() / count.clamp(min=1)


def average_scalars(values: Dict[str, float]) -> Dict[str, float]:
    """Mean of each scalar over the ranks (identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    keys = sorted(values)
    buffer = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(buffer)  # CPU tensor: goes through gloo
    buffer /= dist.get_world_size()
    return dict(zip(keys, buffer.tolist()))


def gather_scalar(value: float) -> List[float]:
    """``value`` of every rank, in rank order (``[value]`` in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [float(value)]
    buffer = [torch.zeros(1, dtype=torch.float64) for _ in range(dist.get_world_size())]
    dist.all_gather(buffer, torch.tensor([float(value)], dtype=torch.float64))
    return [float(b) for b in buffer]


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any (so all ranks stop at the same step)."""
    if not (dist.is_available() and dist.is_initialized()):
        return bool(flag)
    buffer = torch.tensor([int(bool(flag))], dtype=torch.int32)
    dist.all_reduce(buffer, op=dist.ReduceOp.MAX)
    return bool(buffer.item())


def gather_objects(obj) -> list:
    """Picklable ``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


__all__ = ["Group", "launched_by_torchrun", "group_from_env", "current", "rank_device", "setup", "shutdown",
           "barrier", "rank_seed", "seed_everything", "ShardedPositionSampler", "shard", "global_mean",
           "average_scalars", "gather_scalar", "any_rank", "gather_objects"]
