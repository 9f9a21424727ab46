"""bench/accelerator.sh and bench/accelerator.py: the one-line refusals (no OUT_DIR, no Python with jax), the parity
verdict read from `human3r-jax parity`'s own table, a step's timeout, the time kept for later steps, a partial
run's JSON and table, and (~2 min on 2 cores, in the default suite so the script cannot rot between the sessions
that have a GPU) the whole --dry-run: every step ok with plausible figures."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from human3r_jax.parity import Report, Row

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "accelerator.sh"
_spec = importlib.util.spec_from_file_location("accelerator", ROOT / "bench" / "accelerator.py")
accelerator = sys.modules["accelerator"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up there
_spec.loader.exec_module(accelerator)


def _sh(*args, python=sys.executable, timeout=60):
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(python)}
    argv = ["bash", str(SCRIPT), *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


def test_refuses_a_missing_out_dir():
    for args in ((), ("--dry-run",)):
        r = _sh(*args)
        assert r.returncode == 2 and "missing OUT_DIR" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_refuses_a_python_without_jax(tmp_path):
    no_site = tmp_path / "python-without-site"  # the same interpreter, its site-packages (and jax) hidden
    no_site.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    no_site.chmod(0o755)
    for python, why in ((tmp_path / "nowhere", "not found"), (no_site, "cannot import jax")):
        r = _sh(tmp_path / "out", python=python)
        assert r.returncode == 2 and why in r.stderr and str(python) in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_refuses_an_unknown_step(tmp_path):
    r = _sh(tmp_path / "out", "--steps", "parity,speed")
    assert r.returncode == 2 and "--steps" in r.stderr and "speed" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out" / "accelerator.json").exists()


def test_reads_the_parity_verdict_from_the_parity_table():
    rows = [Row("patch_embed", 2e-6, 1e-6, 1e-4), Row("dec_img_l3", 3e-4, 2e-3, 1e-4), Row("conf", 5e-4, 1.0, 1e-4)]
    failed = accelerator.parse_parity(Report("human3r_tiny", rows, [], []).table())
    assert failed == {
        "compared": 3,
        "worst": "conf",
        "worst_rel_l2": pytest.approx(5e-4, rel=1e-2),  # printed with 3 significant digits
        "passed": False,
        "first_departure": "dec_img_l3",
    }
    passed = accelerator.parse_parity(Report("human3r_tiny", rows[:1], [], []).table())
    assert passed["passed"] and passed["first_departure"] is None and passed["worst"] == "patch_embed"
    with pytest.raises(accelerator.StepError):
        accelerator.parse_parity("Traceback (most recent call last):")


def test_parity_runs_again_at_highest_precision_only_after_a_failure(tmp_path):
    parity, again = accelerator._parity_steps(tmp_path, lambda done: ["--smplx", "BODIES"])
    argv = parity.command({})
    assert argv[-4:] == ["parity", str(tmp_path), "--smplx", "BODIES"] and not parity.env
    assert again.command({"parity": {"status": "failed"}}) == argv
    assert again.env == {"JAX_DEFAULT_MATMUL_PRECISION": "highest"}
    for status in ("ok", "timeout", "skipped"):
        assert isinstance(again.command({"parity": {"status": status}}), str)  # skipped: nothing to explain
    missing, _ = accelerator._parity_steps(tmp_path / "absent", lambda done: [])
    assert "absent" in missing.command({})


def _step(name, code, keep_s=0.0):
    """A step running `python -c code` that reads nothing."""
    command = accelerator._always([sys.executable, "-c", code])
    return accelerator.Step(name, command, lambda log, wall: ({}, "done"), cap_s=60, least_s=0, keep_s=keep_s)


def test_a_stuck_step_times_out_and_the_later_ones_keep_their_time(tmp_path, monkeypatch):
    steps = [_step("stuck", "import time; time.sleep(60)"), _step("quick", "pass", keep_s=3)]
    monkeypatch.setattr(accelerator, "plan", lambda *a: steps)
    t0 = time.monotonic()
    assert accelerator.main([str(tmp_path), "--budget", "5"]) == 1  # a step timed out
    record = json.loads((tmp_path / "accelerator.json").read_text())
    stuck, quick = record["steps"]["stuck"], record["steps"]["quick"]
    # the budget's 5 s less the 3 s kept for `quick`
    assert stuck["status"] == "timeout" and stuck["timeout_s"] == pytest.approx(2, abs=0.2)
    assert quick["status"] == "ok" and quick["ok"] and quick["summary"] == "done"
    assert time.monotonic() - t0 < 10


def test_a_step_left_less_than_it_needs_is_skipped(tmp_path, monkeypatch):
    needy = _step("needy", "pass")
    needy.least_s = 30
    monkeypatch.setattr(accelerator, "plan", lambda *a: [_step("first", "pass"), needy])
    assert accelerator.main([str(tmp_path), "--budget", "20"]) == 0
    record = json.loads((tmp_path / "accelerator.json").read_text())
    assert record["steps"]["first"]["ok"] and record["steps"]["needy"]["status"] == "skipped"
    assert "no time left" in record["steps"]["needy"]["summary"]


def test_a_failing_step_records_its_last_line_and_the_run_goes_on(tmp_path, monkeypatch):
    steps = [_step("broken", "raise SystemExit('cannot load the model')"), _step("after", "pass")]
    monkeypatch.setattr(accelerator, "plan", lambda *a: steps)
    assert accelerator.main([str(tmp_path)]) == 1
    record = json.loads((tmp_path / "accelerator.json").read_text())
    assert record["steps"]["broken"]["status"] == "failed"
    assert record["steps"]["broken"]["error"] == "exit 1: cannot load the model"
    assert record["steps"]["after"]["ok"] and (tmp_path / "logs" / "broken.log").is_file()


def test_without_fixtures_parity_is_skipped_with_the_reason(tmp_path, capsys):
    out = tmp_path / "out"
    assert accelerator.main([str(out), "--steps", "parity", "--shared", str(tmp_path / "no_shared")]) == 0
    record = json.loads((out / "accelerator.json").read_text())
    assert list(record["steps"]) == ["environment", "parity", "parity_highest"]
    env, parity = record["steps"]["environment"], record["steps"]["parity"]
    assert env["ok"] and record["device"] == env["figures"]["device_kind"] and record["jax"]
    assert env["figures"]["human3r_jax"] == str(ROOT / "human3r_jax")  # the source tree, as on the device
    assert parity["status"] == "skipped" and str(tmp_path / "no_shared") in parity["summary"]
    capsys.readouterr()
    assert accelerator.main(["--summarize", str(out / "accelerator.json")]) == 0
    table = capsys.readouterr().out
    assert "parity " in table and "skipped" in table and "no parity fixture" in table
    assert accelerator.main(["--summarize", str(tmp_path / "none.json")]) == 2


def test_dry_run_every_step_ok(tmp_path):
    if accelerator.missing() and not (ROOT / "bench" / "wheels").is_dir():
        pytest.skip(f"this Python lacks {accelerator.missing()} and bench/wheels is absent")
    r = _sh(tmp_path / "out", "--dry-run", timeout=1500)
    record = json.loads((tmp_path / "out" / "accelerator.json").read_text())
    steps = record["steps"]
    assert r.returncode == 0, (r.stderr[-2000:], steps)
    assert "e2e_human3r_tiny_bfloat16" in r.stdout  # the table
    fixture = accelerator.DEFAULT_SHARED / "fixtures" / "human3r_tiny"
    for name, s in steps.items():
        if name == "parity_highest" or (name == "parity" and not fixture.is_dir()):
            assert s["status"] == "skipped" and s["summary"], name
        else:
            assert s["ok"] and s["seconds"] > 0, (name, s)
    if fixture.is_dir():
        assert steps["parity"]["figures"]["passed"] and steps["parity"]["figures"]["worst_rel_l2"] < 1e-4
    for dtype in ("float32", "bfloat16"):
        for c in steps[f"forward_human3r_tiny_{dtype}"]["figures"]["configs"]:
            assert c["dtype"] == dtype and c["compile_s"] > 0 and 0 < c["s_per_frame"] < c["compile_s"]
        e2e = steps[f"e2e_human3r_tiny_{dtype}"]["figures"]
        assert e2e["compute_dtype"] == dtype and e2e["frames"] == 2 and e2e["fps"] > e2e["whole_run_fps"] > 0
    train = steps["train"]["figures"]
    assert train["dtype"] == "bfloat16" and train["remat"] and 0 < train["step_s"] < train["compile_s"]
