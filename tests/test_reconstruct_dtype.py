"""`reconstruct --dtype bfloat16`: the same files as float32 (keys, shapes, float32 arrays), values close to
the float32 run's but not equal, the dtype recorded in meta.json (tiny random Human3R, 3 frames of the sample clip
at 224×224); a bad --dtype is refused (CLI: exit 2; load_model: InputError); bfloat16 step outputs are cast to
float32 before anything is written."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from human3r_jax.cli import main
from human3r_jax.data.video import FrameSource, InputError
from human3r_jax.reconstruct import load_model
from human3r_jax.reconstruct.loop import _float32

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "sample.mp4"
FRAMES = 3
# Relative L2 error of bfloat16 against float32 (8 mantissa bits: ~4e-3 per rounding, compounded over the blocks
# and the chained poses) that the scene outputs stay under. Measured on these 3 frames: world points 4.2e-2, depth
# 2.1e-2, conf and c2w 1.3e-2, intrinsics 1.8e-6 (the focal fit averages the noise out); 2.4× margin on the worst.
# The people are not compared value by value: a detection near the threshold may change with the rounding.
BF16_REL = 0.1
CONTINUOUS = ("depth", "conf", "pts3d_world", "c2w", "intrinsics")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{dtype: output folder} of the same input reconstructed in float32 and in bfloat16."""
    root = tmp_path_factory.mktemp("dtype")
    images = root / "images"
    images.mkdir()
    for r in FrameSource(SAMPLE, max_frames=FRAMES):
        r.image.save(images / f"{r.index:04d}.png")
    outs = {}
    for dtype in ("float32", "bfloat16"):
        outs[dtype] = root / dtype
        argv = ["reconstruct", str(images), "--random-weights", "--size", "224", "--dtype", dtype]
        assert main([*argv, "--out", str(outs[dtype]), "--quiet"]) == 0
    return outs


def _files(out: Path) -> dict[str, dict[str, np.ndarray]]:
    """{file name: arrays} of a run's reconstruction.npz and frame files."""
    paths = [out / "reconstruction.npz", *sorted((out / "frames").iterdir())]
    files = {}
    for p in paths:
        with np.load(p) as z:
            files[p.name] = {k: z[k] for k in z.files}
    return files


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


def test_bfloat16_writes_the_float32_files_with_close_values(runs):
    ref, bf16 = _files(runs["float32"]), _files(runs["bfloat16"])
    assert ref.keys() == bf16.keys() and len(ref) == FRAMES + 1
    for name, arrays in ref.items():
        assert arrays.keys() == bf16[name].keys(), name
        for k, a in arrays.items():
            assert (bf16[name][k].shape, bf16[name][k].dtype) == (a.shape, a.dtype), f"{name}:{k}"
            assert a.dtype != np.float16 and str(a.dtype) != "bfloat16", f"{name}:{k}"
    for k in CONTINUOUS:
        ours = np.stack([bf16[f"{i:06d}.npz"][k] for i in range(FRAMES)])
        want = np.stack([ref[f"{i:06d}.npz"][k] for i in range(FRAMES)])
        assert ours.dtype == np.float32, k
        assert 0 < _rel(ours, want) < BF16_REL, (k, _rel(ours, want))


def test_meta_records_the_compute_dtype(runs):
    for dtype, out in runs.items():
        meta = json.loads((out / "meta.json").read_text())
        assert meta["complete"] and meta["compute_dtype"] == dtype and meta["frames"] == FRAMES


def test_bad_dtype_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["reconstruct", str(SAMPLE), "--random-weights", "--dtype", "float16", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--dtype" in err and "float16" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_load_model_refuses_an_unknown_dtype():
    with pytest.raises(InputError, match="--dtype must be one of float32, bfloat16, got 'float16'"):
        load_model(random_weights="human3r_tiny", dtype="float16")


def test_step_outputs_are_cast_to_float32_before_the_files():
    out = {"depth": jnp.full((2, 3), 1.5, jnp.bfloat16), "ids": jnp.arange(2), "valid": jnp.ones(2, bool)}
    cast = _float32(out)
    assert cast["depth"].dtype == jnp.float32 and float(cast["depth"][0, 0]) == 1.5
    assert cast["ids"] is out["ids"] and cast["valid"] is out["valid"]
