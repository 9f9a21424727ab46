"""exporters/gltf.py: the animated .glb read back (Khronos validator, trimesh, pygltflib) and its skin evaluated
here, from the parsed file, against the exact SMPL-X bodies of the fake reconstruction."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pygltflib
import pytest
from fake_reconstruction import write_fake_reconstruction

from human3r_jax.export import save_npz
from human3r_jax.exporters import folder, gltf
from human3r_jax.exporters.folder import ExportError
from human3r_jax.models.smplx import bodies_in_camera, load_smplx, to_world

ROOT = Path(__file__).resolve().parents[1]
N_FRAMES, FPS = 8, 10.0
FRAME_TIMES = (np.arange(N_FRAMES) * 2 / FPS).astype(np.float32)  # the fake's frame files: a video's frames 0, 2, …
# Track 3 leaves after frame 5, track 8 is absent from frames 0, 1, 4, 6 and 7: both have frames beyond their
# keyframes, where the animation's ends hold.
TRACKS = {3: range(6), 8: (2, 3, 5)}
Y_UP = np.diag([1.0, -1.0, -1.0])  # the glb's root rotation: OpenCV world → Y-up
# The skinned bodies drop SMPL-X's pose correctives: vertex distances to the exact bodies stay under the
# module docstring's 7.5 mm (measured on this synthetic model and these poses) with a margin, 1 cm; without
# the correctives every coordinate must match to float32 rounding.
TOL_EXACT_M = 1e-2
TOL_NO_CORRECTIVES_M = 1e-5


@pytest.fixture(scope="module")
def model(smplx_root):
    return load_smplx(smplx_root / "smplx" / "SMPLX_NEUTRAL.npz")


@pytest.fixture(scope="module")
def scene(tmp_path_factory, model):
    """The fake reconstruction, its glb and the parsed glb: (truth, rec, path, gltf, binary blob)."""
    tmp = tmp_path_factory.mktemp("gltf")
    truth = write_fake_reconstruction(tmp / "rec", n_frames=N_FRAMES, tracks=TRACKS, fps=FPS)
    rec = folder.load(tmp / "rec")
    path = tmp / "scene.glb"
    summary = gltf.write(rec, path, smplx=model)
    assert "2 animated SMPL-X bodies" in summary
    g = pygltflib.GLTF2.load(str(path))
    return truth, rec, path, g, g.binary_blob()


@pytest.fixture(scope="module")
def exact(scene, model):
    """Per track id: SMPL-X world vertices [F_t, 10475, 3] exact and without the pose correctives, from one
    batched `to_world(bodies_in_camera(...))` per model."""
    truth = scene[0]
    rows = [(tid, i) for tid, p in truth["people"].items() for i in p["frames"]]
    people = truth["people"]
    args = (
        np.stack([people[t]["betas"] for t, _ in rows]),
        np.stack([people[t]["expression"] for t, _ in rows]),
        np.stack([people[t]["rotmats"][i] for t, i in rows]),
        np.stack([people[t]["transl"][i] for t, i in rows]),
    )
    c2w = truth["c2w"][[i for _, i in rows]]
    flat = dataclasses.replace(model, posedirs=jnp.zeros_like(model.posedirs))
    out = {}
    for name, m in (("exact", model), ("no_correctives", flat)):
        verts = np.asarray(to_world(bodies_in_camera(m, *args), c2w).vertices, np.float64)
        for tid in people:
            out.setdefault(tid, {})[name] = verts[[n for n, (t, _) in enumerate(rows) if t == tid]]
    return out


# ---------------------------------------------------------------- reading the glb back


def accessor(g, blob, index) -> np.ndarray:
    """Accessor `index` as [count, components] (the writer packs views tightly)."""
    a = g.accessors[index]
    view = g.bufferViews[a.bufferView]
    dtype = {5126: np.float32, 5121: np.uint8, 5123: np.uint16, 5125: np.uint32}[a.componentType]
    n = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[a.type]
    return np.frombuffer(blob, dtype, a.count * n, view.byteOffset + (a.byteOffset or 0)).reshape(a.count, n)


def quat_matrix(q) -> np.ndarray:
    """(x, y, z, w) → [3, 3]."""
    x, y, z, w = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def sample(g, blob, sampler, t: np.float32) -> np.ndarray:
    """The sampler's value at the keyframe time t (before or after its keyframes: the first or the last)."""
    times, values = accessor(g, blob, sampler.input)[:, 0], accessor(g, blob, sampler.output)
    n = min(np.searchsorted(times, t), len(times) - 1)
    assert times[n] == t or not times[0] <= t <= times[-1], "t falls between keyframes"
    return values[n]


def node_matrices(g, blob, t: np.float32) -> np.ndarray:
    """[N, 4, 4] every node's global transform at the keyframe time t."""
    rest = {"translation": [0, 0, 0], "rotation": [0, 0, 0, 1], "scale": [1, 1, 1]}
    trs = [{path: getattr(n, path) or value for path, value in rest.items()} for n in g.nodes]
    for anim in g.animations:
        for ch in anim.channels:
            trs[ch.target.node][ch.target.path] = sample(g, blob, anim.samplers[ch.sampler], t)
    local = np.tile(np.eye(4), (len(g.nodes), 1, 1))
    for n, t in enumerate(trs):
        local[n, :3, :3] = quat_matrix(t["rotation"]) * np.asarray(t["scale"], np.float64)
        local[n, :3, 3] = t["translation"]
    world = np.zeros_like(local)

    def visit(n, parent):
        world[n] = parent @ local[n]
        for c in g.nodes[n].children:
            visit(c, world[n])

    for n in g.scenes[g.scene].nodes:
        visit(n, np.eye(4))
    return world


def skinned_vertices(g, blob, mesh_node, t: np.float32) -> np.ndarray:
    """[V, 3] the skinned mesh of `mesh_node` at the keyframe time t, by glTF's skinning equation."""
    world = node_matrices(g, blob, t)
    skin = g.skins[g.nodes[mesh_node].skin]
    ibm = accessor(g, blob, skin.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
    joint_matrix = world[skin.joints] @ ibm
    attrs = g.meshes[g.nodes[mesh_node].mesh].primitives[0].attributes
    pos = accessor(g, blob, attrs.POSITION).astype(np.float64)
    blend = np.zeros((len(pos), 4, 4))
    s = 0
    while getattr(attrs, f"JOINTS_{s}", None) is not None:
        joints = accessor(g, blob, getattr(attrs, f"JOINTS_{s}"))
        weights = accessor(g, blob, getattr(attrs, f"WEIGHTS_{s}")).astype(np.float64)
        blend += np.einsum("vi,vijk->vjk", weights, joint_matrix[joints])
        s += 1
    return np.einsum("vij,vj->vi", blend[:, :3, :3], pos) + blend[:, :3, 3]


def named(g, name) -> list[int]:
    return [n for n, node in enumerate(g.nodes) if node.name == name]


def person_nodes(g, tid) -> set[int]:
    """The `person_<tid>` node and every node below it."""
    (top,) = named(g, f"person_{tid}")
    nodes, todo = set(), [top]
    while todo:
        nodes.add(todo[-1])
        todo.extend(g.nodes[todo.pop()].children)
    return nodes


# ---------------------------------------------------------------- tests


def validator_dir() -> Path:
    return Path(os.environ.get("GLTF_VALIDATOR_DIR", ROOT / ".ci" / "node" / "node_modules" / "gltf-validator"))


def test_khronos_validator_reports_no_errors(scene, tmp_path):
    node, package = shutil.which("node"), validator_dir()
    if node is None:
        pytest.skip("node is not installed: the Khronos glTF validator runs on it")
    if not (package / "package.json").is_file():
        pytest.skip(
            f"no gltf-validator at {package} (npm install --prefix .ci/node gltf-validator, or GLTF_VALIDATOR_DIR)"
        )
    script = tmp_path / "validate.js"
    script.write_text(
        "const v = require(process.argv[2]);\n"
        "const bytes = new Uint8Array(require('fs').readFileSync(process.argv[3]));\n"
        "v.validateBytes(bytes).then(\n"
        "  (r) => console.log(JSON.stringify(r)),\n"
        "  (e) => { console.error(e); process.exit(1); });\n"
    )
    run = subprocess.run([node, str(script), str(package), str(scene[2])], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"]
    assert report["info"]["hasSkins"] and report["info"]["animationCount"] == 1


def test_trimesh_loads_meshes_and_points(scene):
    import trimesh

    _, rec, path, _, _ = scene
    loaded = trimesh.load(path)
    meshes = [geom for geom in loaded.geometry.values() if isinstance(geom, trimesh.Trimesh)]
    clouds = [geom for geom in loaded.geometry.values() if isinstance(geom, trimesh.PointCloud)]
    assert sorted(len(m.vertices) for m in meshes) == [10475, 10475]
    assert all(len(m.faces) == 20908 for m in meshes)
    points = rec.points(1.5, max_points=200_000)
    assert len(clouds) == 1 and len(clouds[0].vertices) == len(points["xyz"]) > 0
    np.testing.assert_allclose(np.sort(clouds[0].vertices[:, 0]), np.sort(points["xyz"][:, 0]), atol=1e-6)


def test_nodes_channels_and_keyframe_times(scene):
    _, _, path, g, blob = scene
    assert b"human3r-jax" in path.read_bytes()[:256]  # the generator, where `export --overwrite` looks
    for tid in TRACKS:
        assert len(named(g, f"person_{tid}")) == 1
    people = sorted(n.name for n in g.nodes if n.name.startswith("person_") and n.mesh is None)
    assert people == ["person_3", "person_8"]
    (anim,) = g.animations
    assert len(anim.channels) == 2 * (1 + 1 + 55) + 2  # per person: visibility, pelvis translation, 55 rotations
    (camera,) = named(g, "camera")
    for ch in anim.channels:
        times = accessor(g, blob, anim.samplers[ch.sampler].input)[:, 0]
        if ch.target.node == camera:
            np.testing.assert_array_equal(times, FRAME_TIMES)
        else:  # a person's: one frame before the first appearance to one after the last
            (tid,) = [t for t in TRACKS if ch.target.node in person_nodes(g, t)]
            np.testing.assert_array_equal(times, FRAME_TIMES[max(TRACKS[tid][0] - 1, 0) : TRACKS[tid][-1] + 2])
    assert {ch.target.path for ch in anim.channels if ch.target.node == camera} == {"translation", "rotation"}


def test_visibility_scale_is_zero_exactly_where_the_track_is_absent(scene):
    _, _, _, g, blob = scene
    (anim,) = g.animations
    for tid, frames in TRACKS.items():
        (person,) = named(g, f"person_{tid}")
        (ch,) = [c for c in anim.channels if c.target.node == person]
        sampler = anim.samplers[ch.sampler]
        assert ch.target.path == "scale" and sampler.interpolation == "STEP"
        scale = np.stack([sample(g, blob, sampler, t) for t in FRAME_TIMES])
        present = np.isin(np.arange(N_FRAMES), list(frames))
        assert np.array_equal(np.all(scale == 0, axis=1), ~present)
        assert np.all(scale[present] == 1)


def test_skinned_bodies_match_smplx(scene, exact):
    """The skin evaluated from the parsed file at every frame a person is present in: within the documented
    bound of the exact SMPL-X vertices, and within float32 rounding of SMPL-X without pose correctives."""
    truth, _, _, g, blob = scene
    worst = 0.0
    for tid, p in truth["people"].items():
        (mesh,) = named(g, f"person_{tid}_mesh")
        for n, k in enumerate(p["frames"]):
            v = skinned_vertices(g, blob, mesh, FRAME_TIMES[k]) @ Y_UP.T  # back to the reconstruction's world
            np.testing.assert_allclose(v, exact[tid]["no_correctives"][n], atol=TOL_NO_CORRECTIVES_M, rtol=0)
            worst = max(worst, np.linalg.norm(v - exact[tid]["exact"][n], axis=1).max())
    assert 0 < worst < TOL_EXACT_M


def test_camera_follows_the_trajectory(scene):
    truth, rec, _, g, blob = scene
    (camera,) = named(g, "camera")
    h, w = rec.hw
    persp = g.cameras[g.nodes[camera].camera].perspective
    np.testing.assert_allclose(persp.yfov, 2 * np.arctan(h / 2 / truth["K"][0, 1, 1]), rtol=1e-6)
    assert persp.aspectRatio == pytest.approx(w / h)
    flip = np.diag([1.0, -1.0, -1.0])  # glTF camera (−Z forward, +Y up) in the OpenCV camera's frame
    for k in range(N_FRAMES):
        m = node_matrices(g, blob, FRAME_TIMES[k])[camera]
        np.testing.assert_allclose(m[:3, :3], Y_UP @ truth["c2w"][k, :3, :3] @ flip, atol=1e-6)
        np.testing.assert_allclose(m[:3, 3], Y_UP @ truth["c2w"][k, :3, 3], atol=1e-6)


def test_cut3r_reconstruction_gives_cameras_and_points(tmp_path):
    """No people in the frame files: no SMPL-X needed, no bodies; an image-folder input's frames are timed by
    frame number / fps."""
    write_fake_reconstruction(tmp_path / "rec", n_frames=3, tracks={}, fps=None)
    for f in sorted((tmp_path / "rec" / "frames").glob("*.npz")):
        with np.load(f) as z:
            save_npz(f, {k: z[k] for k in z.files if not k.startswith(("smpl_", "n_detected"))})
    rec = folder.load(tmp_path / "rec")
    assert not rec.humans and rec.fps is None
    summary = gltf.write(rec, tmp_path / "scene.glb", fps=25.0)
    assert "0 animated SMPL-X bodies" in summary
    g = pygltflib.GLTF2.load(str(tmp_path / "scene.glb"))
    assert not g.skins and not [n for n in g.nodes if n.name.startswith("person_")]
    (anim,) = g.animations
    assert len(anim.channels) == 2
    np.testing.assert_allclose(accessor(g, g.binary_blob(), anim.samplers[0].input)[:, 0], np.arange(3) * 2 / 25.0)


def test_missing_smplx_is_refused(scene, tmp_path):
    rec = scene[1]
    with pytest.raises(ExportError, match=r"animated bodies need the SMPL-X model: pass --smplx PATH"):
        gltf.write(rec, tmp_path / "scene.glb")
    assert not (tmp_path / "scene.glb").exists()
