"""The JSON Lines export: every line parses, its values are the frame files' (to the stated rounding), the
joints computed from the SMPL-X parameters equal those stored with --smplx, a reader tailing the file
while frames are appended only ever sees whole lines, and what cannot be exported is refused by name."""

import json
import math
import threading
import time

import jax
import numpy as np
import pytest
from fake_reconstruction import write_fake_reconstruction

from human3r_jax import export
from human3r_jax.exporters import folder, jsonl
from human3r_jax.geometry import rotvec_to_rotmat
from human3r_jax.models.smplx import SmplxError, load_smplx
from human3r_jax.npz import read_npz

ROUNDING = 5.01e-6  # relative: 6 significant digits
to_rotmat = jax.jit(rotvec_to_rotmat)  # [53, 3] → [53, 3, 3], compiled once


@pytest.fixture(scope="module")
def recs(tmp_path_factory, smplx_root):
    """The same fake reconstruction (seed 0) with the world joints stored, as --smplx writes them, and
    without; and the model."""
    model = load_smplx(smplx_root)
    root = tmp_path_factory.mktemp("jsonl")
    write_fake_reconstruction(root / "joints", smplx=model)
    write_fake_reconstruction(root / "params")
    return folder.load(root / "joints"), folder.load(root / "params"), model


def lines(path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def close(actual, expected, atol=0.0):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=ROUNDING, atol=atol)


def test_lines_hold_the_frame_files(recs, tmp_path):
    rec = recs[0]
    summary = jsonl.write(rec, tmp_path / "out.jsonl")
    records = lines(tmp_path / "out.jsonl")
    assert len(records) == rec.n_frames
    bodies = 0
    for i, (r, f) in enumerate(zip(records, rec.frames())):
        assert (r["frame"], r["frame_index"], r["name"]) == (i, int(f["frame_index"]), str(f["frame_name"]))
        assert r["time"] == pytest.approx(float(f["time"]), abs=5e-7)
        assert (r["camera"]["width"], r["camera"]["height"]) == (64, 48)
        close(r["camera"]["c2w"], f["c2w"])
        close(r["camera"]["K"], f["intrinsics"])
        assert [p["id"] for p in r["people"]] == f["smpl_id"].tolist()
        for n, p in enumerate(r["people"]):
            close(p["score"], f["smpl_score"][n])
            np.testing.assert_allclose(p["joints_world"], f["smpl_joints_world"][n], atol=1e-5)
            assert p["pelvis_world"] == p["joints_world"][0]
            s = p["smplx"]
            rotvecs = [s["global_orient_cam"], *s["body_pose"], *s["left_hand_pose"], *s["right_hand_pose"]]
            rotvecs = np.array([*rotvecs, s["jaw_pose"]], np.float32)
            assert rotvecs.shape == (53, 3)
            np.testing.assert_allclose(to_rotmat(rotvecs), f["smpl_rotmat"][n], atol=2e-5)
            close(s["betas"], f["smpl_shape"][n])
            close(s["expression"], f["smpl_expression"][n])
            close(s["head_transl_cam"], f["smpl_transl"][n])
        bodies += len(r["people"])
    assert bodies > rec.n_frames  # the second track joins half-way
    assert summary == f"JSON Lines: 6 frames, {bodies} bodies in all (127 joints each)"


def test_body_only(recs, tmp_path):
    rec = recs[0]
    jsonl.write(rec, tmp_path / "body.jsonl", body_only=True)
    for r, f in zip(lines(tmp_path / "body.jsonl"), rec.frames()):
        for n, p in enumerate(r["people"]):
            assert len(p["joints_world"]) == 22
            np.testing.assert_allclose(p["joints_world"], f["smpl_joints_world"][n, :22], atol=1e-5)


def test_joints_from_the_parameters_equal_the_stored_ones(recs, tmp_path):
    with_joints, params_only, model = recs
    summary = jsonl.write(params_only, tmp_path / "p.jsonl", smplx=model)
    assert summary == jsonl.write(with_joints, tmp_path / "j.jsonl")
    for computed, stored, f in zip(lines(tmp_path / "p.jsonl"), lines(tmp_path / "j.jsonl"), with_joints.frames()):
        assert len(computed["people"]) == len(stored["people"]) == len(f["smpl_joints_world"])
        for a, b, joints in zip(computed["people"], stored["people"], f["smpl_joints_world"]):
            np.testing.assert_allclose(a["joints_world"], joints, atol=1e-5)
            assert a["smplx"] == b["smplx"]


def test_missing_smplx_model(recs, tmp_path):
    with pytest.raises(folder.ExportError, match="joints need the SMPL-X model: pass --smplx PATH"):
        jsonl.write(recs[1], tmp_path / "x.jsonl")
    with pytest.raises(SmplxError, match="nowhere"):  # a path is loaded (and refused) only when needed
        jsonl.write(recs[1], tmp_path / "y.jsonl", smplx=tmp_path / "nowhere" / "SMPLX_NEUTRAL.npz")
    jsonl.write(recs[0], tmp_path / "z.jsonl", smplx=tmp_path / "nowhere" / "SMPLX_NEUTRAL.npz")


def test_reconstruction_without_people(tmp_path):
    """A CUT3R reconstruction: cameras only."""
    write_fake_reconstruction(tmp_path / "rec", n_frames=2)
    for path in sorted((tmp_path / "rec" / "frames").iterdir()):
        frame = read_npz(path, folder.ExportError)
        export.save_npz(path, {k: v for k, v in frame.items() if not k.startswith(("smpl_", "n_detected"))})
    rec = folder.load(tmp_path / "rec")
    assert not rec.humans
    summary = jsonl.write(rec, tmp_path / "c.jsonl")
    assert summary == "JSON Lines: 2 frames, cameras only (a reconstruction without people)"
    records = lines(tmp_path / "c.jsonl")
    assert [r["people"] for r in records] == [[], []]
    close(records[1]["camera"]["c2w"], rec.frame(1)["c2w"])


def test_values_that_are_not_finite_become_null(recs, tmp_path):
    frame = recs[0].frame(0)
    frame["c2w"] = frame["c2w"].copy()
    frame["c2w"][0, 3], frame["c2w"][1, 3] = np.nan, np.inf
    joints = frame["smpl_joints_world"].copy()
    joints[0, 0, 2] = -np.inf
    with jsonl.JsonLinesWriter(tmp_path / "n.jsonl") as out:
        out.add(jsonl.frame_record(frame, joints, False, index=0))
    (r,) = lines(tmp_path / "n.jsonl")
    assert (r["camera"]["c2w"][0][3], r["camera"]["c2w"][1][3]) == (None, None)
    assert r["people"][0]["pelvis_world"][2] is None and r["people"][0]["joints_world"][0][2] is None
    assert all(math.isfinite(v) for v in r["camera"]["c2w"][2])
    unknown = jsonl.frame_record(frame, None, False, index=0)["people"][0]
    assert unknown["joints_world"] is None and unknown["pelvis_world"] is None


def test_a_reader_tailing_the_file_sees_whole_lines(tmp_path):
    """A writer appends records of very different sizes (one larger than any buffer) with small pauses;
    a reader polling the file parses each complete line as it appears and keeps a partial one for later."""
    path = tmp_path / "live.jsonl"
    path.write_text("")
    records = [{"frame": i, "pad": "x" * (1 + (i * 7919) % 3000 + (300_000 if i == 17 else 0))} for i in range(40)]
    seen, errors = [], []

    def tail():
        deadline, pending = time.monotonic() + 20.0, b""
        with open(path, "rb") as f:
            while len(seen) < len(records) and time.monotonic() < deadline:
                pending += f.read()
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    try:
                        seen.append(json.loads(line))
                    except ValueError as e:
                        errors.append(e)
                time.sleep(0.0005)

    reader = threading.Thread(target=tail)
    reader.start()
    with jsonl.JsonLinesWriter(path) as out:
        for r in records:
            out.add(r)
            time.sleep(0.001)
    reader.join(timeout=30)
    assert not reader.is_alive() and not errors
    assert seen == records
    with jsonl.JsonLinesWriter(path) as out:  # opening again appends
        out.add({"frame": 40})
    assert [r["frame"] for r in lines(path)] == list(range(41))
