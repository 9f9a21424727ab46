"""exporters/tracks.py (each track's skeleton and world joints) and exporters/bvh.py: the files parsed by
bvhio, a reader written elsewhere, and its forward kinematics compared with the SMPL-X bodies."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from fake_reconstruction import write_fake_reconstruction

from human3r_jax.export import save_npz
from human3r_jax.exporters import bvh, folder
from human3r_jax.exporters.folder import ExportError
from human3r_jax.exporters.tracks import JOINT_NAMES, Y_UP, gather, track_skeleton, track_world_joints
from human3r_jax.models.smplx import bodies_in_camera, load_smplx, to_world

with warnings.catch_warnings():
    warnings.simplefilter("ignore", PendingDeprecationWarning)  # bvhio imports PyGLM the old way
    bvhio = pytest.importorskip("bvhio", reason="bvhio (a BVH reader to check the files with) is not installed")

N_FRAMES, FPS = 6, 10.0  # the fake's frame files are input frames 0, 2, 4, …: 0.2 s apart
TRACKS = {3: range(N_FRAMES), 8: (1, 2, 4)}  # track 8 is missing from frame 3, between appearances
TOL_JOINTS_M = 1e-5  # float64 skeleton against SMPL-X in float32
TOL_BVH_M = 1e-4  # the BVH's 6 decimals and bvhio's float32 arithmetic


@pytest.fixture(scope="module")
def model(smplx_root):
    return load_smplx(smplx_root / "smplx" / "SMPLX_NEUTRAL.npz")


@pytest.fixture(scope="module")
def data(tmp_path_factory, model):
    """(truth, rec, the tracks' world joints by forward kinematics, the BVH folders in m, cm and body-only)."""
    tmp = tmp_path_factory.mktemp("bvh")
    truth = write_fake_reconstruction(tmp / "rec", n_frames=N_FRAMES, tracks=TRACKS, fps=FPS)
    rec = folder.load(tmp / "rec")
    seq = gather(rec)
    world = {tid: track_world_joints(track_skeleton(model, t), t) for tid, t in seq.tracks.items()}
    out = {}
    for name, options in (("m", {}), ("cm", {"units": "cm"}), ("body", {"body_only": True})):
        summary = bvh.write(rec, tmp / name, smplx=model, **options)
        assert summary.startswith("BVH: 2 people")
        out[name] = tmp / name
    return truth, rec, world, out


def smplx_world_joints(truth, model) -> dict[int, np.ndarray]:
    """Per track id [F_t, 55, 3]: the skeleton joints of `to_world(bodies_in_camera(...))`, one batched call."""
    people = truth["people"]
    rows = [(tid, i) for tid, p in people.items() for i in p["frames"]]
    body = bodies_in_camera(
        model,
        np.stack([people[t]["betas"] for t, _ in rows]),
        np.stack([people[t]["expression"] for t, _ in rows]),
        np.stack([people[t]["rotmats"][i] for t, i in rows]),
        np.stack([people[t]["transl"][i] for t, i in rows]),
    )
    joints = np.asarray(to_world(body, truth["c2w"][[i for _, i in rows]]).joints[:, :55], np.float64)
    return {tid: joints[[n for n, (t, _) in enumerate(rows) if t == tid]] for tid in people}


def bvh_world_positions(path) -> tuple[list[str], np.ndarray]:
    """bvhio's own forward kinematics: joint names in file order and their world positions [frames, J, 3]."""
    root = bvhio.readAsHierarchy(str(path))
    layout = root.layout()
    frames = len(root.Keyframes)
    positions = np.zeros((frames, len(layout), 3))
    for f in range(frames):
        root.loadPose(f, recursive=True)
        positions[f] = [list(joint.PositionWorld) for joint, _, _ in layout]
    return [joint.Name for joint, _, _ in layout], positions


def held_frames(frames) -> np.ndarray:
    """For each frame from the first appearance to the last: the index of the last appearance at or before it."""
    frames = np.asarray(frames)
    return np.searchsorted(frames, np.arange(frames[0], frames[-1] + 1), side="right") - 1


# ---------------------------------------------------------------- tracks


def test_gather_and_track_world_joints_match_smplx(data, model):
    truth, rec, world, _ = data
    assert len(JOINT_NAMES) == len(set(JOINT_NAMES)) == 55
    seq = gather(rec)
    assert list(seq.tracks) == sorted(TRACKS)
    reference = smplx_world_joints(truth, model)
    for tid, frames in TRACKS.items():
        track = seq.tracks[tid]
        assert list(track.index) == list(frames)
        np.testing.assert_array_equal(track.betas, np.tile(truth["people"][tid]["betas"], (len(frames), 1)))
        np.testing.assert_allclose(world[tid], reference[tid], atol=TOL_JOINTS_M, rtol=0)
        head = np.einsum("fij,fj->fi", track.c2w[:, :3, :3], track.transl) + track.c2w[:, :3, 3]
        np.testing.assert_allclose(world[tid][:, 15], head, atol=1e-9)  # the head lands on smpl_transl


# ---------------------------------------------------------------- BVH


def test_bvhio_parses_every_file(data):
    _, _, _, out = data
    assert sorted(p.name for p in out["m"].iterdir()) == ["person_3.bvh", "person_8.bvh"]
    for tid, frames in TRACKS.items():
        parsed = bvhio.readAsBvh(str(out["m"] / f"person_{tid}.bvh"))
        names = [joint.Name for joint, _, _ in parsed.Root.layout()]
        assert sorted(names) == sorted(JOINT_NAMES) and names[0] == "pelvis"
        assert parsed.FrameCount == frames[-1] - frames[0] + 1
        assert parsed.FrameTime == pytest.approx(2 / FPS)
        assert parsed.Root.Channels == ["Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation"]


def test_bvh_forward_kinematics_reproduces_the_world_joints(data):
    """Every frame of every track, missing frames holding the last pose; world frame Y-up (180° about x)."""
    _, _, world, out = data
    for tid, frames in TRACKS.items():
        names, positions = bvh_world_positions(out["m"] / f"person_{tid}.bvh")
        expected = world[tid][held_frames(frames)][:, [JOINT_NAMES.index(n) for n in names]] @ Y_UP.T
        np.testing.assert_allclose(positions, expected, atol=TOL_BVH_M, rtol=0)


def test_units_cm_scale_by_100(data):
    _, _, _, out = data
    for tid in TRACKS:
        m, cm = (bvhio.readAsBvh(str(out[u] / f"person_{tid}.bvh")) for u in ("m", "cm"))
        for (jm, _, _), (jc, _, _) in zip(m.Root.layout(), cm.Root.layout()):
            np.testing.assert_allclose(np.array(jc.Offset), 100 * np.array(jm.Offset), atol=1e-4)
        for km, kc in zip(m.Root.Keyframes, cm.Root.Keyframes):
            np.testing.assert_allclose(np.array(kc.Position), 100 * np.array(km.Position), atol=1e-4)
            np.testing.assert_allclose(np.array(kc.Rotation), np.array(km.Rotation), atol=1e-6)
        _, positions = bvh_world_positions(out["cm"] / f"person_{tid}.bvh")
        _, metres = bvh_world_positions(out["m"] / f"person_{tid}.bvh")
        np.testing.assert_allclose(positions / 100, metres, atol=TOL_BVH_M)


def test_body_only_writes_the_22_body_joints(data):
    _, _, world, out = data
    for tid, frames in TRACKS.items():
        names, positions = bvh_world_positions(out["body"] / f"person_{tid}.bvh")
        assert sorted(names) == sorted(JOINT_NAMES[:22])
        expected = world[tid][held_frames(frames)][:, [JOINT_NAMES.index(n) for n in names]] @ Y_UP.T
        np.testing.assert_allclose(positions, expected, atol=TOL_BVH_M, rtol=0)


def test_euler_zxy_recomposes_the_rotation():
    rng = np.random.default_rng(0)
    angles = np.radians(rng.uniform(-180, 180, (200, 3)))
    angles[:20, 1] = np.pi / 2 * rng.choice([-1, 1], 20)  # gimbal lock: x = ±90°
    rz, rx, ry = (_axis_rotation(axis, angles[:, n]) for n, axis in enumerate((2, 0, 1)))
    r = rz @ rx @ ry
    z, x, y = np.radians(bvh.euler_zxy(r)).T
    np.testing.assert_allclose(_axis_rotation(2, z) @ _axis_rotation(0, x) @ _axis_rotation(1, y), r, atol=1e-9)


def _axis_rotation(axis: int, angle: np.ndarray) -> np.ndarray:
    """[n, 3, 3] rotations by `angle` about coordinate axis `axis`."""
    c, s = np.cos(angle), np.sin(angle)
    i, j = (axis + 1) % 3, (axis + 2) % 3
    r = np.tile(np.eye(3), (len(angle), 1, 1))
    r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j] = c, -s, s, c
    return r


# ---------------------------------------------------------------- bad input


def test_missing_smplx_and_bad_units_are_refused(data, tmp_path):
    rec = data[1]
    with pytest.raises(ExportError, match=r"need the SMPL-X model: pass --smplx PATH"):
        bvh.write(rec, tmp_path / "out")
    with pytest.raises(ExportError, match=r"--units: 'mm'"):
        bvh.write(rec, tmp_path / "out", smplx="unused", units="mm")
    assert not (tmp_path / "out").exists()


def test_no_people_to_export(tmp_path, model):
    write_fake_reconstruction(tmp_path / "empty", n_frames=2, tracks={})  # Human3R, nobody detected
    with pytest.raises(ExportError, match="no people to export"):
        bvh.write(folder.load(tmp_path / "empty"), tmp_path / "out", smplx=model)
    write_fake_reconstruction(tmp_path / "cut3r", n_frames=2, tracks={})
    for f in sorted((tmp_path / "cut3r" / "frames").glob("*.npz")):  # CUT3R: no person fields at all
        with np.load(f) as z:
            save_npz(f, {k: z[k] for k in z.files if not k.startswith(("smpl_", "n_detected"))})
    with pytest.raises(ExportError, match="no people to export"):
        bvh.write(folder.load(tmp_path / "cut3r"), tmp_path / "out")
    assert not (tmp_path / "out").exists()
