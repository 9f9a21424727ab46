"""Writes samples/sample.mp4, the self-made clip the README's first command reconstructs.

    python samples/make_sample.py      # deterministic (seeded); about 200 KB

A camera slides and turns across a procedural scene (a textured backdrop with coloured blocks and two
walking figures), 48 frames of 320×180 at 12 fps, H.264. Made here, so free to ship and reuse.
"""

from pathlib import Path

import av
import numpy as np

W, H, N, FPS = 320, 180, 48, 12


def scene(rng: np.random.Generator) -> np.ndarray:
    """A 3× wide panorama: smooth noise texture, horizon gradient and blocks of colour."""
    ws, hs = 3 * W, H + 60
    low = rng.uniform(0, 1, size=(hs // 20 + 2, ws // 20 + 2, 3))
    ys, xs = np.mgrid[0:hs, 0:ws] / 20.0
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
    tex = (
        low[y0, x0] * (1 - fy) * (1 - fx)
        + low[y0 + 1, x0] * fy * (1 - fx)
        + low[y0, x0 + 1] * (1 - fy) * fx
        + low[y0 + 1, x0 + 1] * fy * fx
    )
    sky = np.linspace([0.55, 0.7, 0.9], [0.9, 0.85, 0.7], hs)[:, None, :]
    img = 0.55 * sky + 0.45 * tex
    img[hs * 2 // 3 :] = 0.35 * img[hs * 2 // 3 :] + 0.65 * np.array([0.35, 0.3, 0.25])  # ground
    for _ in range(14):
        x, y = rng.integers(0, ws - 60), rng.integers(hs // 3, hs * 2 // 3)
        w, h = rng.integers(20, 60), rng.integers(30, 80)
        img[y : y + h, x : x + w] = rng.uniform(0.1, 0.9, size=3)
    return img


def figure(img, cx, base, height, colour):
    """A stick figure: head, torso and legs, drawn as filled discs and bars."""
    ys, xs = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    head = (xs - cx) ** 2 + (ys - (base - height)) ** 2 < (height * 0.12) ** 2
    torso = (np.abs(xs - cx) < height * 0.09) & (ys > base - height * 0.88) & (ys < base - height * 0.4)
    legs = (np.abs(np.abs(xs - cx) - height * 0.06) < height * 0.04) & (ys >= base - height * 0.4) & (ys < base)
    img[head | torso | legs] = colour


def main(out: Path = Path(__file__).with_name("sample.mp4")) -> None:
    rng = np.random.default_rng(7)
    pano = scene(rng)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "28", "preset": "slow"}
        for t in range(N):
            s = t / (N - 1)
            zoom = 1.0 + 0.25 * s  # the camera moves forward ...
            x0 = int(40 + 1.1 * W * s)  # ... and pans right
            ch, cw = int((H + 40) / zoom), int(W * 1.2 / zoom)
            crop = pano[10 : 10 + ch, x0 : x0 + cw]
            yi = (np.arange(H) * ch / H).astype(int)
            xi = (np.arange(W) * cw / W).astype(int)
            frame = crop[yi][:, xi].copy()
            figure(frame, int(W * (0.3 + 0.25 * s)), int(H * 0.92), int(H * 0.55), (0.8, 0.2, 0.2))
            figure(frame, int(W * (0.75 - 0.2 * s)), int(H * 0.88), int(H * 0.45), (0.2, 0.3, 0.8))
            pixels = (np.clip(frame, 0, 1) * 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB, {N} frames {W}x{H} at {FPS} fps)")


if __name__ == "__main__":
    main()
