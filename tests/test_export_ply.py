"""The PLY export read back by plyfile and trimesh: binary little-endian, the fused cloud exactly as
`Reconstruction.points` gives it, and per frame every confident point of each frame."""

import numpy as np
import pytest
import trimesh
from fake_reconstruction import write_fake_reconstruction
from plyfile import PlyData

from human3r_jax.exporters import folder, ply


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    root = tmp_path_factory.mktemp("ply")
    write_fake_reconstruction(root / "rec")
    return folder.load(root / "rec")


def header(path) -> list[str]:
    raw = path.read_bytes()
    return raw[: raw.index(b"end_header\n")].decode("ascii").splitlines()


def read(path) -> tuple[np.ndarray, np.ndarray]:
    v = PlyData.read(str(path))["vertex"]
    return np.stack([v["x"], v["y"], v["z"]], 1), np.stack([v["red"], v["green"], v["blue"]], 1)


def test_fused_cloud(rec, tmp_path):
    dest = tmp_path / "cloud.ply"
    summary = ply.write(rec, dest, points_per_frame=1000, max_points=5000)  # small: the thinning is exercised
    pts = rec.points(1.5, 1000, 5000)
    assert 0 < len(pts["xyz"]) <= 5000 and summary == f"PLY point cloud: {len(pts['xyz']):,} points"
    lines = header(dest)
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    assert lines[2:4] == ["comment written by human3r-jax export", "comment " + ply.WORLD]
    assert [line for line in lines if line.startswith("property")] == [
        "property float x",
        "property float y",
        "property float z",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
    ]
    xyz, rgb = read(dest)
    assert xyz.dtype == np.float32 and rgb.dtype == np.uint8
    np.testing.assert_array_equal(xyz, pts["xyz"])
    np.testing.assert_array_equal(rgb, pts["rgb"])
    cloud = trimesh.load(dest)
    assert isinstance(cloud, trimesh.PointCloud)
    np.testing.assert_array_equal(cloud.vertices, pts["xyz"])
    np.testing.assert_array_equal(cloud.colors[:, :3], pts["rgb"])


def test_per_frame(rec, tmp_path):
    dest = tmp_path / "frames"
    summary = ply.write(rec, dest, per_frame=True, conf_threshold=2.0)
    assert sorted(p.name for p in dest.iterdir()) == [f"{i:06d}.ply" for i in range(rec.n_frames)]
    total = 0
    for i, f in enumerate(rec.frames()):
        keep = f["conf"] > 2.0
        assert header(dest / f"{i:06d}.ply")[1] == "format binary_little_endian 1.0"
        xyz, rgb = read(dest / f"{i:06d}.ply")
        np.testing.assert_array_equal(xyz, f["pts3d_world"][keep])
        np.testing.assert_array_equal(rgb, f["image"][keep])
        np.testing.assert_array_equal(trimesh.load(dest / f"{i:06d}.ply").vertices, f["pts3d_world"][keep])
        total += keep.sum()
    assert 0 < total < rec.n_frames * 48 * 64
    assert summary == f"PLY point clouds: {rec.n_frames} frames, {total:,} points"


def test_no_confident_points(rec, tmp_path):
    summary = ply.write(rec, tmp_path / "empty.ply", conf_threshold=10.0)
    assert summary == "PLY point cloud: 0 points"
    assert len(PlyData.read(str(tmp_path / "empty.ply"))["vertex"]) == 0
