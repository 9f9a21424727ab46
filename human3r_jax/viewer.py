"""Interactive 3-D view of a reconstruction folder in the browser (viser, an optional extra).

    human3r-jax view OUT_DIR [--port 8080]      then open http://localhost:8080

A frame slider shows that frame's confident points, every camera up to it (the current one
highlighted) and its people's SMPL-X meshes coloured by track id; the confidence threshold and the
point decimation are sliders too. Frames are read from OUT_DIR/frames as they are shown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from human3r_jax.export import drawing_focal, track_colour
from human3r_jax.geometry import matrix_to_quat


class ViewerError(ValueError):
    pass


class SceneViewer:
    def __init__(self, out_dir: str | Path, host: str = "127.0.0.1", port: int = 8080, verbose: bool = False):
        try:
            import viser
        except ImportError:
            raise ViewerError("the viewer needs viser: pip install 'human3r-jax[viewer]'") from None
        self.out = Path(out_dir)
        summary = self.out / "reconstruction.npz"
        if not summary.is_file():
            raise ViewerError(f"{self.out}: no reconstruction.npz (is this a `human3r-jax reconstruct` output?)")
        with np.load(summary) as z:
            self.summary = {k: z[k] for k in z.files}
        self.n = len(self.summary["c2w"])
        if self.n == 0:
            raise ViewerError(f"{self.out}: the reconstruction has no frames")
        faces = self.out / "smplx_faces.npy"
        self.faces = np.load(faces) if faces.is_file() else None
        self.server = viser.ViserServer(host=host, port=port, verbose=verbose)
        self.server.scene.set_up_direction("-y")  # OpenCV camera axes: y points down
        gui = self.server.gui
        self.frame = gui.add_slider("frame", 0, self.n - 1, 1, self.n - 1)
        self.conf = gui.add_slider("confidence ≥", 1.0, 10.0, 0.1, 1.5)
        self.stride = gui.add_slider("point stride", 1, 16, 1, 2)
        for handle in (self.frame, self.conf, self.stride):
            handle.on_update(lambda _: self.show(int(self.frame.value)))
        self.handles: dict = {}
        self.show(self.n - 1)

    @property
    def port(self) -> int:
        return self.server.get_port()

    def show(self, i: int) -> None:
        scene = self.server.scene
        with np.load(self.out / "frames" / f"{i:06d}.npz") as f:
            every = (slice(None, None, int(self.stride.value)),) * 2
            pts, conf, img = f["pts3d_world"][every], f["conf"][every], f["image"][every]
            keep = conf >= self.conf.value
            self.handles["points"] = scene.add_point_cloud("/points", pts[keep], img[keep], point_size=0.01)
            ids = f["smpl_id"] if "smpl_id" in f.files else np.zeros(0, int)
            verts = f["smpl_verts_world"] if "smpl_verts_world" in f.files else None
        for name in [k for k in self.handles if k.startswith("/people/")]:
            self.handles.pop(name).remove()
        if verts is not None and self.faces is not None:
            for v, tid in zip(verts, ids):
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
            self.handles[name] = scene.add_camera_frustum(
                name, fov=float(2 * np.arctan2(h / 2, drawing_focal(k, h, w))), aspect=w / h, scale=0.05,
                color=(230, 30, 30) if j == i else (120, 120, 120),
                wxyz=tuple(np.asarray(matrix_to_quat(c2w[:3, :3]))), position=tuple(c2w[:3, 3]))

    def stop(self) -> None:
        self.server.stop()
