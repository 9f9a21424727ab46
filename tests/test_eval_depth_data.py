"""Ground-truth depth readers of the video-depth benchmarks: formats, layouts and bad files."""

import numpy as np
import PIL.Image
import pytest

from human3r_jax.evaluation import depth_data as dd


def write_dpt(path, depth, tag=202021.25, size=None):
    h, w = depth.shape
    width, height = size or (w, h)
    path.write_bytes(
        np.float32(tag).tobytes() + np.array([width, height], "<i4").tobytes() + depth.astype("<f4").tobytes()
    )
    return path


def test_png_depth_scaled_and_holes_invalid(tmp_path):
    raw = np.array([[0, 5000, 10000], [256, 65535, 2500]], np.uint16)
    PIL.Image.fromarray(raw).save(tmp_path / "d.png")
    depth = dd.read_png_depth(tmp_path / "d.png", 5000)
    assert depth.dtype == np.float64
    np.testing.assert_array_equal(depth, np.where(raw == 0, -1.0, raw / 5000.0))
    np.testing.assert_array_equal(dd.read_png_depth(tmp_path / "d.png", 256)[0, 1:], [5000 / 256, 10000 / 256])


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda p: PIL.Image.fromarray(np.full((4, 4), 200, np.uint8)).save(p), "not a 16-bit"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n truncated"), "cannot read"),
        (lambda p: None, "no such file"),
    ],
)
def test_bad_png_named(tmp_path, make, needle):
    make(tmp_path / "d.png")
    with pytest.raises(dd.DepthDataError, match=f"d.png: {needle}"):
        dd.read_png_depth(tmp_path / "d.png", 5000)


def test_sintel_dpt_round_trip_and_bad_headers(tmp_path):
    depth = np.random.default_rng(0).uniform(0.1, 80, (3, 5)).astype(np.float32)
    np.testing.assert_array_equal(dd.read_sintel_dpt(write_dpt(tmp_path / "a.dpt", depth)), depth)
    with pytest.raises(dd.DepthDataError, match="b.dpt: not a Sintel .dpt file \\(tag"):
        dd.read_sintel_dpt(write_dpt(tmp_path / "b.dpt", depth, tag=1.0))
    with pytest.raises(dd.DepthDataError, match="c.dpt: 60 bytes of depth, the header says 5000x5000"):
        dd.read_sintel_dpt(write_dpt(tmp_path / "c.dpt", depth, size=(5000, 5000)))
    with pytest.raises(dd.DepthDataError, match="d.dpt: bad size 0x3"):
        dd.read_sintel_dpt(write_dpt(tmp_path / "d.dpt", depth, size=(0, 3)))
    (tmp_path / "e.dpt").write_bytes(b"\x00" * 5)
    with pytest.raises(dd.DepthDataError, match="e.dpt: not a Sintel .dpt file"):
        dd.read_sintel_dpt(tmp_path / "e.dpt")


def test_layouts_group_sorted_files_by_sequence(tmp_path):
    for seq in dd.BONN_SEQUENCES:
        folder = tmp_path / "bonn" / f"rgbd_bonn_{seq}" / "depth_110"
        folder.mkdir(parents=True)
        for name in ("b.png", "a.png"):
            (folder / name).touch()
    bonn = dd.bonn_sequences(tmp_path / "bonn")
    assert list(bonn) == list(dd.BONN_SEQUENCES) and [p.name for p in bonn["crowd2"]] == ["a.png", "b.png"]
    with pytest.raises(dd.DepthDataError, match="rgbd_bonn_balloon2/depth_200: no such folder"):
        dd.bonn_sequences(tmp_path / "bonn", 200)

    kitti = tmp_path / "kitti" / "depth_selection" / "val_selection_cropped" / "groundtruth_depth_gathered"
    for drive in ("drive_2", "drive_1"):
        (kitti / drive).mkdir(parents=True)
        (kitti / drive / "0000000005.png").touch()
    assert list(dd.kitti_sequences(tmp_path / "kitti")) == ["drive_1", "drive_2"]
    with pytest.raises(dd.DepthDataError, match="groundtruth_depth_gathered: no such folder"):
        dd.kitti_sequences(tmp_path)

    depth = tmp_path / "sintel" / "training" / "depth"
    for seq in ("alley_1", "alley_2"):
        (depth / seq).mkdir(parents=True)
        (depth / seq / "frame_0001.dpt").touch()
    assert list(dd.sintel_sequences(tmp_path / "sintel")) == ["alley_1", "alley_2"]
    with pytest.raises(dd.DepthDataError, match="ambush_4: no such folder"):
        dd.sintel_sequences(tmp_path / "sintel", full=False)
    (depth / "empty").mkdir()
    with pytest.raises(dd.DepthDataError, match="empty: no \\*.dpt files"):
        dd.sintel_sequences(tmp_path / "sintel")
