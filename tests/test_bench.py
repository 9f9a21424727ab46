"""bench/bench.py --against-torch: bad checkouts and options are one line and exit code 2 before anything
runs; the RoPE stand-in for the official CUDA kernel against the rotation it implements.

The official code itself is not part of the repository: set HUMAN3R_OFFICIAL_CODE to a Human3R checkout
to also compare the stand-in with croco's own PyTorch RoPE.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import torch_reference  # noqa: E402

import bench  # noqa: E402


def checkout(root: Path, name: str) -> Path:
    """A folder with the files `name`'s checkout must hold (empty)."""
    for f in torch_reference.REQUIRED_FILES[name]:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).touch()
    return root


def run_bench(capsys, *argv: str) -> tuple[int, list[str]]:
    rc = bench.main(["--json", os.devnull, *argv])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


@pytest.fixture
def no_hub_cache(tmp_path, monkeypatch):
    """torch.hub's cache pointed at an empty folder (a DINOv2 checkout there would be used)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.mark.parametrize(
    "items, fault",
    [
        (["cut3r"], "expected NAME=PATH"),
        (["cut3r="], "expected NAME=PATH"),
        (["weights=/tmp"], "expected NAME=PATH"),
        (["cut3r={missing}"], "is not a folder"),
        (["cut3r={empty}"], "is not a cut3r checkout (no src/dust3r/model.py)"),
        (["cut3r={cut3r}", "cut3r={cut3r}"], "cut3r= is given twice"),
        (["cut3r={human3r}"], "is a Human3R checkout; pass it as human3r="),
        (["human3r={cut3r}"], "is not a human3r checkout (no src/mhmr/blocks/dinov2.py)"),
        (["human3r={human3r}"], "cut3r_224_linear_4 runs from the cut3r code: pass cut3r=PATH (Human3R's"),
    ],
)
def test_bad_checkout_is_one_line_exit_2(tmp_path, capsys, items, fault):
    paths = {
        "missing": tmp_path / "missing",
        "empty": tmp_path,
        "cut3r": checkout(tmp_path / "cut3r", "cut3r"),
        "human3r": checkout(tmp_path / "human3r", "human3r"),
    }
    argv = [item.format(**paths) for item in items]
    rc, err = run_bench(capsys, "--preset", "cut3r_224_linear_4", "--size", "224x224", "--against-torch", *argv)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("--against-torch: ")
    assert fault in err[0]


@pytest.mark.parametrize("size", ["abc", "512", "512x", "500x288", "512x290", "0x288", "512x288x3"])
def test_bad_size_is_refused_before_anything_runs(capsys, size):
    with pytest.raises(SystemExit) as e:
        bench.main(["--json", os.devnull, "--size", size])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --size: expected WxH in pixels, both positive multiples of 16, got {size!r}" in err


@pytest.mark.parametrize(
    "option, value, fault",
    [
        ("--frames", "0", "argument --frames: expected a whole number of at least 1, got '0'"),
        ("--frames", "nan", "argument --frames: expected a whole number of at least 1, got 'nan'"),
        ("--json", "{tmp}", "argument --json: {tmp} is a folder; give a file name for the JSON"),
    ],
)
def test_bad_count_or_json_path_is_refused_before_anything_runs(tmp_path, capsys, option, value, fault):
    with pytest.raises(SystemExit) as e:
        bench.main([option, value.format(tmp=tmp_path)])
    assert e.value.code == 2
    assert fault.format(tmp=tmp_path) in capsys.readouterr().err


@pytest.mark.parametrize(
    "script, option, value, fault",
    [
        ("bench_evaluate.py", "--frames", "0", "expected a whole number of at least 1, got '0'"),
        ("bench_memory.py", "--frames", "-3", "expected a whole number of at least 1, got '-3'"),
        ("bench_reconstruct.py", "--frames", "nan", "expected a whole number of at least 1, got 'nan'"),
        ("bench_train.py", "--steps", "0", "expected a whole number of at least 1, got '0'"),
        ("bench_train.py", "--size", "64x50", "expected WxH in pixels, both positive multiples of 16, got '64x50'"),
        ("bench_train.py", "--json", "{tmp}", "{tmp} is a folder; give a file name for the JSON"),
        ("bench_fsdp_memory.py", "--batch", "0", "expected a whole number of at least 1, got '0'"),
        ("bench_fsdp_memory.py", "--size", "abc", "expected WxH in pixels, both positive multiples of 16, got 'abc'"),
    ],
)
def test_other_bench_scripts_refuse_bad_values_before_anything_runs(tmp_path, script, option, value, fault):
    argv = [option, value.format(tmp=tmp_path)]
    if script == "bench_evaluate.py":
        argv += ["--smplx", str(tmp_path)]
    proc = subprocess.run([sys.executable, str(BENCH / script), *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"argument {option}: {fault.format(tmp=tmp_path)}" in proc.stderr


def test_human3r_preset_needs_dinov2(tmp_path, capsys, no_hub_cache):
    h3r = checkout(tmp_path / "human3r", "human3r")
    rc, err = run_bench(capsys, "--preset", "human3r_672S", "--against-torch", f"human3r={h3r}")
    assert rc == 2 and err == ["--against-torch: human3r_672S needs DINOv2's hub code: pass dinov2=PATH"]


def test_dinov2_from_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert torch_reference.dinov2_source({}) is None
    cached = checkout(tmp_path / "hub" / "facebookresearch_dinov2_main", "dinov2")
    assert torch_reference.dinov2_source({}) == cached
    given = checkout(tmp_path / "mine", "dinov2")
    assert torch_reference.dinov2_source({"dinov2": given}) == given


def test_preset_without_official_model(tmp_path, capsys):
    cut3r = checkout(tmp_path / "cut3r", "cut3r")
    rc, err = run_bench(capsys, "--preset", "cut3r_tiny", "--against-torch", f"cut3r={cut3r}")
    assert rc == 2 and len(err) == 1 and "no official model for preset 'cut3r_tiny'" in err[0]


def test_torch_not_installed(tmp_path, capsys, monkeypatch):
    cut3r = checkout(tmp_path / "cut3r", "cut3r")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))
    rc, err = run_bench(capsys, "--preset", "cut3r_224_linear_4", "--against-torch", f"cut3r={cut3r}")
    assert rc == 2 and err == ["--against-torch: PyTorch is not installed (pip install torch)"]


def test_checkout_that_does_not_import(tmp_path):
    """A folder with the right file names but other code: the reference process says so in one line."""
    pytest.importorskip("torch")
    cut3r = checkout(tmp_path / "cut3r", "cut3r")
    cmd = [sys.executable, str(BENCH / "torch_reference.py"), "--preset", "cut3r_224_linear_4", "--cut3r", str(cut3r)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and not proc.stdout
    assert err[0].startswith(f"--against-torch: the official code at cut3r={cut3r} does not import: ")


def _rope_reference(tokens: np.ndarray, positions: np.ndarray, base: float) -> np.ndarray:
    """Each half of the head dim as Q complex numbers (j, j+Q), turned by pos / base^(j/Q), in float64."""
    q = tokens.shape[-1] // 4
    out = np.empty_like(tokens, dtype=np.float64)
    for half in range(2):
        x = tokens[..., half * 2 * q : (half + 1) * 2 * q].astype(np.float64)
        z = x[..., :q] + 1j * x[..., q:]
        angle = positions[:, None, :, half, None] / base ** (np.arange(q) / q)  # [B, 1, N, Q]
        z = z * np.exp(1j * angle)
        out[..., half * 2 * q : half * 2 * q + q], out[..., half * 2 * q + q : (half + 1) * 2 * q] = z.real, z.imag
    return out


def test_rope_stand_in_is_the_rotation():
    """float32 tokens, negative positions included (the pose token's -1): within 1e-5 of the float64
    rotation, rotated in place like the kernel; float16 tokens come back float16 within float16 rounding."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(2, 3, 7, 16)).astype(np.float32)
    positions = rng.integers(-1, 30, size=(2, 7, 2))
    positions[0, 0] = -1
    want = _rope_reference(tokens, positions, 100.0)
    t = torch.from_numpy(tokens.copy())
    got = torch_reference.rope_2d(t, torch.from_numpy(positions), 100.0)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    assert got.data_ptr() == t.data_ptr()
    half = torch_reference.rope_2d(torch.from_numpy(tokens).half(), torch.from_numpy(positions), 100.0)
    assert half.dtype == torch.float16
    np.testing.assert_allclose(half.float().numpy(), want, atol=1e-2)


def test_rope_stand_in_matches_croco_for_non_negative_positions(monkeypatch):
    """croco's PyTorch fallback (official code) agrees where it works: positions >= 0 (1e-6, float32)."""
    root = os.environ.get("HUMAN3R_OFFICIAL_CODE")
    if not root or not (Path(root) / "src/croco/models/pos_embed.py").is_file():
        pytest.skip("set HUMAN3R_OFFICIAL_CODE to a Human3R checkout to compare with croco's RoPE")
    torch = pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("croco_pos_embed", Path(root) / "src/croco/models/pos_embed.py")
    croco = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "models.curope", None)  # no CUDA kernel: croco defines its PyTorch RoPE2D
    spec.loader.exec_module(croco)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(2, 4, 9, 32, generator=gen)
    positions = torch.randint(0, 40, (2, 9, 2), generator=gen)
    want = croco.RoPE2D(freq=100.0)(tokens, positions)
    got = torch_reference.rope_2d(tokens.clone(), positions, 100.0)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
