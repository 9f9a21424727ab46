"""The viewer on bad folders and network options: one ViewerError line at once, never a hang; a good
folder serves, and a bad frame file met from the slider leaves the server running. Network tests use
127.0.0.1 only (192.0.2.1, a documentation address, only as a bind target: binding sends nothing)."""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("viser")

from human3r_jax import viewer as V
from human3r_jax.viewer import SceneViewer, ViewerError, check_listen_address

H, W, F = 6, 8, 3


def write_folder(out: Path) -> Path:
    """A reconstruction folder by hand (export.py's schema, only what the viewer reads): frame i has i people."""
    rng = np.random.default_rng(0)
    (out / "frames").mkdir(parents=True)
    c2w = np.tile(np.eye(4, dtype=np.float32), (F, 1, 1))
    c2w[:, 2, 3] = np.arange(F)
    k = np.tile(np.array([[10, 0, W / 2], [0, 10, H / 2], [0, 0, 1]], np.float32), (F, 1, 1))
    np.savez(
        out / "reconstruction.npz",
        c2w=c2w,
        intrinsics=k,
        image_size=np.array([H, W]),
        frame_name=np.array([f"f{i}" for i in range(F)]),
    )
    np.save(out / "smplx_faces.npy", np.array([[0, 1, 2], [0, 2, 3]], np.int32))
    for i in range(F):
        np.savez(
            out / "frames" / f"{i:06d}.npz",
            pts3d_world=rng.normal(size=(H, W, 3)).astype(np.float32),
            conf=np.full((H, W), 2.0, np.float32),
            image=rng.integers(0, 255, (H, W, 3), np.uint8),
            smpl_id=np.arange(i),
            smpl_verts_world=rng.normal(size=(i, 4, 3)).astype(np.float32),
        )
    return out


@pytest.fixture
def folder(tmp_path):
    return write_folder(tmp_path / "out")


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def bounded(fn, seconds: float = 10.0):
    """fn()'s exception, or None; fails (instead of hanging the suite) if fn is still running after `seconds`."""
    result = {}

    def run():
        try:
            result["value"] = fn()
        except Exception as e:
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: a hang"
    if isinstance(result.get("value"), SceneViewer):
        result["value"].stop()
    return result.get("error")


def cameras(viewer) -> int:
    return len([k for k in viewer.handles if k.startswith("/cameras/")])


def people(viewer) -> int:
    return len([k for k in viewer.handles if k.startswith("/people/")])


@pytest.fixture
def taken_port():
    """A port of 127.0.0.1 that this test listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


# ---------------------------------------------------------------- network options


@pytest.mark.parametrize("port", [70000, -1, "8080"])
def test_port_out_of_range(folder, port):
    e = bounded(lambda: SceneViewer(folder, port=port), 5)
    assert isinstance(e, ViewerError) and f"--port {port}: a TCP port is a number from 0 to 65535" in str(e)


def test_bad_numeric_host(folder):
    t = time.monotonic()
    e = bounded(lambda: SceneViewer(folder, host="999.1.1.1", port=0), 5)
    assert isinstance(e, ViewerError) and str(e) == "--host 999.1.1.1: not a valid IPv4 address"
    assert time.monotonic() - t < 1


def test_host_lookup_is_bounded(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: release.wait(30))
    t = time.monotonic()
    try:
        with pytest.raises(ViewerError, match=r"--host viewer-test\.invalid: no answer .* within 0\.3 s"):
            check_listen_address("viewer-test.invalid", 0, timeout=0.3)
        assert time.monotonic() - t < 0.3 + 1.5
    finally:
        release.set()


def test_unknown_host(monkeypatch):
    def fail(*a, **k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(ViewerError, match=r"^--host nowhere\.invalid: cannot resolve \(Name or service not known\)$"):
        check_listen_address("nowhere.invalid", 8080)


def test_port_in_use(folder, taken_port):
    with pytest.raises(ViewerError, match=f"^cannot listen on 127.0.0.1:{taken_port}: the port is in use"):
        check_listen_address("127.0.0.1", taken_port)
    # viser alone would silently serve on the next port
    e = bounded(lambda: SceneViewer(folder, port=taken_port))
    assert isinstance(e, ViewerError) and "the port is in use" in str(e)


def test_port_taken_after_the_check(folder, taken_port, monkeypatch):
    """A port taken between the check and viser's bind: viser moves to another one; the viewer refuses."""
    monkeypatch.setattr(V, "check_listen_address", lambda host, port: None)
    e = bounded(lambda: SceneViewer(folder, port=taken_port))
    assert isinstance(e, ViewerError) and f"127.0.0.1:{taken_port}: the port is in use" in str(e)


def test_address_not_local():
    if Path("/proc/sys/net/ipv4/ip_nonlocal_bind").read_text().strip() != "0":
        pytest.skip("this machine lets sockets bind non-local addresses")
    with pytest.raises(ViewerError, match=r"^cannot listen on 192\.0\.2\.1:0: Cannot assign requested address"):
        check_listen_address("192.0.2.1", 0)


def test_server_that_never_starts(folder, monkeypatch):
    """viser's constructor waits for its server thread without a timeout: the viewer does not."""
    release = threading.Event()
    monkeypatch.setattr("viser.ViserServer", lambda **_: release.wait(30))
    monkeypatch.setattr(V, "START_TIMEOUT", 0.5)
    try:
        e = bounded(lambda: SceneViewer(folder, port=0), 5)
        assert isinstance(e, ViewerError) and "did not start on 127.0.0.1:0 within 0.5 s" in str(e)
    finally:
        release.set()


# ---------------------------------------------------------------- files


def _object_c2w(out):
    np.savez(
        out / "reconstruction.npz",
        c2w=np.array([None], object),
        intrinsics=np.zeros((1, 3, 3)),
        image_size=np.array([H, W]),
    )


@pytest.mark.parametrize(
    "spoil, file, words",
    [
        (lambda out: truncate(out / "reconstruction.npz"), "reconstruction.npz", ["not an .npz archive"]),
        (
            lambda out: (out / "reconstruction.npz").write_text("c2w = 1\n"),
            "reconstruction.npz",
            ["not an .npz archive"],
        ),
        (_object_c2w, "reconstruction.npz", ["'c2w'", "Python objects"]),
        (
            lambda out: np.savez(
                out / "reconstruction.npz",
                c2w=np.zeros((F, 3, 4)),
                intrinsics=np.zeros((F, 3, 3)),
                image_size=np.array([H, W]),
            ),
            "reconstruction.npz",
            ["'c2w'", "[3, 3, 4]", "[*, 4, 4]"],
        ),
        (
            lambda out: np.savez(out / "reconstruction.npz", c2w=np.zeros((F, 4, 4)), image_size=np.array([H, W])),
            "reconstruction.npz",
            ["missing entry 'intrinsics'"],
        ),
        (
            lambda out: np.savez(
                out / "reconstruction.npz",
                c2w=np.zeros((F, 4, 4)),
                intrinsics=np.zeros((F, 3, 3)),
                image_size=np.array(["6", "8"]),
            ),
            "reconstruction.npz",
            ["'image_size'", "<U1"],
        ),
        (lambda out: (out / "frames" / "000001.npz").unlink(), "frames", ["missing 000001.npz of the 3 frames"]),
        (lambda out: truncate(out / "frames" / "000002.npz"), "frames/000002.npz", ["not an .npz archive"]),
        (
            lambda out: np.savez(
                out / "frames" / "000002.npz",
                pts3d_world=np.zeros((H, W, 3)),
                conf=np.zeros((H, W)),
                image=np.array([None], object),
            ),
            "frames/000002.npz",
            ["'image'", "Python objects"],
        ),
        (
            lambda out: np.savez(
                out / "frames" / "000002.npz",
                pts3d_world=np.zeros((H, W, 3)),
                conf=np.zeros((H, W)),
                image=np.zeros((H, W, 3)),
                smpl_id=np.arange(2),
                smpl_verts_world=np.zeros((3, 4, 3)),
            ),
            "frames/000002.npz",
            ["'smpl_verts_world'", "[3, 4, 3]", "[2, *, 3]"],
        ),
        (lambda out: (out / "smplx_faces.npy").write_text("0 1 2\n"), "smplx_faces.npy", ["not a readable .npy"]),
    ],
)
def test_bad_files(folder, spoil, file, words):
    spoil(folder)
    e = bounded(lambda: SceneViewer(folder, port=0))  # refused before any server starts
    assert isinstance(e, ViewerError), e
    assert "\n" not in str(e)
    for s in [str(folder / file), *words]:
        assert s in str(e)


def test_good_folder_serves(folder):
    viewer = SceneViewer(folder, port=0)  # 0: any free port, and `port` says which
    try:
        assert viewer.port > 0
        html = urllib.request.urlopen(f"http://127.0.0.1:{viewer.port}/", timeout=10).read().decode()
        assert "<html" in html.lower()
        assert (cameras(viewer), people(viewer)) == (3, 2)
        viewer.frame.value = 1
        assert (cameras(viewer), people(viewer)) == (2, 1)
    finally:
        viewer.stop()


def test_bad_frame_from_the_slider_keeps_serving(folder, caplog):
    viewer = SceneViewer(folder, port=0)
    try:
        bad = folder / "frames" / "000001.npz"
        truncate(bad)
        with caplog.at_level(logging.ERROR, logger="human3r_jax.viewer"):
            viewer.frame.value = 1  # the slider callback: no exception escapes into viser's thread
        assert [r.getMessage() for r in caplog.records] == [
            f"{bad}: not an .npz archive (empty, truncated, or another kind of file)"
        ]
        assert viewer.status.visible and str(bad) in viewer.status.content
        assert (cameras(viewer), people(viewer)) == (3, 2)  # the last good frame stays on screen
        urllib.request.urlopen(f"http://127.0.0.1:{viewer.port}/", timeout=10).read()
        viewer.frame.value = 0
        assert (cameras(viewer), people(viewer)) == (1, 0) and not viewer.status.visible
        with pytest.raises(ViewerError, match="000001.npz: not an .npz archive"):
            viewer.show(1)
    finally:
        viewer.stop()
