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
