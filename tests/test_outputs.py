"""Nothing of the user's lost, nothing half-written passed off as complete, one clear line: what
`--overwrite` may replace, permissions, option values, full / read-only / immutable disks, signals."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from conftest import shared_path

from human3r_jax import checkpoint as ckpt
from human3r_jax import export, outputs
from human3r_jax.cli import main
from human3r_jax.data.video import FrameSource
from human3r_jax.reconstruct import Settings, load_model, reconstruct

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "sample.mp4"
RW = "--random-weights"


@pytest.fixture(scope="module")
def tiny():
    return load_model(random_weights="human3r_tiny")


def image_folder(path: Path, n: int = 3) -> Path:
    path.mkdir(parents=True)
    for r in FrameSource(SAMPLE, max_frames=n):
        r.image.save(path / f"{r.index:04d}.png")
    return path


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(capsys, *argv) -> tuple[int, list[str]]:
    code = main([*map(str, argv)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert not any("Traceback" in line for line in err), err
    return code, err


# ---------------------------------------------------------------- --overwrite


def test_reconstruct_overwrite_never_deletes_an_input(tmp_path, capsys):
    imgs = image_folder(tmp_path / "x")
    video = tmp_path / "clip.mp4"
    shutil.copy(SAMPLE, video)
    before = snapshot(tmp_path)
    for inp, out in [(imgs, imgs), (imgs, tmp_path), (video, tmp_path), (imgs, tmp_path / "x" / ".."), (video, video)]:
        code, err = cli(capsys, "reconstruct", inp, RW, "--size", "224", "--out", out, "--overwrite", "--quiet")
        assert code == 2 and len(err) == 1, (inp, out, err)
        assert "would hold the input" in err[0] or "not a folder" in err[0]
    # the checkpoint and the SMPL-X model are inputs too
    code, err = cli(
        capsys,
        "reconstruct",
        video,
        "--checkpoint",
        tmp_path / "x" / "0000.png",
        "--out",
        imgs,
        "--overwrite",
        "--quiet",
    )
    assert code == 2 and "would hold the input" in err[0]
    assert snapshot(tmp_path) == before


def test_reconstruct_overwrite_replaces_only_its_own_output(tmp_path, capsys):
    imgs = image_folder(tmp_path / "x", 2)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("months of work")
    code, err = cli(capsys, "reconstruct", imgs, RW, "--size", "224", "--out", mine, "--overwrite", "--quiet")
    assert code == 2 and "no .human3r-jax marker" in err[0]
    assert (mine / "thesis.tex").read_text() == "months of work"

    out = tmp_path / "out"
    assert cli(capsys, "reconstruct", imgs, RW, "--size", "224", "--out", out, "--quiet")[0] == 0
    assert outputs.is_marked(out, "reconstruction")
    code, err = cli(capsys, "reconstruct", imgs, RW, "--size", "224", "--out", out, "--quiet")
    assert code == 2 and "pass --overwrite" in err[0]
    (out / "frames" / "notes.txt").write_text("mine")
    code, err = cli(capsys, "reconstruct", imgs, RW, "--size", "224", "--out", out, "--overwrite", "--quiet")
    assert code == 2 and "frames/notes.txt" in err[0] and (out / "frames" / "notes.txt").exists()
    (out / "frames" / "notes.txt").unlink()
    (out / "meta.json").write_text("{}")  # tell the runs apart
    assert cli(capsys, "reconstruct", imgs, RW, "--size", "224", "--out", out, "--overwrite", "--quiet")[0] == 0
    assert json.loads((out / "meta.json").read_text())["complete"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "out", "x"]  # nothing left beside it
    (tmp_path / "file").write_text("")
    code, err = cli(capsys, "reconstruct", imgs, RW, "--out", tmp_path / "file", "--overwrite", "--quiet")
    assert code == 2 and "not a folder" in err[0] and (tmp_path / "file").exists()


def test_interrupted_overwrite_keeps_the_earlier_output(tmp_path, tiny, capsys):
    imgs = image_folder(tmp_path / "x", 3)
    out = reconstruct([imgs], tmp_path / "out", tiny, Settings(size=224), progress=False)[0]
    before = snapshot(out)

    def stop(j, res):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reconstruct([imgs], out, tiny, Settings(size=224), overwrite=True, on_frame=stop, progress=False)
    assert snapshot(out) == before
    partial = tmp_path / "out.partial"
    meta = json.loads((partial / "meta.json").read_text())
    assert not meta["complete"] and meta["frames"] == 1 and "out.partial" in capsys.readouterr().err
    reconstruct([imgs], out, tiny, Settings(size=224), overwrite=True, progress=False)
    assert json.loads((out / "meta.json").read_text())["frames"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "x"]  # the partial run and the old output gone


def test_convert_overwrite_never_deletes_the_source(tmp_path, capsys):
    src = shared_path("fixtures", "cut3r_tiny", "checkpoint.pth")
    m = tmp_path / "m"
    m.mkdir()
    shutil.copy(src, m / "ckpt.pth")
    code, err = cli(capsys, "convert", m / "ckpt.pth", m, "--overwrite")
    assert code == 2 and len(err) == 1 and "would hold the input" in err[0]
    assert (m / "ckpt.pth").read_bytes() == src.read_bytes()
    code, err = cli(capsys, "convert", m / "ckpt.pth", tmp_path, "--overwrite")
    assert code == 2 and (m / "ckpt.pth").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.txt").write_text("mine")
    code, err = cli(capsys, "convert", src, other, "--overwrite")
    assert code == 2 and "not a checkpoint written by human3r-jax" in err[0] and (other / "a.txt").exists()
    assert cli(capsys, "convert", src, tmp_path / "ok")[0] == 0
    assert cli(capsys, "convert", src, tmp_path / "ok", "--overwrite")[0] == 0  # its own output: replaced
    assert outputs.is_marked(tmp_path / "ok", "checkpoint") and ckpt.read_config(tmp_path / "ok")
    code, err = cli(capsys, "convert", src, m / "ckpt.pth", "--overwrite")
    assert code == 2 and "not a folder" in err[0] and (m / "ckpt.pth").read_bytes() == src.read_bytes()
    assert not list(tmp_path.glob(".*"))  # no temporary folder left


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o027])
def test_outputs_follow_the_umask(tmp_path, umask, capsys):
    src = shared_path("fixtures", "cut3r_tiny", "checkpoint.pth")
    old = os.umask(umask)
    try:
        assert cli(capsys, "convert", src, tmp_path / "c")[0] == 0
        made = outputs.make_temp_dir(tmp_path / "p", ".x-")
    finally:
        os.umask(old)
    for folder in (tmp_path / "c", tmp_path / "c" / "params", made):
        assert folder.stat().st_mode & 0o777 == 0o777 & ~umask, folder
    assert (tmp_path / "c" / "config.json").stat().st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------- option values, bad inputs


@pytest.mark.parametrize(
    "argv,option",
    [
        (["reconstruct", "x", "--out", "o", "--max-frames", "0"], "--max-frames"),
        (["reconstruct", "x", "--out", "o", "--max-frames", "-1"], "--max-frames"),
        (["reconstruct", "x", "--out", "o", "--max-humans", "0"], "--max-humans"),
        (["reconstruct", "x", "--out", "o", "--subsample", "0"], "--subsample"),
        (["reconstruct", "x", "--out", "o", "--reset-interval", "0"], "--reset-interval"),
        (["reconstruct", "x", "--out", "o", "--glb-frame", "-1"], "--glb-frame"),
        (["reconstruct", "x", "--out", "o", "--conf-threshold", "nan"], "--conf-threshold"),
        (["reconstruct", "x", "--out", "o", "--random-weights", "bogus"], "--random-weights"),
        (["convert", "a.pth", "o", "--dino-widths", "64,2,0"], "--dino-widths"),
        (["convert", "a.pth", "o", "--dino-widths", "64,2,3"], "--dino-widths"),
        (["view", "o", "--port", "70000"], "--port"),
        (["view", "o", "--port", "-1"], "--port"),
        (["parity", "f", "--tol-for", "abc"], "--tol-for"),
        (["parity", "f", "--tol-for", "x=abc"], "--tol-for"),
        (["parity", "f", "--tol", "0"], "--tol"),
        (["preprocess-bedlam", "--raw", "r", "--labels", "l", "--out", "o", "--workers", "0"], "--workers"),
        (["preprocess-bedlam", "--raw", "r", "--labels", "l", "--out", "o", "--limit", "-1"], "--limit"),
    ],
)
def test_bad_option_values_are_refused_while_parsing(argv, option, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and option in err[0], err


def test_frames_the_model_cannot_take_are_named_before_any_output(tmp_path, capsys):
    folder = tmp_path / "wide"
    folder.mkdir()
    PIL.Image.new("RGB", (4000, 100), "red").save(folder / "strip.png")
    code, err = cli(capsys, "reconstruct", folder, RW, "--out", tmp_path / "o", "--quiet")
    assert code == 2 and len(err) == 1 and "strip.png" in err[0] and "too small" in err[0]
    assert not (tmp_path / "o").exists()


def test_any_checkpoint_file_is_read_whatever_its_suffix(tmp_path):
    pt = tmp_path / "cut3r.pt"
    shutil.copy(shared_path("fixtures", "cut3r_tiny", "checkpoint.pth"), pt)
    model = load_model(pt)
    assert model.cfg.enc_embed_dim == 128 and model.source == str(pt)


# ---------------------------------------------------------------- disks that refuse writes


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    """A tmpfs mounted at `path` (root only; skipped elsewhere, with the reason)."""
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_read_only_and_full_disks_give_one_line_and_leave_nothing(tmp_path, capsys, monkeypatch):
    src = shared_path("fixtures", "cut3r_tiny", "checkpoint.pth")  # converts to ~24 MB
    imgs = image_folder(tmp_path / "x", 2)
    with tmpfs(tmp_path / "ro", "ro,size=64m") as ro:
        code, err = cli(capsys, "convert", src, ro / "c")
        assert code == 2 and len(err) == 1 and "Read-only file system" in err[0] and str(ro) in err[0]
        code, err = cli(capsys, "reconstruct", imgs, RW, "--size", "224", "--out", ro / "o", "--quiet")
        assert code == 2 and "Read-only file system" in err[-1]
    with tmpfs(tmp_path / "full", "size=256k") as full:
        code, err = cli(capsys, "convert", src, full / "c")
        assert code == 2 and len(err) == 1 and "not enough free space" in err[0]
        # past the space check (the disk fills up during the write): orbax's failure, in one line
        monkeypatch.setattr(outputs, "check_free_space", lambda *a: None)
        code, err = cli(capsys, "convert", src, full / "c")
        assert code == 2 and len(err) == 1 and "cannot write the checkpoint" in err[0]
        time.sleep(1)  # orbax's writers finish in the background
        assert list(full.iterdir()) == []
        code, err = cli(capsys, "reconstruct", imgs, RW, "--size", "224", "--out", full / "o", "--quiet")
        assert code == 2 and "No space left on device" in err[-1]
        assert not json.loads((full / "o" / "meta.json").read_text())["complete"]
        assert not list(full.rglob("*.tmp"))
    assert "Traceback" not in capsys.readouterr().err


def test_an_immutable_folder_gives_one_line(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here (needs root and a file system that supports it)")
    try:
        code, err = cli(capsys, "convert", shared_path("fixtures", "cut3r_tiny", "checkpoint.pth"), locked / "c")
        assert code == 2 and len(err) == 1 and "locked" in err[0] and "not permitted" in err[0]
        imgs = image_folder(tmp_path / "x", 1)
        code, err = cli(capsys, "reconstruct", imgs, RW, "--size", "224", "--out", locked / "o", "--quiet")
        assert code == 2 and "not permitted" in err[-1]
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=False)


# ---------------------------------------------------------------- signals


def test_sigterm_stops_like_ctrl_c(tmp_path):
    """What a job scheduler sends: complete files for the frames done, meta.json complete=false."""
    rng = np.random.default_rng(0)
    clip = tmp_path / "long"
    clip.mkdir()
    for i in range(400):  # far more than the run gets through before the signal
        PIL.Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(clip / f"{i:04d}.png")
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "human3r_jax.cli",
            "reconstruct",
            str(clip),
            RW,
            "--size",
            "224",
            "--out",
            str(out),
            "--quiet",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while not (out / "frames" / "000002.npz").exists():
            assert proc.poll() is None and time.time() < deadline, "the run ended or never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM and "interrupted (SIGTERM)" in err, err
    meta = json.loads((out / "meta.json").read_text())
    frames = sorted((out / "frames").iterdir())
    assert not meta["complete"] and meta["error"] == "interrupted" and 3 <= meta["frames"] == len(frames) < 400
    assert len(np.load(out / "reconstruction.npz")["c2w"]) == meta["frames"]
    assert not list(out.rglob(".*.tmp"))


def test_an_interrupt_during_the_final_write_never_looks_complete(tmp_path, tiny, monkeypatch):
    imgs = image_folder(tmp_path / "x", 2)
    seen = []

    def running(j, res):  # meta.json says "incomplete" from the first frame on
        seen.append(json.loads((tmp_path / "o" / "meta.json").read_text()))

    def second_ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "save_glb", second_ctrl_c)  # written after reconstruction.npz, before meta.json
    with pytest.raises(KeyboardInterrupt):
        reconstruct([imgs], tmp_path / "o", tiny, Settings(size=224), on_frame=running, progress=False)
    assert seen and all(not m["complete"] and m["state"] == "running" for m in seen)
    assert (tmp_path / "o" / "reconstruction.npz").exists()
    assert not json.loads((tmp_path / "o" / "meta.json").read_text())["complete"]


def test_outputs_from_before_the_marker_are_recognised_by_their_description(tmp_path):
    old_ckpt = tmp_path / "ck"
    old_ckpt.mkdir()
    (old_ckpt / "config.json").write_text(json.dumps({"format": "human3r-jax", "kind": "cut3r"}))
    (old_ckpt / "params").mkdir()
    assert outputs.check_output(old_ckpt, "checkpoint", True)
    old_rec = tmp_path / "rec"
    (old_rec / "frames").mkdir(parents=True)
    (old_rec / "meta.json").write_text(json.dumps({"schema_version": 1, "files": {}}))
    assert outputs.check_output(old_rec, "reconstruction", True)
    (old_rec / "meta.json").write_text(json.dumps({"mine": 1}))
    with pytest.raises(outputs.OutputError, match="no .human3r-jax marker"):
        outputs.check_output(old_rec, "reconstruction", True)
    with pytest.raises(outputs.OutputError, match="not a reconstruction"):  # the wrong kind
        outputs.check_output(old_ckpt, "reconstruction", True)
