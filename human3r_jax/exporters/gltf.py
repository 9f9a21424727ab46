"""Animated glTF 2.0 (.glb): the people as skinned SMPL-X bodies, the camera path as an animated camera and
the fused confident point cloud, in one binary file that Blender, three.js and other glTF viewers play.

Node tree (glTF is Y-up and in metres; the reconstruction's world has OpenCV axes, y down and z forward):

    world               rotation 180° about x (y → −y, z → −z), so that the scene stands upright; every
                        position below is in the reconstruction's world frame, in metres
      camera            a perspective camera: yfov of the first frame's K and aspect W/H (model
                        resolution); per frame the translation t_c2w and the rotation R_c2w Rx(180°) (a
                        glTF camera looks down −Z with +Y up, an OpenCV camera down +Z with y down)
      points            the fused confident point cloud (`Reconstruction.points`): POINTS with COLOR_0 (RGBA, alpha 255)
      person_<id>       one per track id; its scale is 1 in the frames the person is present in and 0 in
                        the others (STEP interpolation: glTF has no visibility channel, a zero scale is the
                        usual stand-in)
        pelvis …        the 55 SMPL-X joints, named as SMPL-X names them: the pelvis with its world
                        position and rotation per frame, every other joint with its SMPL-X local rotation
    person_<id>_mesh    the track's skinned mesh (a scene root, as glTF ignores a skinned mesh node's own
                        transform: the joints place it)

Bodies: each track is its rest mesh (`tracks.track_skeleton`: mean shape and expression, rest pose) with
SMPL-X's 55-joint skin (its skinning weights, all of them: a second JOINTS_1/WEIGHTS_1 set where a vertex
has more than 4 influences) and inverse bind matrices translate(−J_k); one animation drives the joints
(`tracks.track_pose`), so the file holds 55 quaternions per frame and person rather than 10475 vertices.
This drops SMPL-X's pose corrective blend shapes (posedirs) and the per-frame shape and expression.
Measured on the fake reconstruction of the tests (the synthetic SMPL-X model, random poses with σ = 0.2 rad
per joint axis, constant shape): the skinned vertices are within 7.5 mm of the exact SMPL-X vertices
(`to_world(bodies_in_camera(...))`; mean 1.1 mm, 99th percentile 3.5 mm) and within float32 rounding
(< 10 µm) of SMPL-X without the correctives; the real model's correctives were not measured here.

A person's keyframes run from the frame before their first appearance to the frame after their last (the
zero scale holds beyond them, as an animation clamps to its ends), so the file grows with each person's
time in view, not with people × video length. Where the person is absent the joints hold the last pose
(the first one before the first appearance).

Time: a frame's keyframes are at its time: a video's frame times (seconds, from the frame files), or input
frame number / fps for image folders or when `fps` is given (`tracks.frame_times`).

Options (keyword arguments of `write`; CLI --name-with-dashes):
    smplx           SMPLX_NEUTRAL.npz or its folder (or a loaded SmplxModel); required when the
                    reconstruction has people (Human3R); a CUT3R reconstruction gives cameras and points
    conf_threshold  1.5      points with a confidence above this
    max_points      200000   the point cloud is thinned by half whenever it passes this
    fps             None     frame rate for the frame times (default: the video's times; 30 for images)
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pygltflib as gl

from human3r_jax.export import drawing_focal, track_colour
from human3r_jax.exporters.folder import Reconstruction
from human3r_jax.exporters.tracks import (
    JOINT_NAMES,
    Sequence,
    Track,
    frame_times,
    gather,
    require_smplx,
    track_pose,
    track_skeleton,
)
from human3r_jax.geometry import matrix_to_quat
from human3r_jax.models.smplx import SmplxModel

_COMPONENT = {
    np.dtype(np.float32): gl.FLOAT,
    np.dtype(np.uint8): gl.UNSIGNED_BYTE,
    np.dtype(np.uint16): gl.UNSIGNED_SHORT,
    np.dtype(np.uint32): gl.UNSIGNED_INT,
}
_ROT_X_180 = [1.0, 0.0, 0.0, 0.0]  # quaternion (x, y, z, w)
_OPENCV_TO_GLTF_CAMERA = np.diag([1.0, -1.0, -1.0])  # in the camera's own frame: y and z flip


class _Document:
    """A glTF document with one binary buffer, built accessor by accessor."""

    def __init__(self):
        self.gltf = gl.GLTF2(asset=gl.Asset(generator="human3r-jax export"), scene=0)
        self.animation = gl.Animation(name="reconstruction")
        self._blob = bytearray()

    def accessor(
        self, array: np.ndarray, kind: str, target: int | None = None, bounds: bool = False, normalized: bool = False
    ) -> int:
        """Append `array` [count, ...] (its dtype gives the component type) as a tightly packed view."""
        array = np.ascontiguousarray(array)
        self._blob += bytes(-len(self._blob) % 4)  # every view starts 4-byte aligned
        self.gltf.bufferViews.append(
            gl.BufferView(buffer=0, byteOffset=len(self._blob), byteLength=array.nbytes, target=target)
        )
        self._blob += array.tobytes()
        flat = array.reshape(len(array), -1).astype(np.float64)
        self.gltf.accessors.append(
            gl.Accessor(
                bufferView=len(self.gltf.bufferViews) - 1,
                componentType=_COMPONENT[array.dtype],
                normalized=normalized or None,
                count=len(array),
                type=kind,
                min=flat.min(0).tolist() if bounds else None,
                max=flat.max(0).tolist() if bounds else None,
            )
        )
        return len(self.gltf.accessors) - 1

    def node(self, **fields) -> int:
        self.gltf.nodes.append(gl.Node(**fields))
        return len(self.gltf.nodes) - 1

    def animate(self, node: int, path: str, keyframes: int, values: np.ndarray, step: bool = False) -> None:
        """A channel moving `path` of `node` through `values` [F, 3 or 4] at the times in accessor `keyframes`."""
        output = self.accessor(values.astype(np.float32), gl.VEC4 if values.shape[1] == 4 else gl.VEC3)
        self.animation.samplers.append(
            gl.AnimationSampler(input=keyframes, output=output, interpolation="STEP" if step else "LINEAR")
        )
        target = gl.AnimationChannelTarget(node=node, path=path)
        self.animation.channels.append(gl.AnimationChannel(sampler=len(self.animation.samplers) - 1, target=target))

    def glb(self) -> bytes:
        """The binary glTF container: a 12-byte header, the JSON chunk and the BIN chunk. The JSON puts
        `asset` first, so that its generator (how `export --overwrite` knows our files) is near the start."""
        if self.animation.channels:
            self.gltf.animations.append(self.animation)
        self.gltf.buffers = [gl.Buffer(byteLength=len(self._blob))]
        document = json.loads(self.gltf.gltf_to_json())
        text = json.dumps({"asset": document.pop("asset"), **document}, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 4)  # chunks are padded to 4 bytes: JSON with spaces, BIN with zeros
        binary = bytes(self._blob) + bytes(-len(self._blob) % 4)
        chunks = struct.pack("<I4s", len(text), b"JSON") + text + struct.pack("<I4s", len(binary), b"BIN\0") + binary
        return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


def _quaternions(rotations: np.ndarray) -> np.ndarray:
    """[F, ..., 3, 3] → unit quaternions [F, ..., 4] (x, y, z, w), signs chosen frame to frame so that
    interpolation takes the short way."""
    q = np.asarray(matrix_to_quat(rotations.astype(np.float32)), np.float64)[..., [1, 2, 3, 0]]
    turn = np.where((q[1:] * q[:-1]).sum(-1, keepdims=True) < 0, -1.0, 1.0)
    q[1:] *= np.cumprod(turn, axis=0)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _camera(doc: _Document, rec: Reconstruction, seq: Sequence, keyframes: int) -> int:
    h, w = rec.hw
    yfov = 2 * np.arctan(h / 2 / drawing_focal(seq.intrinsics[0], h, w))
    doc.gltf.cameras.append(
        gl.Camera(type="perspective", perspective=gl.Perspective(yfov=float(yfov), aspectRatio=w / h, znear=0.01))
    )
    rotation = _quaternions(seq.c2w[:, :3, :3] @ _OPENCV_TO_GLTF_CAMERA)
    translation = seq.c2w[:, :3, 3]
    node = doc.node(
        name="camera",
        camera=0,
        translation=translation[0].tolist(),
        rotation=rotation[0].astype(np.float32).tolist(),
    )
    doc.animate(node, "translation", keyframes, translation)
    doc.animate(node, "rotation", keyframes, rotation)
    return node


def _points(doc: _Document, points: dict) -> int:
    rgba = np.concatenate([points["rgb"], np.full((len(points["rgb"]), 1), 255)], 1).astype(np.uint8)
    attributes = gl.Attributes(
        POSITION=doc.accessor(points["xyz"].astype(np.float32), gl.VEC3, gl.ARRAY_BUFFER, bounds=True),
        # RGBA: a vertex attribute's elements must fill whole 4-byte words
        COLOR_0=doc.accessor(rgba, gl.VEC4, gl.ARRAY_BUFFER, normalized=True),
    )
    doc.gltf.meshes.append(gl.Mesh(name="points", primitives=[gl.Primitive(attributes=attributes, mode=gl.POINTS)]))
    return doc.node(name="points", mesh=len(doc.gltf.meshes) - 1)


def _skin_attributes(doc: _Document, weights: np.ndarray) -> dict[str, int]:
    """SMPL-X's skinning weights [V, 55] as JOINTS_n / WEIGHTS_n sets of 4 influences each, largest first
    (as many sets as the most influenced vertex needs; unused slots: joint 0, weight 0)."""
    order = np.argsort(-weights, axis=1, kind="stable")
    n_sets = -(-int((weights > 0).sum(1).max()) // 4)
    joints = order[:, : 4 * n_sets]
    values = np.take_along_axis(weights, joints, axis=1)
    joints = np.where(values > 0, joints, 0)
    attributes = {}
    for s in range(n_sets):
        cols = slice(4 * s, 4 * s + 4)
        attributes[f"JOINTS_{s}"] = doc.accessor(joints[:, cols].astype(np.uint8), gl.VEC4, gl.ARRAY_BUFFER)
        attributes[f"WEIGHTS_{s}"] = doc.accessor(values[:, cols].astype(np.float32), gl.VEC4, gl.ARRAY_BUFFER)
    return attributes


def _person(
    doc: _Document, model: SmplxModel, track: Track, times: np.ndarray, faces: int, skin_sets: dict
) -> tuple[int, int]:
    """The track's joint tree under a `person_<id>` node and its skinned mesh node; → (person, mesh)."""
    skeleton = track_skeleton(model, track)
    rotations, pelvis = track_pose(skeleton, track)
    # Keyframes from one frame before the first appearance to one after the last: the zero scale there
    # holds beyond them (an animation clamps to its first and last keyframes).
    frames = np.arange(max(track.index[0] - 1, 0), min(track.index[-1] + 2, len(times)))
    held = np.maximum(np.searchsorted(track.index, frames, side="right") - 1, 0)
    quats, pelvis = _quaternions(rotations[held]), pelvis[held]
    present = np.isin(frames, track.index)
    offsets = skeleton.offsets()

    joints = [
        doc.node(name=name, translation=offsets[k].tolist(), rotation=quats[0, k].astype(np.float32).tolist())
        for k, name in enumerate(JOINT_NAMES)
    ]
    doc.gltf.nodes[joints[0]].translation = pelvis[0].tolist()
    for k, p in enumerate(skeleton.parents[1:], 1):
        doc.gltf.nodes[joints[p]].children.append(joints[k])
    visible_at_start = float(track.index[0] == 0)
    person = doc.node(name=f"person_{track.track_id}", children=[joints[0]], scale=[visible_at_start] * 3)

    keyframes = doc.accessor(times[frames].astype(np.float32), gl.SCALAR, bounds=True)
    doc.animate(person, "scale", keyframes, np.repeat(present[:, None], 3, 1).astype(np.float64), step=True)
    doc.animate(joints[0], "translation", keyframes, pelvis)
    for k, node in enumerate(joints):
        doc.animate(node, "rotation", keyframes, quats[:, k])

    inverse_bind = np.tile(np.eye(4), (len(joints), 1, 1))
    inverse_bind[:, :3, 3] = -skeleton.joints
    doc.gltf.skins.append(
        gl.Skin(
            name=f"person_{track.track_id}",
            joints=joints,
            skeleton=joints[0],
            inverseBindMatrices=doc.accessor(
                inverse_bind.transpose(0, 2, 1).reshape(-1, 16).astype(np.float32), gl.MAT4
            ),
        )
    )
    colour = (track_colour(track.track_id) / 255.0).tolist()
    doc.gltf.materials.append(
        gl.Material(
            name=f"person_{track.track_id}",
            pbrMetallicRoughness=gl.PbrMetallicRoughness(baseColorFactor=[*colour, 1.0], metallicFactor=0.0),
        )
    )
    position = doc.accessor(skeleton.vertices.astype(np.float32), gl.VEC3, gl.ARRAY_BUFFER, bounds=True)
    primitive = gl.Primitive(
        attributes=gl.Attributes(POSITION=position, **skin_sets),
        indices=faces,
        material=len(doc.gltf.materials) - 1,
    )
    doc.gltf.meshes.append(gl.Mesh(name=f"person_{track.track_id}", primitives=[primitive]))
    mesh = doc.node(name=f"person_{track.track_id}_mesh", mesh=len(doc.gltf.meshes) - 1, skin=len(doc.gltf.skins) - 1)
    return person, mesh


def write(
    rec: Reconstruction,
    dest: Path,
    smplx=None,
    conf_threshold: float = 1.5,
    max_points: int = 200_000,
    fps: float | None = None,
) -> str:
    """Write the animated scene to the .glb file `dest` (see the module docstring); → a one-line summary."""
    model = require_smplx(rec, smplx, "the animated bodies") if rec.humans else None
    seq = gather(rec)
    times = frame_times(rec, seq, fps)
    points = rec.points(conf_threshold, max_points=max_points)

    doc = _Document()
    world = doc.node(name="world", rotation=_ROT_X_180)
    children = [_camera(doc, rec, seq, doc.accessor(times.astype(np.float32), gl.SCALAR, bounds=True))]
    if len(points["xyz"]):
        children.append(_points(doc, points))
    meshes = []
    if seq.tracks:
        faces = np.asarray(model.faces).reshape(-1)
        faces = doc.accessor(
            faces.astype(np.uint16 if faces.max() < 65535 else np.uint32), gl.SCALAR, gl.ELEMENT_ARRAY_BUFFER
        )
        skin_sets = _skin_attributes(doc, np.asarray(model.lbs_weights, np.float64))
        for track in seq.tracks.values():
            person, mesh = _person(doc, model, track, times, faces, skin_sets)
            children.append(person)
            meshes.append(mesh)
    doc.gltf.nodes[world].children = children
    doc.gltf.scenes = [gl.Scene(name="reconstruction", nodes=[world, *meshes])]
    Path(dest).write_bytes(doc.glb())
    duration = times[-1] - times[0]
    return (
        f"glTF: {len(seq.tracks)} animated SMPL-X bodies, camera path over {len(times)} frames "
        f"({duration:.2f} s), {len(points['xyz']):,} points"
    )
