"""The trainers learn, and resume bit-identically (superpoint_ros.training.{engine,train_*})."""
import copy

import cv2
import numpy as np
import pytest
import torch

from superpoint_ros.training import train_magicpoint as tm
from superpoint_ros.training import train_superpoint as ts
from superpoint_ros.training.config import ConfigError, load_config
from superpoint_ros.training.engine import AutocastForward, build_model, train
from superpoint_ros.weights import load_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_MODEL = {"encoder_channels": [8, 8, 16, 16], "head_channels": 32, "descriptor_dim": 16}


def _magicpoint_conf(**extra):
    overrides = [f"model={TINY_MODEL}", "batch_size=4", "num_workers=0", "synthetic.height=32",
                 "synthetic.width=40", "log_every=1", "checkpoint_every=2", "device=cpu", "eval.num_images=0"]
    return load_config(tm.default_conf, None, overrides + [f"{k}={v}" for k, v in extra.items()])


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory):
    """Six 32x40 crops of a real photo with corner labels (as superpoint-adapt would write)."""
    from skimage import data

    root = tmp_path_factory.mktemp("real")
    images, labels = root / "images", root / "labels"
    images.mkdir()
    labels.mkdir()
    photo = data.camera()
    for k in range(6):
        crop = cv2.resize(photo[60 * k:60 * k + 240, 100:420], (40, 32), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(images / f"crop{k}.png"), crop)
        corners = cv2.goodFeaturesToTrack(crop, 30, 0.01, 3)
        points = np.zeros((0, 2), np.float32) if corners is None else np.round(corners.reshape(-1, 2))
        np.save(labels / f"crop{k}.npy", points.astype(np.float32))
    return images, labels


def _superpoint_conf(**extra):
    overrides = [f"model={TINY_MODEL}", "batch_size=2", "num_workers=0", "log_every=1", "checkpoint_every=2",
                 "device=cpu", "max_points=64"]
    return load_config(ts.default_conf, None, overrides + [f"{k}={v}" for k, v in extra.items()])


def _fixed_batch(dataset, size):
    items = [dataset[i] for i in range(size)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def _losses_on_fixed_batch(step_fn, conf, batch, steps):
    torch.manual_seed(0)
    model = build_model(conf["model"])
    forward = AutocastForward(model, torch.device("cpu"), "none")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(steps):
        logs = step_fn(forward, batch, torch.Generator().manual_seed(0), conf)  # same augmentation each step
        optimizer.zero_grad()
        logs["loss"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in logs.items()})
    return history


def test_magicpoint_steps_on_a_fixed_batch_lower_the_loss():
    conf = _magicpoint_conf()
    batch = _fixed_batch(tm.build_dataset(conf), 4)
    history = _losses_on_fixed_batch(tm.magicpoint_step, conf, batch, 25)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"], [h["loss"] for h in history]


def test_superpoint_steps_on_a_fixed_batch_lower_both_losses(labelled_folder):
    images, labels = labelled_folder
    conf = _superpoint_conf()
    batch = _fixed_batch(ts.build_dataset(conf, images, labels), 2)
    history = _losses_on_fixed_batch(ts.superpoint_step, conf, batch, 40)
    assert history[-1]["detector"] < 0.7 * history[0]["detector"], [h["detector"] for h in history]
    assert history[-1]["descriptor"] < 0.9 * history[0]["descriptor"], [h["descriptor"] for h in history]


def _run(conf, dataset, step_fn, out, steps, tool):
    conf = copy.deepcopy(conf)
    conf["max_steps"] = steps
    return train(conf, dataset, step_fn, out, tool=tool, provenance={"training_data": "test"}, progress=False)


def _assert_identical_runs(straight, resumed):
    a = torch.load(straight / "state.pt", weights_only=True)
    b = torch.load(resumed / "state.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for key in sa:
            assert torch.equal(sa[key], sb[key])
    model_a, prov_a = load_model(straight / "model.pt")
    model_b, prov_b = load_model(resumed / "model.pt")
    assert prov_a["iterations"] == prov_b["iterations"] == 4


@pytest.mark.parametrize("workers", [0, 2])
def test_magicpoint_resume_is_bit_identical(tmp_path, workers):
    conf = _magicpoint_conf(num_workers=workers)
    dataset = tm.build_dataset(conf)
    _run(conf, dataset, tm.magicpoint_step, tmp_path / "straight", 4, "mp")
    _run(conf, dataset, tm.magicpoint_step, tmp_path / "resumed", 2, "mp")
    torch.manual_seed(1234)  # disturb the global RNGs: a resume must not depend on them
    np.random.seed(1234)
    summary = _run(conf, dataset, tm.magicpoint_step, tmp_path / "resumed", 4, "mp")
    assert summary["steps"] == 4
    _assert_identical_runs(tmp_path / "straight", tmp_path / "resumed")
    # and a different seed really trains differently
    _run({**conf, "seed": 1}, dataset, tm.magicpoint_step, tmp_path / "other", 4, "mp")
    other = torch.load(tmp_path / "other" / "state.pt", weights_only=True)["model"]
    straight = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)["model"]
    assert not torch.equal(other["convPb.weight"], straight["convPb.weight"])


def test_superpoint_resume_is_bit_identical(tmp_path, labelled_folder):
    images, labels = labelled_folder
    conf = _superpoint_conf()
    dataset = ts.build_dataset(conf, images, labels)
    _run(conf, dataset, ts.superpoint_step, tmp_path / "straight", 4, "sp")
    _run(conf, dataset, ts.superpoint_step, tmp_path / "resumed", 2, "sp")
    _run(conf, dataset, ts.superpoint_step, tmp_path / "resumed", 4, "sp")
    _assert_identical_runs(tmp_path / "straight", tmp_path / "resumed")


def test_training_writes_a_loadable_checkpoint_with_provenance_and_logs(tmp_path):
    conf = _magicpoint_conf()
    _run(conf, tm.build_dataset(conf), tm.magicpoint_step, tmp_path, 2, "mp")
    model, provenance = load_model(tmp_path / "model.pt")
    assert model.config.descriptor_dim == 16
    assert provenance["iterations"] == 2 and provenance["training_data"] == "test"
    assert provenance["config"]["batch_size"] == 4 and "wall_time_s" in provenance and "date" in provenance
    assert (tmp_path / "config.yaml").is_file()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*")), "TensorBoard log missing"


def test_init_weights_copies_the_magicpoint_detector(tmp_path):
    conf = _magicpoint_conf()
    _run(conf, tm.build_dataset(conf), tm.magicpoint_step, tmp_path / "mp", 2, "mp")
    from superpoint_ros.training.engine import init_from

    model = build_model(TINY_MODEL)
    copied = init_from(model, str(tmp_path / "mp" / "model.pt"))
    source, _ = load_model(tmp_path / "mp" / "model.pt")
    assert "convPb.weight" in copied and torch.equal(model.convPb.weight, source.convPb.weight)


def test_config_errors_are_specific(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'batchsize'"):
        load_config(tm.default_conf, None, ["batchsize=3"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tm.default_conf, str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tm.default_conf, str(bad))
    with pytest.raises(ConfigError, match="lr must be a number, got 'fast'"):
        load_config(tm.default_conf, None, ["lr=fast"])


def test_exponent_notation_and_integers_become_floats_where_floats_belong(tmp_path):
    """PyYAML reads ``1e-3`` as text (YAML 1.1); a user typing it means a number."""
    assert isinstance(tm.default_conf["lr"], float)
    conf = load_config(tm.default_conf, None, ["lr=1e-3"])
    assert conf["lr"] == 0.001 and isinstance(conf["lr"], float)
    f = tmp_path / "c.yaml"
    f.write_text("lr: 2E-4\n")
    assert load_config(tm.default_conf, str(f))["lr"] == 2e-4
    assert load_config(tm.default_conf, None, ["lr=1"])["lr"] == 1.0


def test_default_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "config" / "train"
    from superpoint_ros.training import adapt, synthetic_shapes

    for name, defaults in [("default_magicpoint", tm.default_conf), ("smoke_magicpoint", tm.default_conf),
                           ("default_superpoint", ts.default_conf), ("smoke_superpoint", ts.default_conf),
                           ("default_adapt", adapt.default_conf), ("smoke_adapt", adapt.default_conf),
                           ("synthetic_shapes", synthetic_shapes.default_conf)]:
        load_config(defaults, str(root / f"{name}.yaml"))



def test_labelled_images_of_another_size_are_a_clear_error(tmp_path, labelled_folder):
    import shutil

    images, labels = labelled_folder
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    cv2.imwrite(str(folder / "crop9.png"), np.zeros((40, 40), np.uint8))
    np.save(tmp_path / "crop9.npy", np.zeros((0, 2), np.float32))
    shutil.copy(tmp_path / "crop9.npy", labels / "crop9.npy")
    dataset = ts.build_dataset(_superpoint_conf(), folder, labels)
    index = [i for i in range(7) if dataset.dataset.items[dataset.dataset.order(0)[i]][0].name == "crop9.png"][0]
    with pytest.raises(ValueError, match="differs from"):
        dataset[index]
    (labels / "crop9.npy").unlink()


def _one_line_exit(capsys, main, argv):
    """Run a training CLI that must fail: exit status 2, one line on stderr, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "weights_only" not in err, err
    return err


def test_a_truncated_training_state_is_one_clear_line_and_exit_2(tmp_path, capsys):
    run = tmp_path / "run"
    tiny = ["model=" + str(TINY_MODEL).replace(" ", ""), "batch_size=2", "num_workers=0", "synthetic.height=32",
            "synthetic.width=40", "device=cpu", "eval.num_images=0", "max_steps=2", "checkpoint_every=1"]
    tm.main(["--out", str(run), "--no-eval", "--set", *tiny])
    capsys.readouterr()
    state = (run / "state.pt").read_bytes()
    (run / "state.pt").write_bytes(state[: len(state) // 2])  # a job killed while copying the run
    err = _one_line_exit(capsys, tm.main, ["--out", str(run), "--no-eval", "--set", *tiny, "max_steps=4"])
    assert err.startswith("superpoint-train-magicpoint: error: cannot resume:") and "state.pt" in err
    assert "truncated or corrupt" in err and "--no-resume" in err


def test_bad_init_weights_are_one_clear_line_and_exit_2(tmp_path, capsys, labelled_folder):
    images, labels = labelled_folder
    noise = tmp_path / "init.pt"
    noise.write_bytes(np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    err = _one_line_exit(capsys, ts.main, ["--images", str(images), "--labels", str(labels),
                                           "--out", str(tmp_path / "run"), "--set",
                                           "model=" + str(TINY_MODEL).replace(" ", ""), "num_workers=0",
                                           "device=cpu", f"init_weights={noise}"])
    assert err == f"superpoint-train: error: {noise}: not a PyTorch checkpoint"


def test_checkpoint_provenance_names_the_photos_and_licences_of_the_crops(tmp_path):
    import json

    from superpoint_ros.training.train_superpoint import source_provenance

    (tmp_path / "SOURCES.json").write_text(json.dumps({"photos": [
        {"path": "/data/a.jpg", "repo": "o/r", "commit": "c", "licence": "CC-BY-4.0"},
        {"path": "/data/b.jpg", "repo": "o/s", "commit": "d", "licence": "unknown"}]}))
    prov = source_provenance(tmp_path)
    assert prov["training_sources"] == ["/data/a.jpg", "/data/b.jpg"]
    assert {r["licence"] for r in prov["training_licences"]} == {"CC-BY-4.0", "unknown"}
    # a partly labelled folder: only the photos of the labelled crops are named
    prov = source_provenance(tmp_path, [tmp_path / "b_000.png", tmp_path / "b_001.png"])
    assert prov["training_sources"] == ["/data/b.jpg"]
    assert prov["training_licences"] == [{"repo": "o/s", "commit": "d", "licence": "unknown", "photos": 1}]
    (tmp_path / "SOURCES.json").unlink()
    (tmp_path / "SOURCES.txt").write_text("/data/with space.jpg\n/data/c.png\n")
    assert source_provenance(tmp_path)["training_sources"] == ["/data/with space.jpg", "/data/c.png"]
