"""`reconstruct` on a live source, end to end: a stream on standard input gives the same files as the same
stream read from its file; with the live viewer and JSON Lines hooked to the frames as they are written, the
viewer's server holds N cameras and the file N lines after N frames; Ctrl-C ends a live run as its normal
end (a complete output that exports). Human3R tiny, random weights, --size 224, 4 frames."""

from __future__ import annotations

import json
import sys

import av
import numpy as np
import pytest

from human3r_jax.cli import _FrameListeners
from human3r_jax.exporters import export
from human3r_jax.reconstruct import Settings, load_model, prepare, reconstruct, run_job

FRAMES = 4
SETTINGS = Settings(size=224, max_frames=FRAMES)


@pytest.fixture(scope="module")
def model():
    return load_model(random_weights="human3r_tiny")


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    """6 frames of 96 x 64 as MPEG-TS (H.264), a format that streams through a pipe."""
    path = tmp_path_factory.mktemp("live") / "clip.ts"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format="mpegts") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        for i in range(6):
            img = (rng.random((64, 96, 3)) * 60 + i * 30).astype(np.uint8)
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode())
    return path


def _frames(folder):
    return [dict(np.load(folder / "frames" / f"{i:06d}.npz")) for i in range(FRAMES)]


def _on_stdin(monkeypatch, path):
    monkeypatch.setattr(sys, "stdin", open(path, "rb", buffering=0))  # noqa: SIM115


def test_a_stream_on_stdin_gives_the_files_of_its_file(model, stream, tmp_path, monkeypatch):
    reconstruct([stream], tmp_path / "file", model, SETTINGS, progress=False)
    _on_stdin(monkeypatch, stream)
    reconstruct(["-"], tmp_path / "pipe", model, SETTINGS, progress=False)
    for a, b in zip(_frames(tmp_path / "file"), _frames(tmp_path / "pipe")):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    meta = json.loads((tmp_path / "pipe" / "meta.json").read_text())
    assert meta["complete"] and meta["input_kind"] == "pipe" and meta["frames"] == FRAMES


def test_live_viewer_and_json_lines_follow_the_frames(model, stream, tmp_path, monkeypatch):
    viser = pytest.importorskip("viser")
    del viser
    from test_live_viewer import scene, under

    from human3r_jax.viewer import LiveViewer

    viewer = LiveViewer("127.0.0.1", 0)
    seen = []

    class Counting(_FrameListeners):
        def __call__(self, j, folder, n, frame):
            super().__call__(j, folder, n, frame)
            seen.append((n, viewer.frames_shown, len(under(scene(viewer), "/cameras"))))

    listeners = Counting(viewer, live_json=True)
    try:
        _on_stdin(monkeypatch, stream)
        job = prepare(["-"], tmp_path / "out", SETTINGS)
        run_job(job, model, SETTINGS, progress=False, on_saved=listeners)
    finally:
        listeners.close()
        viewer.stop()
    # after frame n was written, the server's scene held n + 1 frames' cameras
    assert seen == [(n, n + 1, n + 1) for n in range(FRAMES)]
    lines = (tmp_path / "out" / "frames.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == list(range(FRAMES))


def test_ctrl_c_ends_a_live_run_completely(model, stream, tmp_path, monkeypatch):
    def stop_after_two(j, folder, n, frame):
        if n == 1:
            raise KeyboardInterrupt("SIGINT")

    _on_stdin(monkeypatch, stream)
    job = prepare(["-"], tmp_path / "out", SETTINGS)
    run_job(job, model, SETTINGS, progress=False, on_saved=stop_after_two)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["complete"] is True and meta["frames"] == 2 and meta["timing"]["ended_by"] == "SIGINT"
    dest, _ = export(tmp_path / "out", "ply")
    assert dest.is_file()


def test_ctrl_c_interrupts_a_file_run(model, stream, tmp_path):
    def stop(j, folder, n, frame):
        raise KeyboardInterrupt("SIGINT")

    job = prepare([stream], tmp_path / "out", SETTINGS)
    with pytest.raises(KeyboardInterrupt):
        run_job(job, model, SETTINGS, progress=False, on_saved=stop)
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["complete"] is False


def test_reconstruct_exports_at_the_end(stream, tmp_path, capsys):
    from human3r_jax.cli import main

    base = ["reconstruct", str(stream), "--random-weights", "--size", "224", "--max-frames", "2", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "a"), "--export", "json"]) == 2
    assert "--smplx" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert main([*base, "--out", str(tmp_path / "b"), "--export", "ply", "colmap", "--static-camera"]) == 0
    out = capsys.readouterr().out
    assert "points.ply" in out and "colmap" in out
    assert (tmp_path / "b" / "points.ply").is_file() and (tmp_path / "b" / "colmap" / "images.txt").is_file()
