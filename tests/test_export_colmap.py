"""The COLMAP export read back by pycolmap (a reader we did not write): cameras, poses, points and their
observations equal the reconstruction's, the text and binary models agree, COLMAP's pixel convention
(centres at .5) holds under pycolmap's own projection, at the model and at the input resolution."""

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from fake_reconstruction import write_fake_reconstruction
from scipy.ndimage import map_coordinates

from human3r_jax.data.images import intrinsics_to_input, model_crop
from human3r_jax.exporters import colmap, folder

pycolmap = pytest.importorskip("pycolmap", reason="pycolmap reads the models back (the test extra)")

INPUT_SIZE = (96, 96)  # square frames: the model crop cuts rows off (y0 > 0), the case a plain resize gets wrong


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The fake reconstruction, what it holds, and its text and binary models at the model resolution."""
    root = tmp_path_factory.mktemp("colmap")
    written = write_fake_reconstruction(root / "rec", input_size=INPUT_SIZE)
    rec = folder.load(root / "rec")
    summaries = {kind: colmap.write(rec, root / kind, binary=kind == "bin") for kind in ("txt", "bin")}
    return {"rec": rec, "written": written, "root": root, "summaries": summaries}


@pytest.fixture(scope="module")
def input_model(model):
    """The model at the input resolution, with its images."""
    dest = model["root"] / "input"
    colmap.write(model["rec"], dest, input_resolution=True, images=True)
    return pycolmap.Reconstruction(dest), dest


def w2c(c2w: np.ndarray) -> np.ndarray:
    """[3, 4] world-to-camera of a c2w, inverted in float64."""
    return np.linalg.inv(np.asarray(c2w, np.float64))[:3]


def test_files_and_summary(model):
    assert sorted(p.name for p in (model["root"] / "txt").iterdir()) == ["cameras.txt", "images.txt", "points3D.txt"]
    assert sorted(p.name for p in (model["root"] / "bin").iterdir()) == ["cameras.bin", "images.bin", "points3D.bin"]
    n = len(model["rec"].points(1.5, 5000, 200_000)["xyz"])
    assert model["summaries"]["txt"].startswith(f"COLMAP model: 6 cameras, 6 images, {n:,} points (text")
    assert "(binary" in model["summaries"]["bin"]


@pytest.mark.parametrize("kind", ["txt", "bin"])
def test_model_equals_the_reconstruction(model, kind):
    r = pycolmap.Reconstruction(model["root"] / kind)
    rec, written = model["rec"], model["written"]
    assert (r.num_cameras(), r.num_images()) == (6, 6)
    for i in range(6):
        cam, image = r.cameras[i + 1], r.images[i + 1]
        k = written["K"][i].astype(np.float64)
        assert cam.model == pycolmap.CameraModelId.PINHOLE and (cam.width, cam.height) == (64, 48)
        np.testing.assert_allclose(cam.params, [k[0, 0], k[1, 1], k[0, 2] + 0.5, k[1, 2] + 0.5], rtol=1e-6)
        assert (image.camera_id, image.name) == (i + 1, f"{i:06d}.png")
        np.testing.assert_allclose(image.cam_from_world().matrix(), w2c(written["c2w"][i]), atol=1e-6)
    pts = rec.points(1.5, 5000, 200_000)
    ids = np.arange(1, len(pts["xyz"]) + 1)
    assert sorted(r.point3D_ids()) == ids.tolist()
    np.testing.assert_array_equal([r.points3D[j].xyz for j in ids], pts["xyz"])  # exactly: 17 digits
    np.testing.assert_array_equal([r.points3D[j].color for j in ids], pts["rgb"])
    assert all(r.points3D[j].error == -1 for j in ids)


def test_binary_and_text_models_are_identical(model):
    t, b = (pycolmap.Reconstruction(model["root"] / kind) for kind in ("txt", "bin"))
    for i in t.images:
        bc, tc = b.cameras[i], t.cameras[i]
        assert (bc.model, bc.width, bc.height) == (tc.model, tc.width, tc.height)
        np.testing.assert_array_equal(bc.params, tc.params)
        np.testing.assert_array_equal(b.images[i].cam_from_world().matrix(), t.images[i].cam_from_world().matrix())
        assert b.images[i].name == t.images[i].name
        tp, bp = t.images[i].points2D, b.images[i].points2D
        np.testing.assert_array_equal([p.xy for p in bp], [p.xy for p in tp])
        assert [p.point3D_id for p in bp] == [p.point3D_id for p in tp]
    assert sorted(b.point3D_ids()) == sorted(t.point3D_ids())
    for j in t.point3D_ids():
        tp, bp = t.points3D[j], b.points3D[j]
        np.testing.assert_array_equal(bp.xyz, tp.xyz)
        np.testing.assert_array_equal(bp.color, tp.color)
        assert (bp.error, bp.track.elements[0].image_id, bp.track.elements[0].point2D_idx) == (
            tp.error,
            tp.track.elements[0].image_id,
            tp.track.elements[0].point2D_idx,
        )


def test_pixel_centres_differ_by_half_a_pixel(model):
    """A world point projected by pycolmap's PINHOLE camera lands at our projection (K, centres at
    integers) + 0.5."""
    r, written = pycolmap.Reconstruction(model["root"] / "txt"), model["written"]
    world = np.random.default_rng(1).normal([0, 0, 4], 1, (20, 3))
    for i in range(6):
        c2w = np.asarray(written["c2w"][i], np.float64)
        cam = (world - c2w[:3, 3]) @ c2w[:3, :3]  # R^T (x - t)
        ours = cam @ written["K"][i].astype(np.float64).T
        ours = ours[:, :2] / ours[:, 2:]
        theirs = r.cameras[i + 1].img_from_cam(r.images[i + 1].cam_from_world() * world)
        np.testing.assert_allclose(theirs, ours + 0.5, atol=1e-3)


def observations(r, image_id: int) -> tuple[np.ndarray, np.ndarray]:
    """An image's 2-D observations [n, 2] and pycolmap's projections [n, 2] of their 3-D points."""
    image = r.images[image_id]
    obs = [p for p in image.points2D if p.has_point3D()]
    xyz = np.array([r.points3D[p.point3D_id].xyz for p in obs])
    return np.array([p.xy for p in obs]), r.cameras[image_id].img_from_cam(image.cam_from_world() * xyz)


def test_points_project_onto_their_observations(model):
    r = pycolmap.Reconstruction(model["root"] / "bin")
    pts = model["rec"].points(1.5, 5000, 200_000)
    for i in range(6):
        xy, projected = observations(r, i + 1)
        np.testing.assert_allclose(projected, xy, atol=1e-3)
        np.testing.assert_array_equal(xy, pts["pixel"][pts["frame"] == i] + 0.5)  # in cloud order
    for j in r.point3D_ids():  # each track's one element points back at its point
        e = r.points3D[j].track.elements
        assert len(e) == 1 and r.images[e[0].image_id].points2D[e[0].point2D_idx].point3D_id == j


def test_input_resolution_cameras_and_projections(model, input_model):
    r, _ = input_model
    written = model["written"]
    (sx, sy), (x0, y0), _ = model_crop(*INPUT_SIZE, 512)
    pts = model["rec"].points(1.5, 5000, 200_000)
    for i in range(6):
        cam = r.cameras[i + 1]
        k = intrinsics_to_input(written["K"][i], *INPUT_SIZE, 512)
        assert (cam.width, cam.height) == INPUT_SIZE
        np.testing.assert_allclose(cam.params, [k[0, 0], k[1, 1], k[0, 2] + 0.5, k[1, 2] + 0.5], rtol=1e-6)
        xy, projected = observations(r, i + 1)
        # model pixel centre x ↔ raw pixel centre u: (u + 0.5)·sx − 0.5 − x0 = x (model_crop); COLMAP: u + 0.5
        pixel = pts["pixel"][pts["frame"] == i]
        expected = (pixel + 0.5 + [x0, y0]) / [sx, sy]
        np.testing.assert_allclose(projected, expected, atol=1e-3)
        np.testing.assert_allclose(xy, expected, atol=1e-9)


def test_images_at_the_input_resolution_sit_where_the_cameras_say(model, input_model):
    """Each raw pixel of the PNG holds the model image sampled (bilinearly) at the model point that the
    pixel maps to: model pixel coordinate (u + 0.5)·sx − 0.5 − x0 (model_crop), ±1 for rounding."""
    r, dest = input_model
    (sx, sy), (x0, y0), _ = model_crop(*INPUT_SIZE, 512)
    h, w = model["rec"].hw
    v, u = np.mgrid[: INPUT_SIZE[1], : INPUT_SIZE[0]]
    x, y = (u + 0.5) * sx - 0.5 - x0, (v + 0.5) * sy - 0.5 - y0
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    assert inside.sum() > 50
    for i in range(6):
        png = PIL.Image.open(dest / "images" / f"{i:06d}.png")
        assert png.size == (r.cameras[i + 1].width, r.cameras[i + 1].height) == INPUT_SIZE
        ours = np.asarray(png).astype(int)
        image = model["rec"].frame(i)["image"].astype(float)
        for c in range(3):
            expected = map_coordinates(image[..., c], [y[inside], x[inside]], order=1)
            np.testing.assert_allclose(ours[..., c][inside], expected, atol=1.01)


def test_images_at_the_model_resolution_are_the_frames(model, tmp_path):
    rec = model["rec"]
    colmap.write(rec, tmp_path / "m", images=True, binary=True)
    r = pycolmap.Reconstruction(tmp_path / "m")
    for i in range(6):
        png = PIL.Image.open(tmp_path / "m" / "images" / r.images[i + 1].name)
        assert png.size == (r.cameras[i + 1].width, r.cameras[i + 1].height)
        np.testing.assert_array_equal(np.asarray(png), rec.frame(i)["image"])


def test_partial_reconstruction_and_no_input_size(tmp_path):
    write_fake_reconstruction(tmp_path / "rec", n_frames=4, complete=False)
    (tmp_path / "rec" / "frames" / "000003.npz").unlink()  # the run stopped before frame 3
    meta = json.loads((tmp_path / "rec" / "meta.json").read_text())
    del meta["input_size"]  # as written before input_size was recorded
    (tmp_path / "rec" / "meta.json").write_text(json.dumps(meta))
    rec = folder.load(tmp_path / "rec")
    summary = colmap.write(rec, tmp_path / "m")
    assert summary.startswith("COLMAP model: 3 cameras, 3 images")
    assert pycolmap.Reconstruction(tmp_path / "m").num_images() == 3
    with pytest.raises(folder.ExportError, match=r"meta\.json: no input_size.*--input-resolution"):
        colmap.write(rec, tmp_path / "in", input_resolution=True)
    assert not Path(tmp_path / "in").exists()
