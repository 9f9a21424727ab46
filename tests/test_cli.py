"""The `human3r-jax` command: convert and parity, exit codes and one-line errors."""

import subprocess
import sys

from conftest import shared_path

from human3r_jax import checkpoint as ckpt
from human3r_jax.cli import main


def test_convert_then_load(tmp_path, capsys):
    src = shared_path("fixtures", "cut3r_tiny", "checkpoint.pth")
    assert main(["convert", str(src), str(tmp_path / "out")]) == 0
    assert "converted" in capsys.readouterr().out
    cfg, _, _params = ckpt.load(tmp_path / "out")
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


def test_view_and_convert_import_no_tensorflow_and_no_trainer():
    """The light commands stay light: their import (and --help) pulls in neither TensorFlow nor the trainer."""
    code = (
        "import sys\nfrom human3r_jax import cli\n"
        "for cmd in (['view', '--help'], ['convert', '--help'], ['evaluate', '--help']):\n"
        "    try:\n        cli.main(cmd)\n    except SystemExit:\n        pass\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] == 'tensorflow' or m.startswith('human3r_jax.train')]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out, out


def test_every_user_error_is_a_human3r_error():
    """The CLI catches one base class: each module's own error must derive from it."""
    import importlib
    import pkgutil

    import human3r_jax
    import human3r_jax.converters
    from human3r_jax.errors import Human3rError

    errors = []
    modules = [
        *pkgutil.walk_packages(human3r_jax.__path__, "human3r_jax."),
        *pkgutil.walk_packages(human3r_jax.converters.__path__, "human3r_jax.converters."),
    ]
    for m in modules:
        if m.name.startswith(("human3r_jax.train", "human3r_jax.data.bedlam")):
            continue  # TensorFlow-side modules: checked by name below
        mod = importlib.import_module(m.name)
        errors += [
            v
            for k, v in vars(mod).items()
            if k.endswith("Error") and isinstance(v, type) and issubclass(v, Exception) and v.__module__ == m.name
        ]
    from human3r_jax.data.bedlam import DataError
    from human3r_jax.data.bedlam_preprocess import BedlamError
    from human3r_jax.train.config import ConfigError
    from human3r_jax.train.trainer import TrainError

    errors += [DataError, BedlamError, ConfigError, TrainError]
    assert len(errors) >= 19
    internal = {"ConstructorError"}  # converter-internal, turned into CheckpointError before it reaches a user
    assert [e.__name__ for e in errors if not issubclass(e, Human3rError) and e.__name__ not in internal] == []
