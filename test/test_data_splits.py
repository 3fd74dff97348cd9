"""Training and evaluation photos never overlap."""
from superpoint_ros.data_splits import SKIMAGE_EVAL, SKIMAGE_TRAIN, scene_group, split_of
from superpoint_ros.evaluation import make_dataset
from superpoint_ros.training import data as training_data


def test_skimage_lists_are_disjoint_and_classified():
    assert not set(SKIMAGE_EVAL) & set(SKIMAGE_TRAIN)
    assert all(split_of(n) == "train" for n in SKIMAGE_TRAIN)
    assert all(split_of(n + ".png") == "eval" for n in SKIMAGE_EVAL)


def test_benchmark_images_and_scene_partners_stay_together():
    for name in ("graf1.png", "leuvenA.jpg", "boat3.ppm", "H1to3p.xml"):
        assert split_of(name) == "eval"
    for a, b in [("aloeL", "aloeR"), ("left01", "right07"), ("box", "box_in_scene"), ("rubberwhale1", "rubberwhale2"),
                 ("ela_original", "ela_modified"), ("imageTextN", "imageTextR")]:
        assert scene_group(a) == scene_group(b)
        assert split_of(a) == split_of(b)


def test_training_sources_exclude_evaluation_photos():
    names = {p.name.split(".")[0] for p in training_data.skimage_photos()}
    assert names and not names & set(SKIMAGE_EVAL)
    assert all(split_of(p.name.replace(".gz", "")) == "train" for p in training_data.opencv_doc_photos())


def test_evaluation_set_sources_are_eval_split():
    skimage_names = {"stereo_motorcycle": "motorcycle_left"}
    for name in make_dataset.SKIMAGE_PHOTOS:
        assert split_of(skimage_names.get(name, name)) == "eval"


def _photo_folder(tmp_path, names, manifest_rows=None):
    """A folder with these files (64x80 noise images; ``.txt`` ones as text) in a sub-folder and a manifest."""
    import numpy as np
    import cv2

    folder = tmp_path / "corpus"
    (folder / "set_a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in names:
        if name.endswith(".txt"):
            (folder / "set_a" / name).write_text("not a photo")
            continue
        cv2.imwrite(str(folder / "set_a" / name), rng.integers(0, 256, (64, 80), dtype=np.uint8))
    if manifest_rows is not None:
        lines = ["relpath\trepo\tcommit\tsource_path\tlicence"] + ["\t".join(r) for r in manifest_rows]
        (folder / "MANIFEST.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_folder_photo_split_keeps_evaluation_names_out_and_holds_out_a_validation_share():
    from superpoint_ros.data_splits import VALIDATION_PERCENT, folder_photo_split

    for name in ("astronaut.png", "graf_1.jpg", "wall3.png", "coffee.jpg"):
        assert folder_photo_split(name) == "eval"
    names = [f"photo_{k:05d}.jpg" for k in range(4000)]
    splits = [folder_photo_split(n) for n in names]
    assert set(splits) == {"train", "val"}
    assert abs(splits.count("val") / len(names) * 100 - VALIDATION_PERCENT) < 1.0
    # the split follows the file name, not the folder it is found in
    assert [folder_photo_split(f"/x/y/{n}") for n in names[:200]] == splits[:200]


def test_photo_records_read_the_manifest_and_the_crops_record_licences(tmp_path):
    import json

    from superpoint_ros.data_splits import folder_photo_split

    train_names = [n for n in (f"p{k:03d}.jpg" for k in range(60)) if folder_photo_split(n) == "train"][:3]
    val_name = next(n for n in (f"p{k:03d}.jpg" for k in range(400)) if folder_photo_split(n) == "val")
    names = train_names + [val_name, "astronaut.png", "notes.txt"]
    rows = [(f"images/set_a/{n}", "owner/repo", "abc123", f"src/{n}", "CC-BY-4.0") for n in train_names[:2]]
    folder = _photo_folder(tmp_path, names, rows)
    records = training_data.photo_records([folder, folder / "set_a"])  # the same photos twice count once
    by_name = {r["path"].split("/")[-1]: r for r in records}
    assert sorted(by_name) == sorted(names[:-1])  # txt is not a photo
    assert by_name["astronaut.png"]["split"] == "eval" and by_name[val_name]["split"] == "val"
    assert by_name[train_names[0]]["licence"] == "CC-BY-4.0" and by_name[train_names[0]]["repo"] == "owner/repo"
    assert by_name[train_names[2]]["licence"] == "unknown"

    out, val_out = tmp_path / "crops", tmp_path / "val"
    training_data.main(["--out", str(out), "--val-out", str(val_out), "--photos", str(folder), "--no-builtin",
                        "--height", "32", "--width", "40", "--crops-per-image", "2"])
    crops = sorted(p.name for p in out.glob("*.png"))
    assert crops == sorted(f"{n.split('.')[0]}_{k:03d}.png" for n in train_names for k in range(2))
    assert [p.name for p in val_out.glob("*.png")] == [f"{val_name.split('.')[0]}_000.png"]
    sources = json.loads((out / "SOURCES.json").read_text())
    assert {r["split"] for r in sources["photos"]} == {"train"}
    assert {(s["licence"], s["photos"]) for s in sources["licences"]} == {("CC-BY-4.0", 2), ("unknown", 1)}


def test_crops_refuse_evaluation_photos_and_clashing_names(tmp_path):
    import pytest

    folder = _photo_folder(tmp_path, ["astronaut.png", "a.jpg"])
    (folder / "set_b").mkdir()
    (folder / "set_b" / "a.png").write_bytes((folder / "set_a" / "a.jpg").read_bytes())
    with pytest.raises(ValueError, match="evaluation image"):
        training_data.write_training_crops([folder / "set_a" / "astronaut.png"], tmp_path / "c1", (32, 40), 1)
    with pytest.raises(ValueError, match="share the file name stem"):
        training_data.write_training_crops([folder / "set_a" / "a.jpg", folder / "set_b" / "a.png"],
                                           tmp_path / "c2", (32, 40), 1)
