"""The training loop shared by the trainers: device and AMP, data order, per-step randomness,
progress bar, TensorBoard, time budget, checkpoints that resume exactly.

Reproducibility contract: the data of step ``s`` are dataset items ``s*B .. s*B+B-1`` (datasets
map a *position* to an item, see ``data``), and the step's augmentation draws from a generator
seeded with ``step_seed(seed, s)``. Resuming from a training state at step ``s`` therefore replays
exactly what an uninterrupted run would do (bit-identical on CPU; CUDA kernels may add float
non-determinism unless ``deterministic: true``).

Under ``torchrun`` the same loop runs in every process with DistributedDataParallel (see
``distributed``): ``batch_size`` is per rank, step ``s`` covers the ``batch_size x world_size``
positions from ``s*batch_size*world_size`` (rank ``r`` the ``r``-th block), rank ``r`` draws its
augmentation from ``step_seed(rank_seed(seed, r), s)``, and only rank 0 writes logs and checkpoints.
Without torchrun nothing changes: the plain single-process loop above.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import math
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from ..extractor import resolve_device
from ..model import SMALL, SuperPointConfig, SuperPointNet
from ..weights import load_weights, save_checkpoint
from . import distributed
from .checkpoint import load_training_state, save_training_state
from .config import dump_config

log = logging.getLogger("superpoint_ros.training")

default_train_conf = {
    "seed": 0,
    "device": "auto",          # auto | cpu | cuda | cuda:N
    "amp": "bf16",             # bf16 | fp16 | none (autocast only on CUDA)
    "deterministic": False,    # cuDNN deterministic kernels (slower) for bit-exact CUDA resumes
    "model": "full",           # full | small | {encoder_channels, head_channels, descriptor_dim}
    "init_weights": None,      # checkpoint to start from (matching layers are copied)
    "batch_size": 32,
    "num_workers": 4,
    "lr": 1.0e-3,
    "max_steps": 1000,
    "max_minutes": None,       # stop (and save) when this much wall time has passed in this run
    "log_every": 25,
    "checkpoint_every": 500,
}


def build_model(spec) -> SuperPointNet:
    if spec in ("full", None):
        return SuperPointNet(SuperPointConfig())
    if spec == "small":
        return SuperPointNet(SMALL)
    if isinstance(spec, dict):
        return SuperPointNet(SuperPointConfig.from_dict(spec))
    raise ValueError(f"model must be 'full', 'small' or an architecture dict, got {spec!r}")


def init_from(model: SuperPointNet, path: Optional[str]) -> list:
    """Copy every tensor of a checkpoint whose name and shape match; returns the copied names."""
    if not path:
        return []
    _, state_dict, _ = load_weights(path)
    own = model.state_dict()
    copied = [k for k, v in state_dict.items() if k in own and own[k].shape == v.shape]
    model.load_state_dict({**own, **{k: state_dict[k] for k in copied}})
    return copied


def step_seed(seed: int, step: int) -> int:
    return (int(seed) * 1_000_003 + int(step) * 7919 + 12345) % (2 ** 63 - 1)


class PositionSampler(Sampler):
    """Yields positions ``start, start+1, ...`` (datasets turn a position into an item)."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop = int(start), int(stop)

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def _autocast(device: torch.device, amp: str):
    if device.type != "cuda" or amp == "none":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None:
        raise ValueError(f"amp must be bf16, fp16 or none, got {amp!r}")
    return torch.autocast("cuda", dtype=dtype)


class _Board:
    """TensorBoard writer if tensorboard is installed, otherwise a no-op with one warning."""

    def __init__(self, folder: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional (the train extra)

            self.writer = SummaryWriter(str(folder))
        except Exception as e:  # tensorboard missing: training must still run
            log.warning("TensorBoard logging disabled (%s)", e)
            self.writer = None

    def scalars(self, values: Dict[str, float], step: int) -> None:
        if self.writer:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer:
            self.writer.close()


class AutocastForward:
    """Calls the network under autocast and returns float32 outputs, so everything else in a
    training step (warps, augmentation, losses, point geometry) runs in full precision."""

    def __init__(self, model, device: torch.device, amp: str):
        self.model, self.device, self.amp = model, device, amp

    def __call__(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        with _autocast(self.device, self.amp):
            out = self.model(images)
        return {k: v.float() for k, v in out.items()}


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _start_group(conf: dict):
    """``(group, device)``: torchrun's process group and this rank's device, or today's single process."""
    if distributed.launched_by_torchrun():
        return distributed.setup(conf["device"])
    return distributed.Group(), resolve_device(conf["device"])


class SelectOutputs(torch.nn.Module):
    """The network, returning only the outputs a training step uses (all when ``keys`` is None).

    Why: DDP waits for a gradient of every parameter that an output depends on; an output left out
    of the loss (the descriptors in MagicPoint training) would make it wait forever.
    """

    def __init__(self, model: SuperPointNet, keys: Optional[Sequence[str]] = None):
        super().__init__()
        self.model, self.keys = model, None if keys is None else tuple(keys)

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = self.model(images)
        return out if self.keys is None else {k: out[k] for k in self.keys}


def _wrap_ddp(module: torch.nn.Module, device: torch.device):
    # static_graph: the same parameters get gradients every step, so DDP can plan its buckets once
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   static_graph=True)


def train(conf: dict, dataset, step_fn: Callable, out_dir, *, tool: str, provenance: dict,
          resume: bool = True, progress: bool = True, worker_init_fn=None,
          outputs: Optional[Sequence[str]] = None) -> dict:
    """Run (or resume) a training loop; returns a summary dict.

    ``step_fn(forward, batch, generator, conf) -> dict``, where ``forward(images)`` runs the network
    under autocast and returns float32 outputs (only the ``outputs`` named, if given: every output
    returned must contribute to the loss under DDP), returns ``{"loss": scalar tensor, ...}``
    (other entries are logged). Writes under ``out_dir``: ``config.yaml``, ``tensorboard/``,
    ``state.pt`` (resumable training state), ``model.pt`` (a superpoint_ros checkpoint).
    Under torchrun every rank calls this; rank 0 writes the files (``out_dir`` must then be on a
    file system that all ranks see, for resuming).
    """
    out = Path(out_dir)
    group, device = _start_group(conf)
    is_main = group.is_main
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
    if conf["deterministic"]:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        # (TF32 matmuls stay off: point geometry in the losses needs full float32)
    torch.manual_seed(conf["seed"])  # the same initial weights on every rank
    model = build_model(conf["model"])
    copied = init_from(model, conf["init_weights"])
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=conf["lr"])
    use_scaler = device.type == "cuda" and conf["amp"] == "fp16"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    state_path = out / "state.pt"
    start, wall_before = 0, 0.0
    if resume and state_path.is_file():
        payload = load_training_state(state_path, model=model, optimizer=optimizer, scaler=scaler)
        start, wall_before = int(payload["step"]), float(payload["wall_seconds"])
        if is_main:
            print(f"[{tool}] resuming from {state_path} at step {start}")
            saved_world = int(payload.get("world_size", 1))
            if saved_world != group.world_size:
                log.warning("%s was written by %d process(es), resumed by %d: from here on the data order "
                            "differs from an uninterrupted run", state_path, saved_world, group.world_size)
    trained = SelectOutputs(model, outputs)
    if group.distributed:
        starts = distributed.gather_objects(start)
        if len(set(starts)) > 1:
            raise RuntimeError(f"[{tool}] ranks found different training states in {out} (steps by rank: "
                               f"{starts}): the run folder must be on a file system shared by all nodes")
        if group.rank > 0:  # distinct global RNG streams per rank (rank 0 keeps a plain run's)
            distributed.seed_everything(step_seed(distributed.rank_seed(conf["seed"], group.rank), start))
        trained = _wrap_ddp(trained, device)
    if is_main:
        dump_config(conf, out / "config.yaml")
    max_steps = int(conf["max_steps"])
    batch_size = int(conf["batch_size"])  # per rank
    sampler = distributed.ShardedPositionSampler(start, max_steps, batch_size, group.rank, group.world_size)
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler,
        num_workers=int(conf["num_workers"]), drop_last=True, pin_memory=device.type == "cuda",
        worker_init_fn=worker_init_fn, persistent_workers=False,
        prefetch_factor=4 if int(conf["num_workers"]) > 0 else None)
    board = _Board(out / "tensorboard") if is_main else None
    budget = None if conf["max_minutes"] is None else float(conf["max_minutes"]) * 60
    distributed.barrier()  # all ranks start the clock together (rates per rank stay comparable)
    t0 = time.monotonic()
    step = start
    last_logs: Dict[str, float] = {}
    augmentation_seed = distributed.rank_seed(conf["seed"], group.rank)

    def save_state():
        extra = {"world_size": group.world_size} if group.distributed else {}
        save_training_state(state_path, model=model, optimizer=optimizer, scaler=scaler, step=step, conf=conf,
                            wall_seconds=wall_before + time.monotonic() - t0, **extra)

    forward = AutocastForward(trained, device, conf["amp"])
    bar = None
    if progress and is_main:
        bar = tqdm(total=max_steps, initial=start, desc=tool, unit="step", dynamic_ncols=True, mininterval=2.0)
    stopped_early = False
    # one generator, re-seeded per step (same numbers as a fresh one, without allocating it each time)
    generator = torch.Generator(device=device)
    data_wait = 0.0  # seconds the loop spent waiting for the DataLoader (high: data-bound)
    rates: list = []  # images/s of each rank over the last log interval
    interval_start, interval_step = time.monotonic(), start
    batches = iter(loader)
    while True:
        t_wait = time.monotonic()
        batch = next(batches, None)
        data_wait += time.monotonic() - t_wait
        if batch is None:
            break
        batch = to_device(batch, device)
        generator.manual_seed(step_seed(augmentation_seed, step))
        logs = step_fn(forward, batch, generator, conf)
        loss = logs["loss"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        step += 1
        # reading values synchronises with the GPU: only at log steps, so the host can queue ahead
        if step % int(conf["log_every"]) == 0 or step == max_steps:
            last_logs = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in logs.items()}
            last_logs = distributed.average_scalars(last_logs)  # the global batch's losses
            if not all(map(math.isfinite, last_logs.values())):
                raise FloatingPointError(f"[{tool}] non-finite loss at step {step}: {last_logs} "
                                         f"(the last saved state is {state_path})")
            now = time.monotonic()
            rates = distributed.gather_scalar(batch_size * (step - interval_step) / max(now - interval_start, 1e-9))
            interval_start, interval_step = now, step
            if board is not None:
                board.scalars({f"train/{k}": v for k, v in last_logs.items()}, step)
                board.scalars({"perf/data_wait_fraction": data_wait / max(now - t0, 1e-9),
                               "perf/images_per_s": sum(rates),
                               **{f"perf/images_per_s_rank{r}": v for r, v in enumerate(rates)}}, step)
            if bar is not None:
                bar.set_postfix({**{k: f"{v:.4g}" for k, v in last_logs.items()}, "img/s": f"{sum(rates):.1f}"})
        if bar is not None:
            bar.update(1)
        out_of_time = budget is not None and time.monotonic() - t0 > budget
        if budget is not None and group.distributed:
            out_of_time = distributed.any_rank(out_of_time)  # every rank stops at the same step
        if (step % int(conf["checkpoint_every"]) == 0 or out_of_time) and is_main:
            save_state()
        if out_of_time:
            stopped_early = True
            if is_main:
                print(f"\n[{tool}] time budget of {conf['max_minutes']} min reached at step {step}")
            break
    if bar is not None:
        bar.close()
    loop_time = max(time.monotonic() - t0, 1e-9)
    wall = wall_before + time.monotonic() - t0
    model.eval()
    model_path = out / "model.pt"
    if is_main:
        save_state()
        board.close()
        provenance = {**provenance, "tool": tool, "iterations": step, "batch_size": batch_size,
                      "wall_time_s": round(wall, 1), "device": str(device), "amp": conf["amp"],
                      "initialised_from": conf["init_weights"] if copied else None, "config": conf}
        if group.distributed:
            provenance.update(world_size=group.world_size, global_batch_size=batch_size * group.world_size)
        model_path = save_checkpoint(model_path, model, provenance)
    if group.distributed:  # drop the DDP wrapper (reference cycles) while its process group lives
        del forward, trained
        gc.collect()
    distributed.barrier()  # the files exist before any rank returns
    run_time = max(time.monotonic() - t0, 1e-9)
    all_rates = distributed.gather_scalar(batch_size * (step - start) / loop_time)  # whole run, each rank
    summary = {"steps": step, "stopped_early": stopped_early, "wall_time_s": wall, "last": last_logs,
               "model": str(model_path), "model_obj": model, "data_wait_fraction": data_wait / run_time,
               "images_per_s": sum(all_rates), "images_per_s_per_rank": all_rates, "world_size": group.world_size}
    if is_main:
        per_rank = ", ".join(f"{r:.1f}" for r in all_rates)
        print(f"[{tool}] {step} steps in {wall / 60:.1f} min ({(step - start) / run_time:.1f} steps/s, "
              f"{sum(all_rates):.1f} images/s on {group.world_size} process(es): [{per_rank}] per rank, "
              f"{100 * data_wait / run_time:.0f} % of rank 0's time waiting for data); model -> {model_path}")
    return summary


__all__ = ["AutocastForward", "SelectOutputs", "default_train_conf", "train", "resolve_device", "build_model",
           "init_from", "step_seed", "PositionSampler", "to_device"]
