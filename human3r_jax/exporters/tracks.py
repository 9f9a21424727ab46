"""The people of a reconstruction as animated skeletons: what the body exporters (glTF, BVH) share.

`gather` reads the frames once, one at a time, and keeps per track id the frames it is present in and its
parameters there (small: [F_t, 53, 3, 3] rotations and a few vectors per frame). `track_skeleton` gives a
track ONE rest skeleton and rest mesh, from the track's mean shape β̄ and mean expression ψ̄ (a BVH file
and a glTF skin have a single rest skeleton; Human3R's per-frame shape estimates of one person vary a
little):

    T̄(β̄, ψ̄) = v_template + shapedirs·β̄ + exprdirs·ψ̄          rest mesh [10475, 3]
    J         = J_regressor T̄                                   rest joints [55, 3]

`track_pose` poses that skeleton in the world frame as Human3R places its bodies
(`models.smplx.bodies_in_camera` then `to_world`): the pelvis' world rotation is R_c2w R_global, every
other joint keeps its SMPL-X local rotation (`human3r_to_smplx_order`, eyes at rest), and the pelvis sits
where the head-centred placement puts it,

    pelvis_world = R_c2w (R_global (J_pelvis − J_head)_posed + t) + t_c2w,

with (·)_posed the joints posed with the global orientation at rest and t = `smpl_transl` (the head in the
camera frame). With a constant shape and expression `track_world_joints` equals the skeleton joints of
`to_world(bodies_in_camera(...))` (the tests check it to 1e-5 m); otherwise the head joint still lands
exactly on t and the limbs have the mean shape's lengths.

Frame times (`frame_times`): a video's frames keep the times of the frame files (seconds) unless a frame
rate is given; otherwise (image folders, or `fps` given) a frame's time is its input frame number / fps
(30 for image folders by default), so `--subsample` keeps the real spacing.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from human3r_jax.exporters.folder import ExportError, Reconstruction
from human3r_jax.models.smplx import HEAD, SmplxModel, human3r_to_smplx_order, load_smplx

# The 55 skeleton joints as SMPL-X names them (smplx's joint order: body, jaw, eyes, left then right hand).
_FINGERS = ("index", "middle", "pinky", "ring", "thumb")
JOINT_NAMES = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "jaw",
    "left_eye_smplhf",
    "right_eye_smplhf",
    *(f"{side}_{finger}{k}" for side in ("left", "right") for finger in _FINGERS for k in (1, 2, 3)),
)
NUM_BODY_JOINTS = 22  # pelvis and the 21 body joints: the skeleton without jaw, eyes and fingers
DEFAULT_FPS = 30.0  # the frame rate of an image folder when none is given

# OpenCV world (x right, y down, z forward) → Y-up (glTF, Blender's BVH import): 180° about x.
Y_UP = np.diag([1.0, -1.0, -1.0])


@dataclasses.dataclass
class Track:
    """One track id over the frames it is present in: index [F_t] (frame positions in the reconstruction,
    increasing), rotmats [F_t, 53, 3, 3] (Human3R's order; 0 = global orientation, camera frame), betas
    [F_t, 10], expression [F_t, 10], transl [F_t, 3] (head joint, camera frame), c2w [F_t, 4, 4]."""

    track_id: int
    index: np.ndarray
    rotmats: np.ndarray
    betas: np.ndarray
    expression: np.ndarray
    transl: np.ndarray
    c2w: np.ndarray


@dataclasses.dataclass
class Sequence:
    """The frames' cameras and times, and the people by track id (ascending). frame_index [F] (input frame
    numbers), time [F] (the frame files' `time`), c2w [F, 4, 4], intrinsics [F, 3, 3]."""

    frame_index: np.ndarray
    time: np.ndarray
    c2w: np.ndarray
    intrinsics: np.ndarray
    tracks: dict[int, Track]


@dataclasses.dataclass
class Skeleton:
    """A track's rest skeleton: parents [55] (parents[0] = -1), joints [55, 3] rest joint positions and
    vertices [10475, 3] the rest mesh (mean shape and expression, all rotations at rest), model frame."""

    parents: tuple[int, ...]
    joints: np.ndarray
    vertices: np.ndarray

    def offsets(self) -> np.ndarray:
        """[55, 3] each joint relative to its parent (the pelvis: its own position)."""
        parent_pos = np.concatenate([np.zeros((1, 3)), self.joints[list(self.parents[1:])]])
        return self.joints - parent_pos


_PERSON = ("smpl_rotmat", "smpl_shape", "smpl_expression", "smpl_transl")


def gather(rec: Reconstruction) -> Sequence:
    """Read every frame once and collect the cameras and, per track id, its frames and parameters. A track
    id listed twice in one frame (not expected of the tracker) keeps its highest-scoring entry."""
    frame_index, time, c2w, intrinsics = [], [], [], []
    people: dict[int, dict[str, list]] = {}
    for i, f in enumerate(rec.frames()):
        frame_index.append(int(f["frame_index"]))
        time.append(float(f["time"]))
        c2w.append(f["c2w"].astype(np.float64))
        intrinsics.append(f["intrinsics"].astype(np.float64))
        if "smpl_id" not in f or not all(k in f for k in _PERSON):
            continue
        order = np.argsort(-f["smpl_score"]) if "smpl_score" in f else np.arange(len(f["smpl_id"]))
        seen = set()
        for n in order:
            tid = int(f["smpl_id"][n])
            if tid in seen:
                continue
            seen.add(tid)
            p = people.setdefault(tid, {"index": [], "c2w": [], **{k: [] for k in _PERSON}})
            p["index"].append(i)
            p["c2w"].append(c2w[-1])
            for k in _PERSON:
                p[k].append(f[k][n])
    tracks = {
        tid: Track(
            track_id=tid,
            index=np.asarray(p["index"], np.int64),
            rotmats=np.stack(p["smpl_rotmat"]).astype(np.float32),  # the bulk: kept as stored
            betas=np.stack(p["smpl_shape"]).astype(np.float64),
            expression=np.stack(p["smpl_expression"]).astype(np.float64),
            transl=np.stack(p["smpl_transl"]).astype(np.float64),
            c2w=np.stack(p["c2w"]),
        )
        for tid, p in sorted(people.items())
    }
    return Sequence(
        frame_index=np.asarray(frame_index, np.int64),
        time=np.asarray(time, np.float64),
        c2w=np.stack(c2w),
        intrinsics=np.stack(intrinsics),
        tracks=tracks,
    )


def frame_times(rec: Reconstruction, seq: Sequence, fps: float | None = None) -> np.ndarray:
    """[F] seconds: a video's frame times, or input frame number / fps (see the module docstring); they
    must increase strictly (a keyframe track needs it)."""
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise ExportError(f"--fps: {fps}; expected a positive frame rate")
    video_times = fps is None and rec.fps is not None
    times = seq.time if video_times else seq.frame_index / (fps or DEFAULT_FPS)
    if np.any(np.diff(times) <= 0) or np.any(times < 0):
        raise ExportError(
            f"{rec.path}: the frame times do not increase strictly from 0 or later; pass --fps to time the "
            "frames by their frame numbers"
        )
    return times


def require_smplx(rec: Reconstruction, smplx, what: str) -> SmplxModel:
    """The SMPL-X model from the `smplx` option (a path as --smplx takes it, or a loaded SmplxModel)."""
    if smplx is None:
        raise ExportError(f"{rec.path}: {what} need the SMPL-X model: pass --smplx PATH")
    return smplx if isinstance(smplx, SmplxModel) else load_smplx(smplx)


def track_skeleton(model: SmplxModel, track: Track) -> Skeleton:
    """The track's rest skeleton and mesh from its mean betas and expression (module docstring)."""
    shape = np.asarray(model.shapedirs, np.float64) @ track.betas.mean(0)
    expression = np.asarray(model.exprdirs, np.float64) @ track.expression.mean(0)
    vertices = np.asarray(model.v_template, np.float64) + shape + expression
    joints = np.asarray(model.J_regressor, np.float64) @ vertices
    return Skeleton(parents=tuple(model.parents), joints=joints, vertices=vertices)


def forward_kinematics(skeleton: Skeleton, rotations: np.ndarray, pelvis: np.ndarray):
    """rotations [F, 55, 3, 3] (0: the pelvis' rotation in the target frame, others local), pelvis [F, 3]
    → world rotations [F, 55, 3, 3] and positions [F, 55, 3] of every joint."""
    offsets = skeleton.offsets()
    world_r, world_t = np.empty_like(rotations), np.empty(rotations.shape[:2] + (3,))
    world_r[:, 0], world_t[:, 0] = rotations[:, 0], pelvis
    for k, p in enumerate(skeleton.parents[1:], 1):  # parents come before their children
        world_r[:, k] = world_r[:, p] @ rotations[:, k]
        world_t[:, k] = world_r[:, p] @ offsets[k] + world_t[:, p]
    return world_r, world_t


def track_pose(skeleton: Skeleton, track: Track) -> tuple[np.ndarray, np.ndarray]:
    """The track's pose in the world frame (OpenCV axes): rotations [F_t, 55, 3, 3] (0: the pelvis' world
    rotation R_c2w R_global; 1–54: SMPL-X local rotations) and the pelvis' world position [F_t, 3]."""
    rotations = np.asarray(human3r_to_smplx_order(track.rotmats), np.float64)
    # The head relative to the pelvis with the global orientation at rest fixes where the pelvis goes.
    at_rest = rotations.copy()
    at_rest[:, 0] = np.eye(3)
    _, rest_t = forward_kinematics(skeleton, at_rest, np.zeros((len(rotations), 3)))
    r_global, r_c2w, t_c2w = rotations[:, 0], track.c2w[:, :3, :3], track.c2w[:, :3, 3]
    pelvis_cam = np.einsum("fij,fj->fi", r_global, -rest_t[:, HEAD]) + track.transl
    rotations[:, 0] = r_c2w @ r_global
    return rotations, np.einsum("fij,fj->fi", r_c2w, pelvis_cam) + t_c2w


def track_world_joints(skeleton: Skeleton, track: Track) -> np.ndarray:
    """[F_t, 55, 3] the track's skeleton joints in the world frame, by forward kinematics."""
    rotations, pelvis = track_pose(skeleton, track)
    return forward_kinematics(skeleton, rotations, pelvis)[1]
