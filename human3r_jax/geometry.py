"""Small geometry helpers: quaternions, camera poses, rotation vectors, rigid transforms."""

from __future__ import annotations

import jax.numpy as jnp


def quat_to_matrix(q):
    """Real-first quaternions [..., 4] → rotation matrices [..., 3, 3] (2/‖q‖² form of the original)."""
    r, i, j, k = (q[..., n] for n in range(4))
    two_s = 2.0 / (q * q).sum(-1)
    m = [
        1 - two_s * (j * j + k * k),
        two_s * (i * j - k * r),
        two_s * (i * k + j * r),
        two_s * (i * j + k * r),
        1 - two_s * (i * i + k * k),
        two_s * (j * k - i * r),
        two_s * (i * k - j * r),
        two_s * (j * k + i * r),
        1 - two_s * (i * i + j * j),
    ]
    return jnp.stack(m, -1).reshape(q.shape[:-1] + (3, 3))


def pose_to_c2w(pose):
    """camera_pose [..., 7] (t, q) → camera-to-world [..., 4, 4]."""
    rot = quat_to_matrix(pose[..., 3:7])
    top = jnp.concatenate([rot, pose[..., :3, None]], axis=-1)
    bottom = jnp.broadcast_to(jnp.asarray([0, 0, 0, 1], pose.dtype), top.shape[:-2] + (1, 4))
    return jnp.concatenate([top, bottom], axis=-2)


def transform_points(c2w, pts):
    """c2w [B, 4, 4] applied to points [B, H, W, 3]."""
    return jnp.einsum("bij,bhwj->bhwi", c2w[:, :3, :3], pts) + c2w[:, None, None, :3, 3]


def matrix_to_quat(r):
    """Rotation matrices [..., 3, 3] → unit quaternions (w, x, y, z) with w ≥ 0 (Shepperd: the
    branch of the largest of w, x, y, z, as roma)."""
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    trace = m00 + m11 + m22
    cands = jnp.stack(
        [
            jnp.stack(
                [1 + trace, r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1
            ),
            jnp.stack(
                [
                    r[..., 2, 1] - r[..., 1, 2],
                    1 + m00 - m11 - m22,
                    r[..., 0, 1] + r[..., 1, 0],
                    r[..., 0, 2] + r[..., 2, 0],
                ],
                -1,
            ),
            jnp.stack(
                [
                    r[..., 0, 2] - r[..., 2, 0],
                    r[..., 0, 1] + r[..., 1, 0],
                    1 - m00 + m11 - m22,
                    r[..., 1, 2] + r[..., 2, 1],
                ],
                -1,
            ),
            jnp.stack(
                [
                    r[..., 1, 0] - r[..., 0, 1],
                    r[..., 0, 2] + r[..., 2, 0],
                    r[..., 1, 2] + r[..., 2, 1],
                    1 - m00 - m11 + m22,
                ],
                -1,
            ),
        ],
        -2,
    )  # [..., 4 branches, (w, x, y, z)]
    best = jnp.argmax(jnp.stack([trace, m00, m11, m22], -1), axis=-1)
    q = jnp.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    return jnp.where(q[..., :1] < 0, -q, q)


def rotmat_to_rotvec(r):
    """Rotation matrices [..., 3, 3] → axis-angle vectors [..., 3] (angle in [0, π]), through the unit
    quaternion as roma's rotmat_to_rotvec."""
    q = matrix_to_quat(r)
    v = q[..., 1:]
    sin_half = jnp.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2 * jnp.arctan2(sin_half, q[..., :1])
    # small angles: angle / sin(angle/2) → 2
    scale = jnp.where(sin_half > 1e-7, angle / jnp.maximum(sin_half, 1e-12), 2.0)
    return v * scale


def rotvec_to_rotmat(v):
    """Axis-angle vectors [..., 3] → rotation matrices [..., 3, 3] (Rodrigues; exact at angle 0)."""
    theta2 = (v * v).sum(-1)[..., None, None]
    safe = theta2 > 1e-12
    theta = jnp.sqrt(jnp.where(safe, theta2, 1.0))
    # sin θ/θ and (1 − cos θ)/θ², with their Taylor limits near 0
    a = jnp.where(safe, jnp.sin(theta) / theta, 1.0 - theta2 / 6.0)
    b = jnp.where(safe, (1.0 - jnp.cos(theta)) / jnp.where(safe, theta2, 1.0), 0.5 - theta2 / 24.0)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = jnp.zeros_like(x)
    k = jnp.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(v.shape[:-1] + (3, 3))
    eye = jnp.eye(3, dtype=v.dtype)
    return eye + a * k + b * (k @ k)


def project(points, K):
    """Pinhole projection of camera-frame points [..., N, 3] with intrinsics [..., 3, 3] → pixels [..., N, 2]."""
    y = points / points[..., 2:3]
    return jnp.einsum("...ij,...nj->...ni", K, y)[..., :2]


def inverse_rigid(T):
    """Inverse of rigid transforms [..., 4, 4]."""
    R, t = T[..., :3, :3], T[..., :3, 3]
    Rt = jnp.swapaxes(R, -1, -2)
    top = jnp.concatenate([Rt, -jnp.einsum("...ij,...j->...i", Rt, t)[..., None]], axis=-1)
    return jnp.concatenate(
        [top, jnp.broadcast_to(jnp.asarray([0, 0, 0, 1], T.dtype), top.shape[:-2] + (1, 4))], axis=-2
    )
