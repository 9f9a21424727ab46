"""Interactive 3-D view of a reconstruction in the browser (viser, an optional extra): of a finished (or
partial) folder, `SceneViewer`, or of a running one, `LiveViewer`.

    human3r-jax view OUT_DIR [--port 8080]      then open http://localhost:8080

SceneViewer: a frame slider shows that frame's confident points, every camera up to it (the current one
highlighted) and its people's SMPL-X meshes coloured by track id; the confidence threshold and the
point decimation are sliders too. Frames are read from OUT_DIR/frames as they are shown.

LiveViewer: the reconstruction loop hands it each frame as it is produced (`add_frame`); the scene shows
the newest frames' points, their cameras and the current people, within a fixed budget.

Bad files and addresses end in one ViewerError line naming the file, entry or option at fault, before
any server starts; a frame file that turns out bad later, from a slider, is reported in the page and
the log while the server keeps running.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import threading
from pathlib import Path

import numpy as np

from human3r_jax.errors import Human3rError
from human3r_jax.export import drawing_focal, track_colour
from human3r_jax.geometry import matrix_to_quat
from human3r_jax.npz import read_npy, read_npz

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0  # seconds for viser's server to come up (it takes well under one)
_IN_USE = "the port is in use (choose another --port, or 0 for any free one)"
_CURRENT, _EARLIER = (230, 30, 30), (120, 120, 120)  # camera colours: the frame shown, the ones before


class ViewerError(Human3rError):
    """A reconstruction folder the viewer cannot show, or an address it cannot listen on."""


def check_listen_address(host: str, port: int, timeout: float = 5.0) -> None:
    """Raise ViewerError, in one line, unless a server can listen on (host, port).

    viser cannot be left to find out: it binds in a thread of its own, where a port outside 0..65535
    kills the thread while its constructor waits forever, and on a port it cannot bind (in use, or a
    host it cannot resolve or assign) it silently tries the next one, up to 1000, then also waits forever
    (`port_attempt += 1` in start_server, WebsockServer._background_worker, viser/infra/_infra.py).
    A port in use is refused here: the user asked for that one (0 asks for any free port).
    A dotted all-numeric host must be an IPv4 address (glibc would send 999.1.1.1 to DNS); a name is
    resolved in a daemon thread given `timeout` seconds, so a lookup without network cannot hang.
    Every address it resolves to is bound as asyncio's create_server binds it (SO_REUSEADDR, IPv6-only).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ViewerError(f"--port {port}: a TCP port is a number from 0 to 65535 (0: any free port)")
    if not host:
        raise ViewerError("--host is empty: give an address such as 127.0.0.1 (0.0.0.0: every interface)")
    if re.fullmatch(r"[0-9.]+", host):
        try:
            socket.inet_aton(host)
        except OSError:
            raise ViewerError(f"--host {host}: not a valid IPv4 address") from None
    for family, kind, proto, _, address in _resolve(host, port, timeout):
        try:
            with socket.socket(family, kind, proto) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind(address)
        except OSError as e:
            where = f"{address[0]}:{port}"
            if e.errno == errno.EADDRINUSE:
                raise ViewerError(f"cannot listen on {where}: {_IN_USE}") from None
            hint = " (--host must be an address of this machine)" if e.errno == errno.EADDRNOTAVAIL else ""
            raise ViewerError(f"cannot listen on {where}: {e.strerror or e}{hint}") from None


def _resolve(host: str, port: int, timeout: float) -> list[tuple]:
    """socket.getaddrinfo as asyncio's create_server calls it, given at most `timeout` seconds."""
    found: dict = {}

    def lookup() -> None:
        try:
            found["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (OSError, ValueError) as e:  # ValueError: a name the IDNA codec refuses, a NUL byte
            found["error"] = e

    thread = threading.Thread(target=lookup, daemon=True, name="viewer-host-lookup")
    thread.start()
    thread.join(timeout)
    if "error" in found:
        e = found["error"]
        raise ViewerError(f"--host {host}: cannot resolve ({getattr(e, 'strerror', None) or e})")
    if "infos" not in found:
        raise ViewerError(
            f"--host {host}: no answer from the name lookup within {timeout:g} s "
            "(no network? give an address such as 127.0.0.1)"
        )
    return found["infos"]


def _start_server(viser, host: str, port: int, verbose: bool):
    """viser's server, listening on exactly `port` (unless 0). Its constructor waits without a timeout
    for its server thread to bind (`ready_sem.acquire()` in WebsockServer.start), so it runs here in a
    daemon thread given START_TIMEOUT: a server thread that dies cannot hang the process."""
    started: dict = {}

    def start() -> None:
        try:
            started["server"] = viser.ViserServer(host=host, port=port, verbose=verbose)
        except Exception as e:  # whatever viser raises ends in the one line below
            started["error"] = e

    thread = threading.Thread(target=start, daemon=True, name="viewer-start")
    thread.start()
    thread.join(START_TIMEOUT)
    if "error" in started:
        raise ViewerError(f"cannot start the viewer on {host}:{port}: {started['error']}")
    if "server" not in started:
        raise ViewerError(f"the viewer's server did not start on {host}:{port} within {START_TIMEOUT:g} s")
    server = started["server"]
    if port and server.get_port() != port:  # taken since check_listen_address: viser moved on silently
        server.stop()
        raise ViewerError(f"cannot listen on {host}:{port}: {_IN_USE}")
    return server


def _import_viser():
    try:
        import viser
    except ImportError:
        raise ViewerError("the viewer needs viser: pip install 'human3r-jax[viewer]'") from None
    return viser


def _add_camera(scene, name: str, c2w: np.ndarray, k: np.ndarray, hw: tuple[int, int], colour: tuple):
    """The frustum of a camera (c2w [4, 4], K [3, 3] at the frame size hw = (H, W)) as the scene node `name`."""
    h, w = hw
    return scene.add_camera_frustum(
        name,
        fov=float(2 * np.arctan2(h / 2, drawing_focal(k, h, w))),
        aspect=w / h,
        scale=0.05,
        color=colour,
        wxyz=tuple(np.asarray(matrix_to_quat(c2w[:3, :3]))),
        position=tuple(c2w[:3, 3]),
    )


def _check(path: Path, key: str, a: np.ndarray, shape: tuple) -> np.ndarray:
    """`a`, which must be a numeric array of `shape` (None: any length)."""
    if a.dtype.kind not in "iuf" or a.ndim != len(shape) or any(s not in (None, n) for s, n in zip(shape, a.shape)):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ViewerError(f"{path}: entry {key!r} is {a.dtype} {list(a.shape)}; expected numbers of shape {want}")
    return a


class SceneViewer:
    def __init__(self, out_dir: str | Path, host: str = "127.0.0.1", port: int = 8080, verbose: bool = False):
        viser = _import_viser()
        self.out = Path(out_dir)
        self.summary = self._read_summary()
        self.n = len(self.summary["c2w"])
        faces = self.out / "smplx_faces.npy"
        self.faces = self._read_faces(faces) if faces.is_file() else None
        last = self._read_frame(self.n - 1)  # a bad file is refused before any server starts
        check_listen_address(host, port)
        self.server = _start_server(viser, host, port, verbose)
        self.server.scene.set_up_direction("-y")  # OpenCV camera axes: y points down
        gui = self.server.gui
        self.frame = gui.add_slider("frame", 0, self.n - 1, 1, self.n - 1)
        self.conf = gui.add_slider("confidence ≥", 1.0, 10.0, 0.1, 1.5)
        self.stride = gui.add_slider("point stride", 1, 16, 1, 2)
        self.status = gui.add_markdown("", visible=False)  # says why a frame cannot be shown
        for handle in (self.frame, self.conf, self.stride):
            handle.on_update(self._on_update)
        self.handles: dict = {}
        self._draw(self.n - 1, last)

    @property
    def port(self) -> int:
        return self.server.get_port()

    def _read_summary(self) -> dict[str, np.ndarray]:
        path = self.out / "reconstruction.npz"
        if not path.is_file():
            raise ViewerError(f"{self.out}: no reconstruction.npz (is this a `human3r-jax reconstruct` output?)")
        s = read_npz(path, ViewerError, ("c2w", "intrinsics", "image_size"))
        n = len(_check(path, "c2w", s["c2w"], (None, 4, 4)))
        if n == 0:
            raise ViewerError(f"{self.out}: the reconstruction has no frames")
        _check(path, "intrinsics", s["intrinsics"], (n, 3, 3))
        if not (_check(path, "image_size", s["image_size"], (2,)) > 0).all():
            raise ViewerError(f"{path}: entry 'image_size' is {s['image_size'].tolist()}; expected (H, W) > 0")
        missing = [f"{i:06d}.npz" for i in range(n) if not (self.out / "frames" / f"{i:06d}.npz").is_file()]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise ViewerError(f"{self.out / 'frames'}: missing {missing[0]}{more} of the {n} frames in {path.name}")
        return s

    @staticmethod
    def _read_faces(path: Path) -> np.ndarray:
        faces = read_npy(path, ViewerError)
        if faces.dtype.kind not in "iu" or faces.ndim != 2 or faces.shape[1] != 3:
            raise ViewerError(f"{path}: {faces.dtype} {list(faces.shape)}; expected integer faces of shape [*, 3]")
        return faces

    def _read_frame(self, i: int) -> dict[str, np.ndarray]:
        path = self.out / "frames" / f"{i:06d}.npz"
        f = read_npz(path, ViewerError, ("pts3d_world", "conf", "image"), optional=("smpl_id", "smpl_verts_world"))
        h, w, _ = _check(path, "pts3d_world", f["pts3d_world"], (None, None, 3)).shape
        _check(path, "conf", f["conf"], (h, w))
        _check(path, "image", f["image"], (h, w, 3))
        f.setdefault("smpl_id", np.zeros(0, int))
        n = len(_check(path, "smpl_id", f["smpl_id"], (None,)))
        if "smpl_verts_world" in f:
            _check(path, "smpl_verts_world", f["smpl_verts_world"], (n, None, 3))
        return f

    def show(self, i: int) -> None:
        """Draw frame `i`; ViewerError (and the scene unchanged) if its file cannot be read."""
        self._draw(i, self._read_frame(i))

    def _on_update(self, _event) -> None:
        # Slider callbacks run in viser's threads: a bad frame file is reported in the page and the log,
        # and the server keeps showing the frames that can be read.
        i = int(self.frame.value)
        try:
            self.show(i)
        except ViewerError as e:
            log.error("%s", e)
            self.status.content = f"**frame {i} not shown:** `{e}`"
            self.status.visible = True
            return
        self.status.visible = False

    def _draw(self, i: int, frame: dict[str, np.ndarray]) -> None:
        scene = self.server.scene
        every = (slice(None, None, int(self.stride.value)),) * 2
        pts, conf, img = frame["pts3d_world"][every], frame["conf"][every], frame["image"][every]
        keep = conf >= self.conf.value
        self.handles["points"] = scene.add_point_cloud("/points", pts[keep], img[keep], point_size=0.01)
        for name in [k for k in self.handles if k.startswith("/people/")]:
            self.handles.pop(name).remove()
        if "smpl_verts_world" in frame and self.faces is not None:
            for v, tid in zip(frame["smpl_verts_world"], frame["smpl_id"]):
                name = f"/people/{int(tid)}"
                self.handles[name] = scene.add_mesh_simple(name, v, self.faces, color=tuple(track_colour(tid)))
        h, w = (int(v) for v in self.summary["image_size"])
        for j in range(self.n):
            name = f"/cameras/{j}"
            if j > i:
                if name in self.handles:
                    self.handles.pop(name).remove()
                continue
            c2w, k = self.summary["c2w"][j], self.summary["intrinsics"][j]
            self.handles[name] = _add_camera(scene, name, c2w, k, (h, w), _CURRENT if j == i else _EARLIER)

    def stop(self) -> None:
        self.server.stop()


class LiveViewer:
    """The scene of a running reconstruction: `add_frame(i, frame)`, from any thread, shows frame i's
    confident points (above `conf_threshold`, at most `points_per_frame` of them), its camera (highlighted
    until the next one) and its people's meshes (with `faces`; they replace the previous frame's).

    The browser's scene stays bounded however long the stream: it holds the point clouds of the newest
    `max_points // points_per_frame` frames and the cameras of the newest `max_cameras`, each in a ring of
    scene nodes (/points/<k>, /cameras/<k>, k = i modulo the ring's size) where a newer frame replaces the
    oldest, and one mesh node per person in view (/people/<k>), updated in place and hidden when fewer people
    are in view. Nodes are replaced rather than removed: viser keeps every removal for browsers that connect
    later, which would grow with the stream."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        faces: np.ndarray | None = None,
        conf_threshold: float = 1.5,
        points_per_frame: int = 5000,
        max_points: int = 250_000,
        max_cameras: int = 1000,
        verbose: bool = False,
    ):
        viser = _import_viser()
        check_listen_address(host, port)
        self.server = _start_server(viser, host, port, verbose)
        self.server.scene.set_up_direction("-y")  # OpenCV camera axes: y points down
        self.faces = None if faces is None else np.asarray(faces, np.int32)
        self.conf_threshold, self.points_per_frame = conf_threshold, points_per_frame
        self.clouds = max(1, max_points // points_per_frame)  # frames whose points stay in the scene
        self.max_cameras = max_cameras
        self.frames_shown = 0  # frames added so far
        self._cameras: dict[int, object] = {}  # ring slot → frustum handle
        self._current: int | None = None  # the slot of the highlighted camera
        self._people: list = []  # mesh handles, one per person slot
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.server.get_port()

    def add_frame(self, i: int, frame: dict[str, np.ndarray]) -> None:
        """Show frame `i` (the arrays of its frame file, export.FRAME_KEYS: c2w [4, 4], intrinsics [3, 3],
        conf [H, W], pts3d_world [H, W, 3], image [H, W, 3] uint8, and for people smpl_id [n] and
        smpl_verts_world [n, V, 3])."""
        with self._lock:
            self._add_points(i, frame)
            self._add_camera(i, frame)
            self._show_people(frame)
            self.frames_shown += 1

    def _add_points(self, i: int, frame: dict) -> None:
        keep = frame["conf"] > self.conf_threshold
        pts, rgb = frame["pts3d_world"][keep], frame["image"][keep]
        if len(pts) > self.points_per_frame:  # evenly over the frame, as scene.glb keeps them
            pick = np.linspace(0, len(pts) - 1, self.points_per_frame).astype(int)
            pts, rgb = pts[pick], rgb[pick]
        name = f"/points/{i % self.clouds}"
        self.server.scene.add_point_cloud(name, pts.astype(np.float32), rgb.astype(np.uint8), point_size=0.01)

    def _add_camera(self, i: int, frame: dict) -> None:
        slot = i % self.max_cameras
        if self._current is not None and self._current != slot:
            self._cameras[self._current].color = _EARLIER
        hw = frame["image"].shape[:2]
        self._cameras[slot] = _add_camera(
            self.server.scene, f"/cameras/{slot}", frame["c2w"], frame["intrinsics"], hw, _CURRENT
        )
        self._current = slot

    def _show_people(self, frame: dict) -> None:
        verts = frame.get("smpl_verts_world") if self.faces is not None else None
        n = 0 if verts is None else len(verts)
        for k in range(n):
            v, colour = np.asarray(verts[k], np.float32), tuple(track_colour(frame["smpl_id"][k]))
            if k == len(self._people):
                self._people.append(self.server.scene.add_mesh_simple(f"/people/{k}", v, self.faces, color=colour))
            else:
                mesh = self._people[k]
                mesh.vertices, mesh.color, mesh.visible = v, colour, True
        for mesh in self._people[n:]:
            mesh.visible = False

    def stop(self) -> None:
        with self._lock:
            self.server.stop()
