"""One prepared run on a lent accelerator: parity, forward speed, end-to-end `reconstruct` and one training step
of the official recipe, each step a subprocess with its own timeout, all recorded in one JSON file rewritten after
every step (a run cut short keeps the steps it finished).

    bench/accelerator.sh OUT_DIR [--dry-run]              the way to run it (installs what is missing, then this)
    python bench/accelerator.py OUT_DIR [--dry-run] [--budget S] [--steps parity,forward,e2e,train]
    python bench/accelerator.py --summarize OUT_DIR/accelerator.json       prints the table of a (partial) run
    python bench/accelerator.py --collect-wheels bench/wheels [--python-version 3.11 3.12 3.13]   before shipping
    python bench/accelerator.py --missing                  the packages this Python lacks for the steps, one a line

Steps (random weights; `--dry-run`: the same steps with the tiny preset at tiny sizes, 1–2 frames, on any machine):

    environment     device kind and count, jax / jaxlib / Python versions, device memory
    body_model      a synthetic SMPL-X (../shared/tools/make_fake_smplx.py, seed 0: the fixtures'), for parity's
                    bodies and for training
    parity          `human3r-jax parity ../shared/fixtures/human3r_tiny --smplx …` in float32: pass/fail, worst rel.
                    L2; after a failure, parity_highest runs it again with JAX_DEFAULT_MATMUL_PRECISION=highest
                    (a pass there blames TF32 matmuls)
    forward_P_D     bench/bench.py's run_one for preset P (human3r_672S, human3r_896L) in dtype D at 512x288, lean
                    then full heads: compile s, median s/frame over 10 frames, peak device GB (memory_stats)
    e2e_P_D         `reconstruct samples/sample.mp4` (48 frames at 512, no bodies): frames/s after the compiling
                    first frame, and of the whole run (start-up, weights and compilation included)
    train           bench/bench_train.py: human3r_896L, batch 8, 4 views, 512x288, 10 slots, bfloat16, remat:
                    compile s, s/step, peak device GB

A step's timeout is its own cap within what is left of --budget (default 345 s: the whole script in about 6
minutes), less 120 s kept for the training step until it runs; a step left less time than it needs is skipped
rather than started to time out, and 896L's end to end runs last, only when its whole cap is left (rerun what was
skipped with --steps). OUT_DIR/accelerator.json holds, per step, status (ok, failed, timeout, skipped), seconds,
figures and a one-line summary or error; OUT_DIR/logs/STEP.log its output.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import functools
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SAMPLE = ROOT / "samples" / "sample.mp4"
DEFAULT_SHARED = Path(os.environ.get("HUMAN3R_JAX_SHARED", ROOT.parent / "shared"))
# What the steps import beyond an accelerator image's JAX stack (jax, jaxlib, flax, optax, orbax-checkpoint, chex,
# numpy and their dependencies), as import name → distribution: PyAV decodes the clip, Pillow preprocesses frames
# and writes the synthetic training data, trimesh writes scene.glb, tqdm is the converter's progress bar.
NEEDED = {"av": "av", "PIL": "pillow", "trimesh": "trimesh", "tqdm": "tqdm"}
WHEELS_LIMIT = 60 * 2**20  # the device tool carries 64 MiB in all, the source tree (~2 MiB) included
STEP_GROUPS = ("parity", "forward", "e2e", "train")


class StepError(Exception):
    """A step's output lacks what its figures are read from."""


@dataclasses.dataclass(frozen=True)
class Profile:
    """The sizes of a run: the accelerator's, or the CPU rehearsal of the same steps (--dry-run)."""

    presets: tuple[str, ...]  # forward and end-to-end models; end to end runs the first within the budget
    forward_size: str
    forward_frames: int
    e2e_args: str  # reconstruct's options, as typed
    train_args: str  # bench/bench_train.py's options, as typed
    budget_s: float
    cap_scale: float  # the caps below are the accelerator's; a CPU compiles more slowly
    xla_flags: str = ""  # added to XLA_FLAGS for every step


DEVICE = Profile(
    presets=("human3r_672S", "human3r_896L"),
    forward_size="512x288",
    forward_frames=10,
    e2e_args="--size 512",
    train_args="--preset human3r_896L --batch 8 --views 4 --size 512x288 --humans 10 --dtype bfloat16 --remat "
    "--steps 3",
    budget_s=345,
    cap_scale=1,
)
DRY = Profile(
    presets=("human3r_tiny",),
    forward_size="64x48",
    forward_frames=2,
    e2e_args="--size 224 --max-frames 2",
    train_args="--preset human3r_tiny --batch 1 --views 2 --size 32x32 --humans 2 --dtype bfloat16 --remat --steps 1",
    budget_s=1200,
    cap_scale=4,
    # a rehearsal's figures mean nothing: XLA:CPU compiles about twice as fast without LLVM's optimisations
    xla_flags="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
)


@dataclasses.dataclass
class Step:
    name: str
    command: Callable[[dict], list[str] | str]  # the steps done so far → argv, or why this one is skipped
    read: Callable[[Path, float], tuple[dict, str]]  # (its log, its wall s) → figures and a one-line summary
    cap_s: float  # its own timeout (before the profile's cap_scale)
    least_s: float  # skipped when less is left: it could not finish
    keep_s: float = 0  # kept for it while the earlier steps run (the training step: the official recipe)
    optional: bool = False  # runs only when its whole cap is left
    env: dict = dataclasses.field(default_factory=dict)


# ---- what the steps run and read ---------------------------------------------------------------------------------


def _result_line(log: Path) -> dict:
    """The last `RESULT {json}` line a child printed (bench/bench.py's convention)."""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise StepError(f"no RESULT line in {log.name}")
    return json.loads(lines[-1][len("RESULT ") :])


_PARITY_LINE = re.compile(r"(\d+) compared, worst (\S+) (\S+); (PASS|FAIL)(?: \(first departure: (\S+)\))?")


def parse_parity(text: str) -> dict:
    """`human3r-jax parity`'s closing line → compared rows, worst stage and its relative L2, pass/fail."""
    found = _PARITY_LINE.findall(text)
    if not found:
        raise StepError("no closing `N compared, worst …` line in the parity output")
    n, worst, rel, verdict, first = found[-1]
    return {
        "compared": int(n),
        "worst": worst,
        "worst_rel_l2": float(rel),
        "passed": verdict == "PASS",
        "first_departure": first or None,
    }


def _read_parity(log: Path, wall: float) -> tuple[dict, str]:
    f = parse_parity(log.read_text(errors="replace"))
    verdict = "PASS" if f["passed"] else f"FAIL from {f['first_departure']}"
    return f, f"{verdict}: {f['compared']} compared, worst {f['worst']} {f['worst_rel_l2']:.2e}"


def _read_environment(log: Path, wall: float) -> tuple[dict, str]:
    f = _result_line(log)
    memory = f"{f['memory_gb']:.0f} GB" if f["memory_gb"] else "memory not reported"
    return f, (
        f"{f['device_kind']} ×{f['device_count']} ({f['platform']}, {memory}), jax {f['jax']}, "
        f"jaxlib {f['jaxlib']}, Python {f['python']}"
    )


def _read_forward(log: Path, wall: float) -> tuple[dict, str]:
    f = _result_line(log)

    def one(r: dict) -> str:
        peak = "" if r["peak_device_gb"] is None else f", peak {r['peak_device_gb']:.1f} GB"
        return (
            f"{r['heads']} {r['s_per_frame'] * 1e3:.1f} ms ({r['fps']:.1f} fps, compile {r['compile_s']:.0f} s{peak})"
        )

    return f, "; ".join(one(r) for r in f["configs"])


def _reader_e2e(out: Path) -> Callable[[Path, float], tuple[dict, str]]:
    def read(log: Path, wall: float) -> tuple[dict, str]:
        meta_file = out / "meta.json"
        if not meta_file.is_file():
            raise StepError(f"{meta_file} not written")
        meta = json.loads(meta_file.read_text())
        t = meta["timing"]
        if not meta["complete"] or not t.get("end_to_end_s_per_frame"):
            raise StepError(f"{meta_file}: incomplete run ({meta['frames']} frames)")
        f = {
            "frames": meta["frames"],
            "compute_dtype": meta.get("compute_dtype"),
            "first_frame_s": t["first_frame_s"],
            "forward_s_per_frame": t["forward_s_per_frame"],
            "end_to_end_s_per_frame": t["end_to_end_s_per_frame"],
            "fps": 1 / t["end_to_end_s_per_frame"],
            "whole_run_s": wall,
            "whole_run_fps": meta["frames"] / wall,
        }
        return f, (
            f"{f['fps']:.1f} frames/s after the first (forward {f['forward_s_per_frame'] * 1e3:.1f} ms); whole run "
            f"{f['frames']} frames in {wall:.0f} s ({f['whole_run_fps']:.2f} frames/s)"
        )

    return read


def _reader_json(path: Path) -> Callable[[Path, float], tuple[dict, str]]:
    def read(log: Path, wall: float) -> tuple[dict, str]:
        if not path.is_file():
            raise StepError(f"{path.name} not written")
        f = json.loads(path.read_text())
        device = "not reported" if f["peak_device_gb"] is None else f"{f['peak_device_gb']} GB"
        return f, (
            f"{f['step_s']:.2f} s/step ({f['frames_per_s']} frames/s), compile {f['compile_s']:.0f} s, "
            f"peak device memory {device}, RSS {f['peak_rss_gb']} GB"
        )

    return read


def _read_body_model(path: Path) -> Callable[[Path, float], tuple[dict, str]]:
    def read(log: Path, wall: float) -> tuple[dict, str]:
        if not (path / "smplx" / "SMPLX_NEUTRAL.npz").is_file():
            raise StepError(f"{path}/smplx/SMPLX_NEUTRAL.npz not written")
        return {"path": str(path)}, "synthetic SMPL-X (seed 0)"

    return read


def _always(argv: list[str]) -> Callable[[dict], list[str]]:
    return lambda done: argv


def _child_argv(kind: str, **spec) -> list[str]:
    """This script's `--child KIND SPEC` (an in-process step run as a subprocess)."""
    return [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(spec)]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "human3r_jax.cli", *args]


def _bodies(smplx: Path | None, tool: Path, done: dict) -> list[str] | str:
    """--smplx for parity and training, or why there is no SMPL-X model."""
    if smplx is None:
        return f"no SMPL-X model ({tool} not found; pass --smplx DIR)"
    if "body_model" in done and not done["body_model"]["ok"]:
        return "no SMPL-X model (the body_model step failed)"
    return ["--smplx", str(smplx)]


def _parity_steps(fixture: Path, bodies: Callable[[dict], list[str] | str]) -> list[Step]:
    def parity(done: dict) -> list[str] | str:
        if not fixture.is_dir():
            return f"no parity fixture: {fixture} not found (pass --shared DIR)"
        extra = bodies(done)
        return _cli("parity", str(fixture), *(extra if isinstance(extra, list) else []))

    def again(done: dict) -> list[str] | str:
        if done["parity"]["status"] != "failed":
            return f"parity {done['parity']['status']}: nothing to explain"
        return parity(done)

    highest = {"JAX_DEFAULT_MATMUL_PRECISION": "highest"}
    return [
        Step("parity", parity, _read_parity, cap_s=90, least_s=15),
        Step("parity_highest", again, _read_parity, cap_s=60, least_s=15, env=highest),
    ]


def _forward_steps(profile: Profile) -> list[Step]:
    steps = []
    for preset in profile.presets:
        cap, least = (90, 40) if preset.endswith("L") else (75, 30)
        for dtype in ("float32", "bfloat16"):
            argv = _child_argv(
                "forward", preset=preset, size=profile.forward_size, dtype=dtype, frames=profile.forward_frames
            )
            steps.append(Step(f"forward_{preset}_{dtype}", _always(argv), _read_forward, cap, least))
    return steps


def _e2e_steps(profile: Profile, work: Path) -> list[Step]:
    steps = []
    for i, preset in enumerate(profile.presets):
        for dtype in ("float32", "bfloat16"):
            out = work / f"e2e_{preset}_{dtype}"
            argv = _cli("reconstruct", str(SAMPLE), "--random-weights", preset, "--dtype", dtype, "--out", str(out))
            argv += ["--quiet", *profile.e2e_args.split()]
            read = _reader_e2e(out)
            steps.append(Step(f"e2e_{preset}_{dtype}", _always(argv), read, cap_s=60, least_s=20, optional=i > 0))
    return steps


def _train_step(profile: Profile, work: Path, bodies: Callable[[dict], list[str] | str]) -> Step:
    result = work / "train.json"

    def train(done: dict) -> list[str] | str:
        extra = bodies(done)
        if isinstance(extra, str):
            return extra
        bench = [sys.executable, str(BENCH / "bench_train.py")]
        return [*bench, *profile.train_args.split(), *extra, "--json", str(result)]

    return Step("train", train, _reader_json(result), cap_s=240, least_s=90, keep_s=120)


def plan(profile: Profile, groups: set[str], shared: Path, smplx: Path | None, work: Path) -> list[Step]:
    """The steps of a run, in order; `groups` picks among STEP_GROUPS (the environment always runs). The end to end
    runs of the presets after the first go last, when time allows."""
    tool = shared / "tools" / "make_fake_smplx.py"
    steps = [Step("environment", _always(_child_argv("environment")), _read_environment, cap_s=60, least_s=5)]
    if smplx is None and groups & {"parity", "train"} and tool.is_file():
        smplx = work / "body_models"
        argv = [sys.executable, str(tool), "--root", str(smplx), "--seed", "0"]
        steps.append(Step("body_model", _always(argv), _read_body_model(smplx), cap_s=60, least_s=5))
    bodies = functools.partial(_bodies, smplx, tool)
    if "parity" in groups:
        steps += _parity_steps(shared / "fixtures" / "human3r_tiny", bodies)
    if "forward" in groups:
        steps += _forward_steps(profile)
    e2e = _e2e_steps(profile, work) if "e2e" in groups else []
    steps += [s for s in e2e if not s.optional]
    if "train" in groups:
        steps.append(_train_step(profile, work, bodies))
    return steps + [s for s in e2e if s.optional]


# ---- running them ------------------------------------------------------------------------------------------------


def _run_command(argv: list[str], log: Path, timeout: float, env: dict) -> tuple[int | None, float]:
    """Run argv in its own process group, output to log → (exit status or None after the timeout, wall s). The
    whole group is killed on a timeout or an interruption: a stuck compiler or data worker cannot outlive it."""
    t0 = time.monotonic()
    with log.open("w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        if rc is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return rc, time.monotonic() - t0


def _last_line(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def _record(name: str, timeout: float, summary: str | None = None) -> dict:
    """A step's entry in accelerator.json, before it runs (a skipped step's: summary says why)."""
    return {
        "name": name,
        "status": "skipped",
        "ok": False,
        "seconds": 0.0,
        "timeout_s": round(timeout, 1),
        "figures": {},
        "summary": summary,
        "error": None,
        "command": None,
    }


def run_step(step: Step, done: dict, timeout: float, logs: Path, env: dict) -> dict:
    """Run one step within `timeout` seconds → its record."""
    rec = _record(step.name, timeout)
    command = step.command(done)
    if isinstance(command, str):
        rec["summary"] = command
        return rec
    rec["command"] = command
    print(f"accelerator: {step.name} (at most {timeout:.0f} s)", file=sys.stderr, flush=True)
    log = logs / f"{step.name}.log"
    rc, wall = _run_command(command, log, timeout, {**env, **step.env})
    rec["seconds"] = round(wall, 2)
    if rc is None:
        rec.update(status="timeout", error=f"no result within {timeout:.0f} s (its log: logs/{log.name})")
        return rec
    try:
        rec["figures"], rec["summary"] = step.read(log, wall)
    except (StepError, KeyError, ValueError, TypeError, ZeroDivisionError) as e:
        rec["error"] = f"{type(e).__name__}: {e}"
    if rc != 0:
        rec["error"] = f"exit {rc}: {_last_line(log)}"
    rec["status"] = "ok" if rc == 0 and rec["error"] is None else "failed"
    rec["ok"] = rec["status"] == "ok"
    return rec


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)


def _terminate(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(args) -> int:
    if args.work is not None:
        return _run(args, args.work)
    with tempfile.TemporaryDirectory(prefix="accelerator_") as work:
        return _run(args, Path(work))


def _run(args, work: Path) -> int:
    profile = DRY if args.dry_run else DEVICE
    budget = args.budget or profile.budget_s
    args.out_dir.mkdir(parents=True, exist_ok=True)
    logs = args.out_dir / "logs"
    logs.mkdir(exist_ok=True)
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    path = args.out_dir / "accelerator.json"
    steps = plan(profile, set(args.steps), args.shared, args.smplx, work)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "XLA_FLAGS": " ".join(filter(None, [os.environ.get("XLA_FLAGS"), profile.xla_flags])),
        "TMPDIR": str(work / "tmp"),  # what the benchmarks leave in temporary folders goes with the work folder
    }
    record = {
        "dry_run": args.dry_run,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "budget_s": budget,
        "elapsed_s": 0.0,
        "python": platform.python_version(),
        "host": {"executable": sys.executable, "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "device": None,
        "jax": None,
        "jaxlib": None,
        "steps": {},
    }
    start = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        for i, step in enumerate(steps):
            left = budget - (time.monotonic() - start)
            kept = sum(s.keep_s for s in steps[i + 1 :] if not s.optional)
            cap = step.cap_s * profile.cap_scale
            timeout = min(cap, left - kept)
            if (step.optional and left - kept < cap) or timeout < max(step.least_s, 1):
                rec = _record(step.name, 0, f"no time left ({left:.0f} s of the budget)")
            else:
                rec = run_step(step, record["steps"], timeout, logs, env)
            record["steps"][step.name] = rec
            if step.name == "environment" and rec["ok"]:
                f = rec["figures"]
                record.update(device=f["device_kind"], jax=f["jax"], jaxlib=f["jaxlib"], python=f["python"])
            record["elapsed_s"] = round(time.monotonic() - start, 1)
            _write_json(path, record)
    except KeyboardInterrupt as e:
        record["interrupted"] = str(e) or "SIGINT"
        record["elapsed_s"] = round(time.monotonic() - start, 1)
        _write_json(path, record)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    ran = [r for r in record["steps"].values() if r["status"] != "skipped"]
    return 0 if all(r["ok"] for r in ran) else 1


# ---- the other modes ---------------------------------------------------------------------------------------------


def summarize(path: Path) -> int:
    """Print the table of an accelerator.json (a partial one too)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"accelerator.py --summarize: error: {path}: {e}", file=sys.stderr)
        return 2
    env = record["steps"].get("environment", {})
    head = env.get("summary") if env.get("ok") else f"environment unknown (Python {record['python']})"
    print(f"{'DRY RUN (tiny presets): ' if record['dry_run'] else ''}{head}")
    print(f"{'step':30s} {'status':8s} {'seconds':>7s}  result")
    for r in record["steps"].values():
        what = r["summary"] if r["status"] in ("ok", "skipped") else (r["error"] or r["summary"])
        print(f"{r['name']:30s} {r['status']:8s} {r['seconds']:7.1f}  {what}")
    counts = collections.Counter(r["status"] for r in record["steps"].values())
    stop = f"; interrupted ({record['interrupted']})" if "interrupted" in record else ""
    print(
        ", ".join(f"{n} {status}" for status, n in counts.items())
        + f" in {record['elapsed_s']:.0f} s (budget {record['budget_s']:.0f} s){stop}"
    )
    return 0


def missing() -> list[str]:
    """The distributions in NEEDED whose module this Python cannot import."""
    import importlib.util

    return [dist for module, dist in NEEDED.items() if importlib.util.find_spec(module) is None]


def _pinned() -> list[str]:
    """NEEDED at the versions installed here (the ones the tests run with); the newest where one is absent."""
    from importlib import metadata

    out = []
    for dist in NEEDED.values():
        try:
            out.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(dist)
    return out


def collect_wheels(folder: Path, versions: list[str], platform_tag: str) -> int:
    """Download NEEDED's wheels for each CPython version into folder (no dependencies: the image has numpy);
    print their sizes; exit 2 if the folder outgrows what the device tool carries."""
    folder.mkdir(parents=True, exist_ok=True)
    for version in versions:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        cmd += ["--python-version", version, "--implementation", "cp", "--platform", platform_tag]
        rc = subprocess.run([*cmd, "--dest", str(folder), *_pinned()]).returncode
        if rc:
            print(f"accelerator.py --collect-wheels: pip download failed for Python {version}", file=sys.stderr)
            return rc
    wheels = sorted(folder.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    for w in wheels:
        print(f"{w.stat().st_size / 2**20:7.2f} MiB  {w.name}")
    print(f"{total / 2**20:7.2f} MiB in {folder} ({len(wheels)} wheels; the device tool carries 64 MiB in all)")
    if total >= WHEELS_LIMIT:
        print(
            f"accelerator.py --collect-wheels: error: {folder} holds over {WHEELS_LIMIT / 2**20:.0f} MiB: "
            "empty it or collect fewer Python versions",
            file=sys.stderr,
        )
        return 2
    return 0


def _peak_device_gb() -> float | None:
    import jax

    sys.path.insert(0, str(BENCH))
    from bench_train import peak_device_bytes

    b = peak_device_bytes(jax.devices()[0])
    return None if b is None else b / 2**30


def _environment() -> dict:
    """The environment step (a child): the devices, versions, and which human3r_jax runs."""
    import jax
    import jaxlib

    import human3r_jax

    devices = jax.devices()
    stats = devices[0].memory_stats() or {}
    return {
        "device_kind": devices[0].device_kind,
        "platform": devices[0].platform,
        "device_count": len(devices),
        "memory_gb": stats["bytes_limit"] / 2**30 if "bytes_limit" in stats else None,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "human3r_jax": str(Path(human3r_jax.__file__).parent),
    }


def _forward(preset: str, size: str, dtype: str, frames: int) -> dict:
    """A forward step (a child): bench/bench.py's run_one for one preset and dtype, lean then full heads, each with
    the device's peak so far (it only grows, and full needs more than lean: each peak is its own)."""
    sys.path.insert(0, str(BENCH))
    from bench import run_one
    from human3r_jax import checkpoint

    # lean and full share the random weights (seconds of NumPy at the real widths each time)
    checkpoint.random_model = functools.cache(checkpoint.random_model)
    configs = []
    for heads in ("lean", "full"):
        res = run_one(preset, size, heads, dtype, frames, 0)
        configs.append({**res, "peak_device_gb": _peak_device_gb()})
    return {"configs": configs}


CHILDREN = {"environment": _environment, "forward": _forward}


def _steps(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(STEP_GROUPS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"takes a comma-separated list of {', '.join(STEP_GROUPS)}; got {text!r}")
    return names


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (its default also prints the usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv=None) -> int:
    p = _Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", nargs="?", type=Path, help="where accelerator.json and logs/ go")
    p.add_argument("--dry-run", action="store_true", help="the same steps with the tiny preset at tiny sizes")
    p.add_argument("--budget", type=float, help="seconds for all the steps (default 345; dry run 1200)")
    p.add_argument("--steps", type=_steps, default=list(STEP_GROUPS), help="a subset of parity,forward,e2e,train")
    p.add_argument(
        "--shared", type=Path, default=DEFAULT_SHARED, help="the shared folder (fixtures/, tools/; default ../shared)"
    )
    p.add_argument("--smplx", type=Path, help="an SMPL-X model folder (smplx/SMPLX_NEUTRAL.npz) instead of a synthetic")
    p.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    p.add_argument("--summarize", type=Path, metavar="JSON", help="print the table of an accelerator.json")
    p.add_argument("--collect-wheels", type=Path, metavar="DIR", help="download the needed wheels into DIR")
    p.add_argument(
        "--python-version", nargs="+", default=["3.11", "3.12", "3.13"], help="--collect-wheels: CPython versions"
    )
    p.add_argument("--platform", default="manylinux_2_28_x86_64", help="--collect-wheels: the device's platform tag")
    p.add_argument("--missing", action="store_true", help="print the needed packages this Python lacks")
    p.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:  # one in-process step, run by `run` as a subprocess: prints one RESULT line
        kind, spec = args.child
        print("RESULT " + json.dumps(CHILDREN[kind](**json.loads(spec))), flush=True)
        return 0
    if args.summarize:
        return summarize(args.summarize)
    if args.collect_wheels:
        return collect_wheels(args.collect_wheels, args.python_version, args.platform)
    if args.missing:
        for dist in missing():
            print(dist)
        return 0
    if args.out_dir is None:
        p.error("OUT_DIR is required (or one of --summarize, --collect-wheels, --missing)")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
