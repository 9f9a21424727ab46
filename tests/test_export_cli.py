"""`human3r-jax export`: the destination rules, partial folders and bad input (the formats' own contents are
tested in test_export_<format>.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fake_reconstruction import write_fake_reconstruction

from human3r_jax import outputs
from human3r_jax.cli import main
from human3r_jax.exporters import ExportError, export


@pytest.fixture(scope="module")
def rec_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "rec"
    write_fake_reconstruction(folder, n_frames=4)
    return folder


def _run(capsys, *argv):
    code = main(["export", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_default_destination_and_overwrite(rec_dir, capsys):
    code, out, _ = _run(capsys, rec_dir, "--format", "ply")
    assert code == 0 and (rec_dir / "points.ply").is_file(), out
    first = (rec_dir / "points.ply").read_bytes()
    code, _, err = _run(capsys, rec_dir, "--format", "ply")
    assert code == 2 and "--overwrite" in err and err.count("\n") == 1
    code, _, _ = _run(capsys, rec_dir, "--format", "ply", "--overwrite", "--max-points", "10")
    assert code == 0 and (rec_dir / "points.ply").read_bytes() != first
    # an export beside the frames does not stop the reconstruction itself from being replaced later
    assert outputs.check_output(rec_dir, "reconstruction", overwrite=True)
    assert not list(rec_dir.glob(".*.tmp"))


def test_folder_formats_are_marked_and_replaceable_elsewhere(rec_dir, tmp_path, capsys):
    dest = tmp_path / "model"
    assert _run(capsys, rec_dir, "--format", "colmap", "--out", dest)[0] == 0
    assert outputs.is_marked(dest, "export") and (dest / "cameras.txt").is_file()
    assert _run(capsys, rec_dir, "--format", "colmap", "--out", dest, "--overwrite", "--binary")[0] == 0
    assert (dest / "cameras.bin").is_file() and not (dest / "cameras.txt").exists()


def test_refuses_to_replace_what_it_did_not_write(rec_dir, tmp_path, capsys):
    users = tmp_path / "notes.ply"
    users.write_text("my own file")
    code, _, err = _run(capsys, rec_dir, "--format", "ply", "--out", users, "--overwrite")
    assert code == 2 and "not a ply export of human3r-jax" in err
    assert users.read_text() == "my own file"
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    code, _, err = _run(capsys, rec_dir, "--format", "colmap", "--out", folder, "--overwrite")
    assert code == 2 and (folder / "keep.txt").read_text() == "x"
    # the reconstruction's own files and the folder itself are never an export destination
    for target in (
        rec_dir / "meta.json",
        rec_dir / "frames",
        rec_dir / "frames" / "x.ply",
        rec_dir / "mine.ply",
        rec_dir,
    ):
        code, _, err = _run(capsys, rec_dir, "--format", "ply", "--out", target, "--overwrite")
        assert code == 2, target
    assert json.loads((rec_dir / "meta.json").read_text())["complete"] is True


def test_bad_input_is_one_line(rec_dir, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    code, _, err = _run(capsys, plain, "--format", "ply")
    assert code == 2 and "not a reconstruction of human3r-jax" in err and err.count("\n") == 1
    code, _, err = _run(capsys, tmp_path / "absent", "--format", "ply")
    assert code == 2 and "no such folder" in err
    with pytest.raises(SystemExit) as e:
        main(["export", str(rec_dir), "--format", "obj"])
    assert e.value.code == 2 and "invalid choice: 'obj'" in capsys.readouterr().err
    code, _, err = _run(capsys, rec_dir, "--format", "ply", "--binary")
    assert code == 2 and "--binary does not apply to --format ply" in err
    with pytest.raises(ExportError, match="unknown; known formats"):
        export(rec_dir, "obj")
    assert not (tmp_path / "plain" / "points.ply").exists()


def test_partial_reconstruction_exports_what_it_has(tmp_path, capsys):
    folder = tmp_path / "partial"
    write_fake_reconstruction(folder, n_frames=5, complete=False)
    (folder / "frames" / "000003.npz").unlink()  # a run killed while writing frame 3
    code, _, err = _run(capsys, folder, "--format", "ply", "--per-frame")
    assert code == 0
    assert "partial" in err and "3 frames" in err
    assert sorted(p.name for p in (folder / "points").glob("*.ply")) == ["000000.ply", "000001.ply", "000002.ply"]


def test_a_failing_writer_leaves_nothing(rec_dir, tmp_path, monkeypatch):
    from human3r_jax.exporters import ply

    def broken(rec, dest, **options):
        dest.write_bytes(b"ply\nhalf")
        raise ExportError("disk on fire")

    monkeypatch.setattr(ply, "write", broken)
    with pytest.raises(ExportError, match="disk on fire"):
        export(rec_dir, "ply", out=tmp_path / "x.ply")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_frame_file_names_it(tmp_path, capsys):
    folder = tmp_path / "bad"
    write_fake_reconstruction(folder, n_frames=3)
    np.savez(folder / "frames" / "000001.npz", c2w=np.zeros((3, 3)))
    code, _, err = _run(capsys, folder, "--format", "ply")
    assert code == 2 and "000001.npz" in err and err.count("\n") == 1
    assert not (folder / "points.ply").exists()
