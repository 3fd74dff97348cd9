"""Training and homographic adaptation under torchrun (superpoint_ros.training.distributed).

The multi-process tests start the real entry points with ``python -m torch.distributed.run`` on
CPU: gloo backend, rendezvous on 127.0.0.1 (loopback only), tiny models and images, 2-3 steps.
"""
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import json
import numpy as np
import pytest
import torch

from superpoint_ros.training import adapt, distributed
from superpoint_ros.training import train_magicpoint as tm
from superpoint_ros.training import train_superpoint as ts
from superpoint_ros.training.config import load_config
from superpoint_ros.training.engine import build_model, train
from superpoint_ros.training.losses import descriptor_loss, detector_loss
from superpoint_ros.weights import load_model, save_checkpoint

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = {"encoder_channels": [8, 8, 16, 16], "head_channels": 32, "descriptor_dim": 16}


# torchrun's workers get OMP_NUM_THREADS=1 too
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, module: str, *args: str, timeout: float = 120) -> str:
    """Run ``module`` as ``nproc`` gloo ranks on this machine only; returns stdout+stderr."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", module, *args]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"torchrun failed ({result.returncode}):\n{output[-4000:]}"
    return output


# ------------------------------------------------------------------------------- single-process parts
def test_sharded_sampler_splits_each_global_batch_into_rank_blocks():
    plain = list(distributed.ShardedPositionSampler(2, 5, 3))
    assert plain == list(range(6, 15))  # one process: the plain run's positions
    ranks = [list(distributed.ShardedPositionSampler(1, 3, 2, r, 2)) for r in range(2)]
    assert ranks == [[4, 5, 8, 9], [6, 7, 10, 11]]
    # concatenating the ranks' blocks step by step gives one process's batches of 4
    combined = [p for step in range(2) for r in range(2) for p in ranks[r][2 * step:2 * step + 2]]
    assert combined == list(distributed.ShardedPositionSampler(1, 3, 4))
    assert len(distributed.ShardedPositionSampler(1, 3, 2, 1, 2)) == 4
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        distributed.ShardedPositionSampler(0, 1, 2, 2, 2)


def test_shards_are_disjoint_cover_everything_and_keep_global_indices():
    items = [f"im{k}" for k in range(7)]
    shards = [distributed.shard(items, r, 3) for r in range(3)]
    assert shards[1] == [(1, "im1"), (4, "im4")]
    flat = sorted(i for s in shards for i, _ in s)
    assert flat == list(range(7))
    assert distributed.shard(items, 0, 1) == list(enumerate(items))


def test_rank_seeds_keep_rank_zero_and_differ_elsewhere():
    assert distributed.rank_seed(5, 0) == 5
    seeds = {distributed.rank_seed(5, r) for r in range(64)}
    assert len(seeds) == 64 and all(0 <= s < 2 ** 63 for s in seeds)
    assert distributed.rank_seed(5, 1) == distributed.rank_seed(5, 1) != distributed.rank_seed(6, 1)


def test_without_torchrun_there_is_no_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    group, device = distributed.setup("cpu")
    assert group == distributed.Group() and group.is_main and not group.distributed
    assert device == torch.device("cpu") and not torch.distributed.is_initialized()
    total, count = torch.tensor(6.0), torch.tensor(0.0)
    assert distributed.global_mean(total, count) == 6.0  # max(count, 1), as the losses always did
    assert distributed.average_scalars({"a": 1.5}) == {"a": 1.5} and distributed.any_rank(True)


def test_bad_torchrun_environment_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(RuntimeError, match="inconsistent torchrun environment"):
        distributed.group_from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(RuntimeError, match="malformed torchrun environment"):
        distributed.group_from_env()


# ------------------------------------------------------------------------------------- training
def _labelled_folder(root: Path, count: int = 8):
    """``count`` 48x64 crops of a real photo with sparse labels: points at least 16 px apart, so no
    two share an 8x8 cell even after a warp (cells with 2+ points break ties with per-rank noise)."""
    from skimage import data

    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    photo = data.camera()
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(8, 64, 16), np.arange(8, 48, 16)), -1).reshape(-1, 2)
    for k in range(count):
        crop = cv2.resize(photo[40 * k:40 * k + 300, 50 * k:50 * k + 400], (64, 48), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(images / f"crop{k}.png"), crop)
        keep = rng.random(len(grid)) < 0.7
        np.save(labels / f"crop{k}.npy", (grid[keep] + rng.integers(-2, 3, (keep.sum(), 2))).astype(np.float32))
    return images, labels


# no photometric noise (it draws from the per-rank generator); mild warps keep points >= 12 px apart
DETERMINISTIC = ["photometric.probability=0", "homography.scale_min=0.8", "homography.max_angle_deg=10",
                 "homography.perspective=0.05", "homography.max_aspect_change=0.05"]


def _superpoint_overrides(batch_size: int, steps: int):
    return [f"model={TINY_MODEL}", f"batch_size={batch_size}", f"max_steps={steps}", "num_workers=0",
            "device=cpu", "log_every=1", "checkpoint_every=1", "max_points=32", "lr=0.001", *DETERMINISTIC]


def _assert_close_weights(a: dict, b: dict, atol: float):
    assert a.keys() == b.keys()
    worst = max((float((a[k] - b[k]).abs().max()), k) for k in a)
    assert worst[0] <= atol, f"largest weight difference {worst[0]:.3g} in {worst[1]}"


def test_two_ranks_train_like_one_process_with_the_combined_batch_and_resume(tmp_path):
    images, labels = _labelled_folder(tmp_path / "data")
    # one plain process, batch 4, 3 steps
    conf = load_config(ts.default_conf, None, _superpoint_overrides(4, 3))
    train(conf, ts.build_dataset(conf, images, labels), ts.superpoint_step, tmp_path / "single",
          tool="sp", provenance={"training_data": "test"}, progress=False)
    # two ranks, batch 2 each: a zero time budget stops the whole group after step 1 (the ranks
    # agree on when to stop), then a resumed run of the group goes on to step 3
    run = str(tmp_path / "ddp")
    cli = ["--images", str(images), "--labels", str(labels), "--out", run, "--set"]
    output = torchrun(2, "superpoint_ros.training.train_superpoint", *cli, *_superpoint_overrides(2, 3),
                      "--max-minutes", "0")
    assert output.count("time budget of 0.0 min reached at step 1") == 1  # printed by rank 0 only
    assert torch.load(Path(run) / "state.pt", weights_only=True)["step"] == 1
    output = torchrun(2, "superpoint_ros.training.train_superpoint", *cli, *_superpoint_overrides(2, 3))
    assert output.count("resuming from") == 1 and "at step 1" in output
    assert "images/s on 2 process(es)" in output

    single = torch.load(tmp_path / "single" / "state.pt", weights_only=True)
    ddp = torch.load(Path(run) / "state.pt", weights_only=True)
    assert single["step"] == ddp["step"] == 3 and ddp["world_size"] == 2
    _assert_close_weights(single["model"], ddp["model"], atol=2e-5)
    # the weights really moved (the comparison is not between two untouched initialisations)
    torch.manual_seed(0)
    initial = build_model(TINY_MODEL).state_dict()
    assert max(float((initial[k] - single["model"][k]).abs().max()) for k in initial) > 1e-3
    _, provenance = load_model(Path(run) / "model.pt")
    assert provenance["world_size"] == 2 and provenance["global_batch_size"] == 4 and provenance["iterations"] == 3
    events = sorted((Path(run) / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 2, "one TensorBoard file per run, written by rank 0 only"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(events[-1]))
    board.Reload()
    tags = set(board.Tags()["scalars"])
    assert {"perf/images_per_s", "perf/images_per_s_rank0", "perf/images_per_s_rank1", "train/descriptor"} <= tags
    rates = [board.Scalars(f"perf/images_per_s_rank{r}")[-1].value for r in range(2)]
    assert all(r > 0 for r in rates)
    assert board.Scalars("perf/images_per_s")[-1].value == pytest.approx(sum(rates), rel=1e-5)


def test_per_rank_means_would_differ_from_the_global_mean():
    """Why the losses use global_mean: with data-dependent counts, the mean of per-rank means is
    not the mean over the combined batch (so plain DDP averaging would train differently)."""
    g = torch.Generator().manual_seed(0)
    desc = torch.nn.functional.normalize(torch.randn(4, 8, 4, 5, generator=g), dim=1)
    shift = torch.eye(3, dtype=torch.float32).repeat(4, 1, 1)
    shift[:, 0, 2] = torch.tensor([0.0, 3.0, 9.0, 17.0])  # different overlap, so different positive counts
    whole = descriptor_loss(desc, desc.roll(1, 0), shift)
    halves = [descriptor_loss(desc[i:i + 2], desc.roll(1, 0)[i:i + 2], shift[i:i + 2]) for i in (0, 2)]
    assert abs(float(whole) - float(sum(halves) / 2)) > 1e-3
    keypoints = torch.zeros(2, 16, 16)
    keypoints[0, 3, 3] = 1
    assert detector_loss(torch.zeros(2, 65, 2, 2), keypoints).ndim == 0


def test_magicpoint_under_torchrun_one_rank_is_the_plain_run_and_two_ranks_skip_the_descriptor_head(tmp_path):
    """A 1-process group repeats the plain run bit for bit (rank 0 keeps the run seed). With 2 ranks
    the MagicPoint step, which leaves the descriptor head out of the loss, runs past DDP's bucket
    rebuild (step 2); the head stays untouched; outputs and the evaluation come from rank 0 once."""
    overrides = [f"model={TINY_MODEL}", "batch_size=2", "max_steps=3", "num_workers=0", "device=cpu",
                 "synthetic.height=32", "synthetic.width=40", "log_every=1", "checkpoint_every=1",
                 "eval.num_images=0"]
    conf = load_config(tm.default_conf, None, overrides)
    train(conf, tm.build_dataset(conf), tm.magicpoint_step, tmp_path / "plain", tool="mp",
          provenance={"training_data": "test"}, progress=False, outputs=("logits",))
    torchrun(1, "superpoint_ros.training.train_magicpoint", "--out", str(tmp_path / "one"), "--set", *overrides)
    plain = torch.load(tmp_path / "plain" / "state.pt", weights_only=True)["model"]
    one = torch.load(tmp_path / "one" / "state.pt", weights_only=True)["model"]
    _assert_close_weights(plain, one, atol=0.0)

    run = tmp_path / "two"
    output = torchrun(2, "superpoint_ros.training.train_magicpoint", "--out", str(run), "--set", *overrides,
                      "eval.num_images=4", "eval.offset=100000")
    assert output.count("images/s on 2 process(es)") == 1
    assert (run / "eval.json").is_file() and (run / "config.yaml").is_file()
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["step"] == 3 and state["world_size"] == 2
    torch.manual_seed(0)  # the run's seed: the same initial weights
    start = build_model(TINY_MODEL).state_dict()
    assert torch.equal(start["convDb.weight"], state["model"]["convDb.weight"])
    assert not torch.equal(start["convPb.weight"], state["model"]["convPb.weight"])
    assert not torch.equal(plain["convPb.weight"], state["model"]["convPb.weight"])


# ----------------------------------------------------------------------------------- adaptation
@pytest.fixture()
def tiny_checkpoint(tmp_path):
    torch.manual_seed(3)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, build_model(TINY_MODEL).eval(), {"training_data": "none (random init, tests only)"})
    return path


def _image_folder(root: Path, count: int = 5) -> Path:
    from skimage import data

    folder = root / "images"
    folder.mkdir(parents=True)
    photo = data.camera()
    for k in range(count):
        cv2.imwrite(str(folder / f"img{k}.png"), cv2.resize(photo[50 * k:50 * k + 256, 60 * k:60 * k + 320], (80, 64)))
    return folder


ADAPT_SET = ["num_homographies=4", "batch_size=4", "detection_threshold=0.0155", "max_points=40", "num_workers=0",
             "device=cpu"]


def test_sharded_adaptation_equals_one_process_and_resumes(tmp_path, tiny_checkpoint):
    folder = _image_folder(tmp_path)
    conf = load_config(adapt.default_conf, None, ADAPT_SET)
    model, _ = load_model(tiny_checkpoint)
    single = adapt.adapt_folder(model, folder, tmp_path / "single", conf, progress=False)
    assert single["labelled_now"] == 5
    # rank 0 of 2 labels its shard in a first run (as if the job had been stopped) ...
    out = tmp_path / "sharded"
    first = adapt.adapt_folder(model, folder, out, conf, progress=False, rank=0, world_size=2)
    assert first["labelled_now"] == 3 and sorted(p.name for p in out.glob("*.npy")) == [
        "img0.npy", "img2.npy", "img4.npy"]
    stamp = os.stat(out / "img0.npy").st_mtime_ns
    # ... then the whole group runs: rank 0 skips its finished images, rank 1 labels the rest
    torchrun(2, "superpoint_ros.training.adapt", "--weights", str(tiny_checkpoint), "--images", str(folder),
             "--out", str(out), "--set", *ADAPT_SET)
    assert os.stat(out / "img0.npy").st_mtime_ns == stamp
    summary = json.loads((out / "adapt_summary.json").read_text())
    assert summary["labelled_now"] == 2 and summary["remaining"] == 0 and summary["images"] == 5
    assert summary["world_size"] == 2 and len(summary["images_per_s_per_rank"]) == 2
    names = sorted(p.name for p in (tmp_path / "single").glob("*.npy"))
    assert names == sorted(p.name for p in out.glob("*.npy")) and len(names) == 5
    for name in names:
        a, b = np.load(tmp_path / "single" / name), np.load(out / name)
        assert len(a) > 3, "too few labels to compare"
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (NCCL)")
def test_torchrun_on_gpus_with_nccl_and_bf16(tmp_path):
    """The GPU path: cpu:gloo,cuda:nccl group, one GPU per rank, bf16 autocast (1 rank per GPU,
    at most 2). Compares nothing bitwise (cuDNN autotuning); checks it trains and logs per rank."""
    ranks = min(2, torch.cuda.device_count())
    overrides = [f"model={TINY_MODEL}", "batch_size=4", "max_steps=6", "num_workers=2", "device=cuda", "amp=bf16",
                 "synthetic.height=64", "synthetic.width=80", "log_every=2", "checkpoint_every=3",
                 "eval.num_images=0"]
    run = tmp_path / "gpu"
    output = torchrun(ranks, "superpoint_ros.training.train_magicpoint", "--out", str(run), "--set", *overrides,
                      timeout=300)
    assert f"images/s on {ranks} process(es)" in output
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["step"] == 6 and state["world_size"] == ranks
    _, provenance = load_model(run / "model.pt")
    assert provenance["device"] == "cuda:0" and provenance["global_batch_size"] == 4 * ranks


def test_synthetic_scenes_are_split_between_torchrun_processes(tmp_path, monkeypatch):
    """superpoint-synth under torchrun: each process writes every WORLD_SIZE-th scene (no process
    group needed); together they write exactly the files of one process."""
    from superpoint_ros.training import synthetic_shapes

    args = ["--num", "5", "--start", "10", "--set", "height=32", "width=40"]
    synthetic_shapes.main(["--out", str(tmp_path / "single"), *args])
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        synthetic_shapes.main(["--out", str(tmp_path / "split"), *args])
        if rank == 0:
            assert sorted(p.stem for p in (tmp_path / "split").glob("*.png")) == ["0000010", "0000012", "0000014"]
    single = sorted(p.name for p in (tmp_path / "single").iterdir())
    assert single == sorted(p.name for p in (tmp_path / "split").iterdir()) and len(single) == 10
    for name in single:
        assert (tmp_path / "single" / name).read_bytes() == (tmp_path / "split" / name).read_bytes(), name
