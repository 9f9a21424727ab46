"""The live viewer: frames handed to it (from another thread, as the reconstruction loop does) appear in the
scene viser's server holds, which is checked by replaying that server's record of the scene (what a browser
connecting now is sent), not only our counters; the scene stays within its budget over a long stream, people
meshes follow the current frame, and stop() releases the port. Network: 127.0.0.1 only."""

from __future__ import annotations

import dataclasses
import socket
import threading

import numpy as np
import pytest

pytest.importorskip("viser")

from fake_reconstruction import write_fake_reconstruction
from viser import _messages as M

from human3r_jax.export import track_colour
from human3r_jax.exporters.folder import load
from human3r_jax.geometry import quat_to_matrix
from human3r_jax.viewer import LiveViewer, ViewerError

FACES = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
RED, GREY = (230, 30, 30), (120, 120, 120)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """12 frames of a fake reconstruction (48 x 64) with people 3 (every frame) and 8 (frames 2, 3): each
    person given a 4-vertex mesh of its own, as smpl_verts_world."""
    folder = tmp_path_factory.mktemp("live") / "rec"
    write_fake_reconstruction(folder, n_frames=12, tracks={3: range(12), 8: range(2, 4)})
    rec, rng = load(folder), np.random.default_rng(0)
    out = []
    for i in range(rec.n_frames):
        f = rec.frame(i)
        f["smpl_verts_world"] = rng.normal(size=(len(f["smpl_id"]), 4, 3)).astype(np.float32)
        out.append(f)
    return out


def scene(viewer) -> dict[str, dict]:
    """The scene nodes viser's server holds: its broadcast buffer (the messages every browser that connects
        is sent, with replaced and removed nodes culled) replayed in order → node name → the node's message type,
        its props (as updated), position, orientation and visibility (viser sends no position or orientation that
    is the default)."""
    buffer = viewer.server._websock_server._broadcast_buffer
    with buffer.buffer_lock:
        messages = [buffer.message_from_id[k] for k in sorted(buffer.message_from_id)]
    nodes: dict[str, dict] = {}
    for m in messages:
        if isinstance(m, (M.CameraFrustumMessage, M.PointCloudMessage, M.MeshMessage)):
            props = {f.name: getattr(m.props, f.name) for f in dataclasses.fields(m.props)}
            at_rest = {"visible": True, "position": (0, 0, 0), "wxyz": (1, 0, 0, 0)}
            nodes[m.name] = {"type": type(m).__name__, **props, **at_rest}
        elif isinstance(m, M.RemoveSceneNodeMessage):
            nodes.pop(m.name, None)
        elif getattr(m, "name", None) in nodes:
            if isinstance(m, M.SetPositionMessage):
                nodes[m.name]["position"] = m.position
            elif isinstance(m, M.SetOrientationMessage):
                nodes[m.name]["wxyz"] = m.wxyz
            elif isinstance(m, M.SetSceneNodeVisibilityMessage):
                nodes[m.name]["visible"] = m.visible
            elif isinstance(m, M.SceneNodeUpdateMessage):
                nodes[m.name].update(m.updates)
    return nodes


def under(nodes: dict, prefix: str) -> dict:
    return {k: v for k, v in nodes.items() if k.startswith(prefix + "/")}


def kept_points(frame, conf=1.5, per_frame=5000):
    """The points LiveViewer should show of a frame: conf above the threshold, evenly thinned to per_frame."""
    keep = frame["conf"] > conf
    pts, rgb = frame["pts3d_world"][keep], frame["image"][keep]
    if len(pts) > per_frame:
        pick = np.linspace(0, len(pts) - 1, per_frame).astype(int)
        pts, rgb = pts[pick], rgb[pick]
    return pts, rgb


def add_from_a_thread(viewer, frames):
    """add_frame from another thread, as the reconstruction loop calls it."""
    thread = threading.Thread(target=lambda: [viewer.add_frame(i, f) for i, f in enumerate(frames)])
    thread.start()
    thread.join(30)
    assert not thread.is_alive()


@pytest.fixture
def viewer():
    v = LiveViewer(port=0, faces=FACES)  # 0: any free port
    yield v
    v.stop()


def test_frames_appear_in_the_servers_scene(viewer, frames):
    n = 6
    add_from_a_thread(viewer, frames[:n])
    nodes = scene(viewer)
    cams = under(nodes, "/cameras")
    assert viewer.frames_shown == n and sorted(cams) == [f"/cameras/{i}" for i in range(n)]
    for i in range(n):
        cam = cams[f"/cameras/{i}"]
        assert cam["type"] == "CameraFrustumMessage"
        np.testing.assert_allclose(cam["position"], frames[i]["c2w"][:3, 3], atol=1e-6)
        np.testing.assert_allclose(quat_to_matrix(np.asarray(cam["wxyz"])), frames[i]["c2w"][:3, :3], atol=1e-5)
        assert tuple(cam["color"]) == (RED if i == n - 1 else GREY)  # the newest camera highlighted
    clouds = under(nodes, "/points")
    assert sorted(clouds) == [f"/points/{i}" for i in range(n)]
    for i in range(n):
        pts, rgb = kept_points(frames[i])
        assert 0 < len(pts) < frames[i]["conf"].size  # the threshold removes some points, not all
        # viser sends points as float16 (its default precision): compare with the frame's points so rounded
        np.testing.assert_array_equal(clouds[f"/points/{i}"]["points"], pts.astype(np.float16))
        np.testing.assert_array_equal(clouds[f"/points/{i}"]["colors"], rgb)


def test_the_scene_stays_within_its_budget(frames):
    """3 point clouds and 4 cameras at most: the newest frames', and the server's record does not grow."""
    viewer = LiveViewer(port=0, faces=FACES, points_per_frame=50, max_points=150, max_cameras=4)
    try:
        sizes = []
        for i, f in enumerate(frames * 3):  # 36 frames
            viewer.add_frame(i, f)
            sizes.append(len(viewer.server._websock_server._broadcast_buffer.message_from_id))
        nodes = scene(viewer)
        clouds, cams = under(nodes, "/points"), under(nodes, "/cameras")
        assert len(clouds) == 3 and len(cams) == 4 and viewer.frames_shown == 36
        for i in (33, 34, 35):  # frame i sits in slot i % 3
            pts, _ = kept_points(frames[i % 12], per_frame=50)
            assert len(pts) == 50
            np.testing.assert_array_equal(clouds[f"/points/{i % 3}"]["points"], pts.astype(np.float16))
        for i in (32, 33, 34, 35):
            np.testing.assert_allclose(cams[f"/cameras/{i % 4}"]["position"], frames[i % 12]["c2w"][:3, 3], atol=1e-6)
        assert sizes[-1] == sizes[11]  # flat from the moment every ring slot is in use
    finally:
        viewer.stop()


def test_people_meshes_follow_the_current_frame(viewer, frames):
    for i, f in enumerate(frames[:6]):  # 1, 1, 2, 2, 1, 1 people
        viewer.add_frame(i, f)
        people = {k: v for k, v in under(scene(viewer), "/people").items() if v["visible"]}
        ids = f["smpl_id"]
        assert sorted(people) == [f"/people/{k}" for k in range(len(ids))]
        for k, tid in enumerate(ids):
            np.testing.assert_array_equal(people[f"/people/{k}"]["vertices"], f["smpl_verts_world"][k])
            np.testing.assert_array_equal(people[f"/people/{k}"]["faces"], FACES)
            assert tuple(people[f"/people/{k}"]["color"]) == tuple(track_colour(tid))
    assert len(under(scene(viewer), "/people")) == 2  # one node per person slot, the second one hidden


def test_no_people_without_faces(frames):
    viewer = LiveViewer(port=0)
    try:
        viewer.add_frame(0, frames[2])
        assert under(scene(viewer), "/people") == {} and len(under(scene(viewer), "/cameras")) == 1
    finally:
        viewer.stop()


def test_stop_releases_the_port(frames):
    viewer = LiveViewer(port=0)
    port = viewer.port
    viewer.add_frame(0, frames[0])
    viewer.stop()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # raises if the server still held it


def test_bad_port_is_refused_before_serving():
    with pytest.raises(ViewerError, match=r"^--port 70000: a TCP port is a number from 0 to 65535"):
        LiveViewer(port=70000)
