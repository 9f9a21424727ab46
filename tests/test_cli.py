"""The `human3r-jax` command: convert and parity, exit codes and one-line errors."""

import subprocess
import sys

from human3r_jax import checkpoint as ckpt
from human3r_jax.cli import main

from conftest import shared_path


def test_convert_then_load(tmp_path, capsys):
    src = shared_path("fixtures", "cut3r_tiny", "checkpoint.pth")
    assert main(["convert", str(src), str(tmp_path / "out")]) == 0
    assert "converted" in capsys.readouterr().out
    cfg, _, params = ckpt.load(tmp_path / "out")
    assert cfg.enc_embed_dim == 128
    assert main(["convert", str(src), str(tmp_path / "out")]) == 2  # exists, no --overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["convert", str(src), str(tmp_path / "out"), "--overwrite"]) == 0


def test_convert_errors_are_one_clear_message(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "missing.pth: no such file" in err and "Traceback" not in err
    (tmp_path / "junk.pth").write_bytes(b"hello")
    assert main(["convert", str(tmp_path / "junk.pth"), str(tmp_path / "o")]) == 2
    assert "junk.pth: not a PyTorch zip checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_parity_command_exit_code(capsys):
    fx = shared_path("fixtures", "cut3r_linear_tiny")
    assert main(["parity", str(fx)]) == 0
    assert "PASS" in capsys.readouterr().out
    # an impossible tolerance for one output makes the command fail
    assert main(["parity", str(fx), "--tol-for", "camera_pose=1e-12"]) == 1
    assert "FAIL (first departure: camera_pose)" in capsys.readouterr().out


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "human3r_jax.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "convert" in out.stdout and "parity" in out.stdout
