"""`human3r-jax parity` on the shared fixtures made by the official PyTorch code.

Tolerance: relative L2 error ≤ 1e-4 for every output and intermediate (the fixtures' own
float32-vs-float64 noise is ~1e-5); the linear head masks pixels with |raw z| < 1e-5 (sign flips).
"""

import numpy as np
import pytest
from conftest import shared_path

from human3r_jax.parity import FixtureError, Report, Row, run_fixture


@pytest.mark.parametrize(
    "name,expect",
    [
        ("cut3r_tiny", {"dpt_self_raw", "enc_block1", "dec_state_l4", "post_pts3d_world", "state_out"}),
        ("cut3r_linear_tiny", {"lin_self_raw", "lin_cross_tokens", "final_transform_out", "post_c2w"}),
    ],
)
def test_fixture_parity(name, expect):
    report = run_fixture(shared_path("fixtures", name))
    print(report.table())
    names = {r.name for r in report.rows}
    assert expect <= names
    assert not report.skipped, report.skipped
    assert report.ok, report.table()
    assert max(r.rel for r in report.rows) < 2e-5  # well inside the tolerance: float32 noise only


def test_human3r_fixture_parity(smplx_root):
    """Every stage, human counts and ids on all views (both reset duplicates), TTT3R gates, and the
    demo's bodies in camera and world frames with the fixture's synthetic SMPL-X model."""
    report = run_fixture(shared_path("fixtures", "human3r_tiny"), smplx_path=smplx_root)
    print(report.table())
    rows = {r.name: r for r in report.rows}
    for name in (
        "n_humans",
        "smpl_id",
        "post_smpl_id",
        "ttt3r_beta",
        "dino_tokens",
        "human_prompt",
        "smpl_rotmat",
        "smpl_transl",
        "msk",
        "post_smpl_verts_world",
        "post_smpl_joints_cam",
        "smplx_faces",
        "post_c2w",
    ):
        assert name in rows, name
    assert rows["n_humans"].rel == 0 and rows["smpl_id"].rel == 0 and rows["post_smpl_id"].rel == 0
    # only the per-layer TTT3R logits are not reproduced (their mean, the gate β, is compared)
    assert all(k.startswith("ttt3r_logits_l") for k in report.skipped), report.skipped
    assert report.ok, report.table()
    assert max(r.rel for r in report.rows) < 2e-5


def test_report_names_the_first_departing_stage():
    rows = [Row("enc_out", 1e-6, 0, 1e-4), Row("dec_img_l2", 3e-3, 0, 1e-4), Row("pts3d_in_self_view", 1e-2, 0, 1e-4)]
    report = Report("x", rows, [], [])
    assert not report.ok and report.first_failure().name == "dec_img_l2"
    assert "FAIL (first departure: dec_img_l2)" in report.table()


def test_fixture_folder_errors(tmp_path):
    with pytest.raises(FixtureError, match="not a fixture folder"):
        run_fixture(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FixtureError, match="missing checkpoint.pth"):
        run_fixture(tmp_path)


def test_a_wrong_model_fails_parity(tmp_path):
    """The harness can fail: the same fixture with one perturbed intermediate reference."""
    src = shared_path("fixtures", "cut3r_tiny")
    for f in ("checkpoint.pth", "config.json", "inputs.npz", "outputs.npz"):
        (tmp_path / f).symlink_to(src / f)
    inter = dict(np.load(src / "intermediates.npz"))
    inter["dec_img_l2"] = inter["dec_img_l2"] * 1.01
    np.savez(tmp_path / "intermediates.npz", **inter)
    report = run_fixture(tmp_path)
    assert not report.ok and report.first_failure().name == "dec_img_l2"


def _fixture_copy(tmp_path, replaced: str):
    """The cut3r_tiny fixture in tmp_path, every file linked except `replaced` (written by the test)."""
    src = shared_path("fixtures", "cut3r_tiny")
    for f in ("checkpoint.pth", "config.json", "inputs.npz", "outputs.npz", "intermediates.npz"):
        if f != replaced:
            (tmp_path / f).symlink_to(src / f)
    return src / replaced, tmp_path / replaced


def test_truncated_fixture_file(tmp_path):
    src, bad = _fixture_copy(tmp_path, "inputs.npz")
    bad.write_bytes(src.read_bytes()[:100_000])
    with pytest.raises(FixtureError, match="not an .npz archive") as e:
        run_fixture(tmp_path)
    assert str(bad) in str(e.value)


def test_object_array_in_a_fixture_file(tmp_path):
    src, bad = _fixture_copy(tmp_path, "outputs.npz")
    with np.load(src) as z:
        np.savez(bad, **{**z, "conf": np.array([None], object)})
    with pytest.raises(FixtureError, match=r"entry 'conf' holds Python objects") as e:
        run_fixture(tmp_path)
    assert str(bad) in str(e.value)
