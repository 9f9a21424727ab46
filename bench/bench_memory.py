"""Host memory of `reconstruct` on a long input: peak resident memory during the frames and at the end,
the whole-sequence export included (tiny random Human3R, CPU).

    python bench/bench_memory.py --frames 300

The input is a synthetic 64×48 clip (a window sliding over a random texture) reconstructed at 224
with the default settings (so scene.glb keeps up to 1 M points). The peak is the process's
ru_maxrss: after frame 60, after the last frame, and after the exports (reconstruction.npz,
trajectory.tum, scene.glb, meta.json). Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
from pathlib import Path

from options import count, json_path


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=count, default=300)
    p.add_argument("--json", type=json_path, default=Path("bench/results/memory.json"))
    args = p.parse_args(argv)

    import av
    import numpy as np

    from human3r_jax.reconstruct import Settings, load_model, reconstruct

    model = load_model(random_weights="human3r_tiny")
    rss = {"after_load": peak_mb()}
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "long.mp4"
        texture = np.random.default_rng(0).integers(0, 255, size=(48, 400, 3), dtype=np.uint8)
        with av.open(str(clip), "w") as c:
            s = c.add_stream("libx264", rate=10)
            s.height, s.width, s.pix_fmt = 48, 64, "yuv420p"
            for i in range(args.frames):
                frame = np.ascontiguousarray(texture[:, i % 300 : i % 300 + 64])
                for packet in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    c.mux(packet)
            for packet in s.encode():
                c.mux(packet)

        def record(j, res):
            record.n += 1
            if record.n in (60, args.frames):
                rss[f"after_frame_{record.n}"] = peak_mb()

        record.n = 0
        reconstruct([clip], Path(tmp) / "out", model, Settings(size=224), on_frame=record, progress=False)
        rss["after_export"] = peak_mb()
    res = {
        "frames": args.frames,
        "size": 224,
        "preset": "human3r_tiny",
        "peak_rss_mb": rss,
        "export_mb": rss["after_export"] - rss[f"after_frame_{args.frames}"],
    }
    print(f"{'stage':24s} {'peak RSS (MB)':>14s}")
    for k, v in rss.items():
        print(f"{k:24s} {v:14.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
