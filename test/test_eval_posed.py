"""superpoint-eval-posed end to end on a posed sequence rendered here with known poses and K (a real
photo on a folded, two-plane surface, so the essential matrix is not degenerate), and on the
Strecha sets when /work/shared/data is present."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from superpoint_ros.evaluation import pose, posed
from superpoint_ros.evaluation.hpatches import resize_matrix

SIZE = (240, 320)
K = np.array([[280.0, 0.0, 159.5], [0.0, 280.0, 119.5], [0.0, 0.0, 1.0]])
# the development data: ../shared/data from a checkout of main, /work/shared/data from a worktree
REAL_POSED = next((d for d in (Path(__file__).resolve().parents[2] / "shared/data/real_eval/posed",
                               Path("/work/shared/data/real_eval/posed")) if d.is_dir()), None)


def camera_poses(count: int):
    """Camera->world ``(R_wc, C_w)``: moving right and a little down, turning slowly left."""
    return [(Rotation.from_euler("yx", [-2.5 * i, 0.8 * i], degrees=True).as_matrix(),
             np.array([0.3 * i, 0.05 * i, 0.0])) for i in range(count)]


def render(texture: np.ndarray, rotation: np.ndarray, centre: np.ndarray, K: np.ndarray, size) -> np.ndarray:
    """Grayscale view of the surface z = 5 + 0.5 |x| (world units; texture = world x, y at 60 px
    per unit), rendered at 2x and area-downsampled so the texture does not alias."""
    fine = (2 * size[0], 2 * size[1])
    K_fine = resize_matrix(size, fine) @ K
    v, u = np.mgrid[0:fine[0], 0:fine[1]].astype(np.float64)
    rays = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K_fine).T @ rotation.T
    # ray C + s d meets the planes z - 0.5 x = 5 and z + 0.5 x = 5; it enters the region behind
    # both (the solid behind the folded surface) at the larger s
    s = np.maximum((5 - centre[2] + 0.5 * centre[0]) / (rays[..., 2] - 0.5 * rays[..., 0]),
                   (5 - centre[2] - 0.5 * centre[0]) / (rays[..., 2] + 0.5 * rays[..., 0]))
    points = centre + s[..., None] * rays
    map_x = (points[..., 0] * 60 + texture.shape[1] / 2).astype(np.float32)
    map_y = (points[..., 1] * 60 + texture.shape[0] / 2).astype(np.float32)
    image = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def write_sequence(folder: Path, texture: np.ndarray, poses, with_listing: bool = False) -> Path:
    (folder / "rgb").mkdir(parents=True)
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for i, (rotation, centre) in enumerate(poses):
        cv2.imwrite(str(folder / "rgb" / f"{i:04d}.png"), render(texture, rotation, centre, K, SIZE))
        q = Rotation.from_matrix(rotation).as_quat()  # x y z w
        lines.append(f"{i}.000000 " + " ".join(f"{v:.9f}" for v in (*centre, *q)))
    (folder / "groundtruth.txt").write_text("\n".join(lines) + "\n")
    np.savetxt(folder / "K.txt", K, fmt="%.6f")
    if with_listing:
        (folder / "rgb.txt").write_text("# timestamp filename\n0.000000 rgb/0000.png\n2.000000 rgb/0002.png\n")
    return folder


@pytest.fixture(scope="module")
def texture():
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., 1])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, texture):
    return write_sequence(tmp_path_factory.mktemp("posed") / "folded", texture, camera_poses(4))


def test_rendered_frames_obey_the_ground_truth_geometry(rendered):
    """The renderer itself is right: a world point projects where the image shows it (check by
    projecting the surface's 3D points of frame 0 into frame 1 and comparing intensities)."""
    sequence = posed.load_posed_sequence(rendered)
    assert len(sequence.images) == 4 and sequence.images[0].shape == SIZE
    np.testing.assert_allclose(sequence.K, K)
    (r0, c0), (r1, c1) = sequence.poses[0], sequence.poses[1]
    v, u = np.mgrid[20:220:7, 20:300:7].reshape(2, -1).astype(np.float64)
    rays = np.column_stack([u, v, np.ones_like(u)]) @ np.linalg.inv(K).T @ r0.T
    s = np.maximum((5 - c0[2] + 0.5 * c0[0]) / (rays[:, 2] - 0.5 * rays[:, 0]),
                   (5 - c0[2] - 0.5 * c0[0]) / (rays[:, 2] + 0.5 * rays[:, 0]))
    cam1 = (c0 + s[:, None] * rays - c1) @ r1
    uv1 = cam1 @ K.T
    uv1 = uv1[:, :2] / uv1[:, 2:]
    inside = (uv1[:, 0] > 2) & (uv1[:, 0] < 317) & (uv1[:, 1] > 2) & (uv1[:, 1] < 237)
    assert inside.mean() > 0.7
    i0 = sequence.images[0][v[inside].astype(int), u[inside].astype(int)].astype(float)
    i1 = cv2.remap(sequence.images[1].astype(np.float32), uv1[inside, 0].astype(np.float32)[None],
                   uv1[inside, 1].astype(np.float32)[None], cv2.INTER_LINEAR)[0]
    assert np.abs(i0 - i1).mean() < 4  # resampling only
    assert np.abs(i0 - sequence.images[1][v[inside].astype(int), u[inside].astype(int)]).mean() > 10


def test_sift_recovers_the_known_poses(rendered):
    report = posed.run_posed_benchmark([rendered], ["sift", "orb"], None, {"gaps": (1, 2)}, show_progress=False)
    sift = report["results"]["sift"]
    assert sift["1"]["num_pairs"] == 3 and sift["2"]["num_pairs"] == 2 and sift["all"]["num_pairs"] == 5
    for pair in report["pairs"]["sift"]:
        assert pair["pose_estimated"]
        # measured: rotation <= 0.16 deg, translation direction <= 1.8 deg, epipolar 0.04-0.06 px
        assert pair["rotation_error_deg"] < 0.3 and pair["translation_direction_error_deg"] < 3.0, pair
        assert pair["median_inlier_epipolar_error_px"] < 0.5 and pair["inlier_ratio"] > 0.6
    assert sift["all"]["pose_accuracy"]["1"] >= 0.8 and sift["all"]["epipolar_precision"][1] > 0.6
    # epipolar precision grows with the threshold; every method gets the same pairs
    for method in ("sift", "orb"):
        precision = report["results"][method]["all"]["epipolar_precision"]
        assert precision[0] <= precision[1] <= precision[2]
        assert [p["pair"] for p in report["pairs"][method]] == [[0, 1], [1, 2], [2, 3], [0, 2], [1, 3]]


def test_wrong_ground_truth_shows_as_large_errors(tmp_path, texture):
    """The metrics really use groundtruth.txt: the same frames with the poses listed in reverse
    order give large pose and epipolar errors."""
    poses_list = camera_poses(3)
    folder = write_sequence(tmp_path / "seq", texture, poses_list)
    lines = (folder / "groundtruth.txt").read_text().splitlines()
    stamps = [line.split()[0] for line in lines[1:]]
    values = [line.split(None, 1)[1] for line in lines[1:]][::-1]
    (folder / "groundtruth.txt").write_text("\n".join(f"{s} {v}" for s, v in zip(stamps, values)) + "\n")
    report = posed.run_posed_benchmark([folder], ["sift"], None, {"gaps": (1,)}, show_progress=False)
    for pair in report["pairs"]["sift"]:
        assert pair["translation_direction_error_deg"] > 90  # the motion runs the other way
        assert pair["median_epipolar_error_px"] > 2


def test_resize_rescales_K_and_listing_selects_frames(tmp_path, texture):
    folder = write_sequence(tmp_path / "seq", texture, camera_poses(3), with_listing=True)
    sequence = posed.load_posed_sequence(folder, (120, 160))
    assert len(sequence.images) == 2 and sequence.images[0].shape == (120, 160)
    np.testing.assert_allclose(sequence.poses[1][1], camera_poses(3)[2][1], atol=1e-9)
    np.testing.assert_allclose(sequence.K, [[140, 0, 79.5], [0, 140, 59.5], [0, 0, 1]], atol=1e-9)


def test_inlier_mask_variant_agrees_with_essential_pose():
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-2, 2, 200), rng.uniform(-1.5, 1.5, 200), rng.uniform(3, 6, 200)])
    (r0, c0), (r1, c1) = camera_poses(2)
    uv = []
    for rotation, centre in ((r0, c0), (r1, c1)):
        cam = (points - centre) @ rotation @ K.T
        uv.append(cam[:, :2] / cam[:, 2:])
    uv[1][:20] = rng.uniform(0, 300, (20, 2))  # 10 % wrong matches
    R, t, inliers = pose.essential_pose_inliers(uv[0], uv[1], K)
    R2, t2 = pose.essential_pose(uv[0], uv[1], K)
    np.testing.assert_allclose(R, R2)
    np.testing.assert_allclose(t, t2)
    assert inliers.dtype == bool and inliers.shape == (200,)
    assert inliers[20:].mean() > 0.95 and inliers[:20].mean() < 0.3
    R_gt, t_gt = pose.relative_pose((r0, c0), (r1, c1))
    assert pose.rotation_angle_deg(R.T @ R_gt) < 0.05 and pose.direction_angle_deg(t, t_gt) < 0.5


def test_cli_with_several_superpoint_models_and_json(rendered, random_weights, tmp_path, capsys):
    out = tmp_path / "out"
    code = posed.main([str(rendered), "--no-default-model", "--weights", f"a={random_weights}",
                       "--weights", f"b={random_weights}", "--baselines", "sift", "--precision", "fp32",
                       "--gaps", "1,3", "--size", "120x160", "--top-k", "300", "-o", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    for row in ("| sequence | gap | method |", "| all | all | sift |", "| folded | 3 | b |"):
        assert row in printed
    report = json.loads((out / "results.json").read_text())
    assert set(report["results"]) == {"a", "b", "sift"}
    assert report["protocol"]["gaps"] == [1, 3] and report["protocol"]["size"] == [120, 160]
    assert report["protocol"]["precision"] == "fp32" and report["methods"]["a"]["conf"]["precision"] == "fp32"
    assert report["sequences"]["a"]["folded"]["all"]["num_pairs"] == 4
    # same weights, same precision: the same numbers
    assert report["results"]["a"] == report["results"]["b"]
    for key in ("inlier_ratio", "epipolar_precision", "median_rotation_error_deg", "pose_accuracy", "pose_failures"):
        assert key in report["results"]["sift"]["all"]
    assert report["results"]["sift"]["all"]["num_keypoints"] <= 300


def test_cli_errors(tmp_path, rendered, capsys):
    assert posed.main([str(tmp_path / "missing"), "--no-default-model"]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "noK").mkdir()
    (tmp_path / "noK" / "groundtruth.txt").write_text("0 0 0 0 0 0 0 1\n")
    assert posed.main([str(tmp_path / "noK"), "--no-default-model"]) == 2
    assert "K.txt missing" in capsys.readouterr().err
    assert posed.main([str(rendered), "--no-default-model", "--baselines", ""]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        posed.main([str(rendered), "--gaps", "0"])
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("K.txt", "rgb"):
        target = rendered / name
        (partial / name).symlink_to(target, target_is_directory=target.is_dir())
    (partial / "groundtruth.txt").write_text("0 0 0 0 0 0 0 1\n")  # frames 1..3 have no pose
    assert posed.main([str(partial), "--no-default-model", "--baselines", "orb", "--quiet"]) == 2
    assert "no ground-truth pose for frame 0001.png" in capsys.readouterr().err


@pytest.mark.slow
def test_strecha_sets_give_accurate_sift_poses(tmp_path):
    """The real posed sets load with the right conventions: SIFT's consecutive-frame poses agree with
    the ground truth to a fraction of a degree (skipped without /work/shared/data)."""
    folders = [Path(REAL_POSED or ".") / name for name in ("strecha_fountain-P11", "strecha_Herz-Jesus-P8")]
    if REAL_POSED is None or not all(f.is_dir() for f in folders):
        pytest.skip("needs /work/shared/data/real_eval/posed")
    report = posed.run_posed_benchmark(folders, ["sift"], None, {"gaps": (1,), "size": (256, 384)},
                                       show_progress=False)
    result = report["results"]["sift"]["1"]
    assert result["num_pairs"] == 10 + 7
    assert result["median_rotation_error_deg"] < 0.5 and result["median_translation_direction_error_deg"] < 2
    assert result["median_inlier_epipolar_error_px"] < 1.0
