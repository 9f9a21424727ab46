"""The `human3r-jax` command.

human3r-jax reconstruct INPUT… --checkpoint CKPT --out DIR   video / image folder → cameras, scene, bodies
human3r-jax evaluate human|depth|pose --dataset NAME --root DATA --checkpoint CKPT --out DIR   benchmarks
human3r-jax view DIR                      interactive 3-D viewer of a reconstruction (needs viser)
human3r-jax export DIR --format colmap|ply|gltf|bvh|json   a reconstruction → COLMAP, PLY, glTF, BVH, JSON Lines
human3r-jax convert IN.pth OUT_DIR        official checkpoint → our format (no PyTorch needed)
human3r-jax parity FIXTURE_DIR [...]      compare against a fixture of the official code
human3r-jax preprocess-bedlam --raw R --labels L --out O   BEDLAM release → training layout
human3r-jax train --config CONFIG [--set KEY=VALUE …]       fine-tune Human3R (resumes in its workdir)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from human3r_jax.allocator import retain_freed_memory
from human3r_jax.argtypes import finite_float, name_and_tolerance, nonnegative_int, port, positive_float, positive_int
from human3r_jax.errors import Human3rError


def _dino_widths(text: str):
    from human3r_jax.config import DinoConfig

    try:
        embed, depth, heads = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes EMBED,DEPTH,HEADS (three integers), got {text!r}") from None
    if min(embed, depth, heads) < 1 or embed % heads:
        raise argparse.ArgumentTypeError(f"{text}: each width must be at least 1 and EMBED a multiple of HEADS")
    return DinoConfig(embed_dim=embed, depth=depth, num_heads=heads)


def _preset_name(text: str) -> str:
    from human3r_jax.config import CUT3R_PRESETS, HUMAN3R_PRESETS

    if text not in CUT3R_PRESETS and text not in HUMAN3R_PRESETS:
        raise argparse.ArgumentTypeError(
            f"unknown preset {text!r}; known: {', '.join(sorted(HUMAN3R_PRESETS) + sorted(CUT3R_PRESETS))}"
        )
    return text


def _join(args) -> None:
    """Join a multi-process run (human3r_jax.distributed) before anything uses JAX; nothing for one process."""
    from human3r_jax import distributed

    distributed.initialize(
        args.coordinator, args.num_processes, args.process_id, args.process_timeout, prog=f"human3r-jax {args.command}"
    )


def _add_process_options(p) -> None:
    g = p.add_argument_group(
        "several processes (jax.distributed; SLURM, Open MPI and TPU launches are detected without these)"
    )
    g.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address (or JAX_COORDINATOR_ADDRESS)")
    g.add_argument("--num-processes", metavar="N", help="how many processes in all (or JAX_NUM_PROCESSES)")
    g.add_argument("--process-id", metavar="I", help="this process, 0..N−1 (or JAX_PROCESS_ID)")
    g.add_argument(
        "--process-timeout",
        type=positive_int,
        default=300,
        metavar="SECONDS",
        help="how long the processes wait for each other to start (default 300)",
    )


def _convert(args) -> int:
    from human3r_jax.converters.convert import convert_and_save

    out = convert_and_save(args.checkpoint, args.out_dir, overwrite=args.overwrite, dino=args.dino_widths)
    print(f"converted {args.checkpoint} -> {out}")
    return 0


def _parity(args) -> int:
    from human3r_jax.parity import run_fixture

    tols = dict(args.tol_for or [])
    status = 0
    for fixture in args.fixtures:
        report = run_fixture(fixture, tol=args.tol, tols=tols, smplx_path=args.smplx)
        print(report.table())
        status |= 0 if report.ok else 1
    return status


def _train(args) -> int:
    _join(args)
    import logging

    import jax

    from human3r_jax import distributed
    from human3r_jax.train.config import apply_overrides, load_config
    from human3r_jax.train.trainer import Trainer

    # our own progress at INFO (process 0 only); orbax and absl report every checkpoint write at INFO: warnings only
    main = distributed.is_main()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("human3r_jax").setLevel(logging.INFO if main else logging.WARNING)
    cfg = apply_overrides(load_config(args.config), args.set or [])
    trainer = Trainer(cfg)
    if main:
        print(
            f"human3r-jax train: {cfg.model}, {trainer.n_trainable:,} trainable parameters, "
            f"{cfg.total_steps} steps of batch {cfg.batch_size} on {len(trainer.mesh.devices.flat)} device(s) "
            f"of {jax.process_count()} process(es), workdir {trainer.workdir}"
        )
    trainer.run(progress=not args.quiet and main)
    out = trainer.export()  # every process takes part (the shards are gathered); process 0 writes
    if main:
        print(f"trained weights -> {out}")
    return 0


def _preprocess_bedlam(args) -> int:
    from human3r_jax.data.bedlam_preprocess import run

    return run(args)


def _reconstruct(args) -> int:
    _join(args)
    from human3r_jax.reconstruct import Settings, load_model, prepare, run_job

    settings = Settings(
        size=args.size,
        reset_interval=args.reset_interval,
        ttt3r=args.ttt3r,
        subsample=args.subsample,
        max_frames=args.max_frames,
        conf_threshold=args.conf_threshold,
        glb_frame=args.glb_frame,
        intrinsics=args.intrinsics,
        camera_poses=args.camera_poses,
        static_camera=args.static_camera,
        drop_frames=args.drop_frames,
        stall_timeout=args.stall_timeout,
    )
    # inputs and outputs first (cheap), then the model (slow to load)
    job = prepare(
        args.inputs,
        args.out,
        settings,
        overwrite=args.overwrite,
        protect=[p for p in (args.checkpoint, args.smplx) if p],
    )
    smplx = _load_smplx(args.smplx)
    viewer = None
    if args.view:
        from human3r_jax.viewer import LiveViewer

        viewer = LiveViewer(
            args.host,
            args.port,
            faces=None if smplx is None else smplx.faces,
            conf_threshold=settings.conf_threshold,
            points_per_frame=settings.points_per_frame,
        )
        print(f"viewing the reconstruction as it runs at {_url(args.host, viewer.port)}", file=sys.stderr)
    try:
        model = load_model(
            args.checkpoint, args.random_weights, args.max_humans, progress=not args.quiet, dtype=args.dtype
        )
        if model.random_weights:
            print(
                f"human3r-jax reconstruct: RANDOM WEIGHTS ({args.random_weights}): this exercises the pipeline; "
                "its output is meaningless.",
                file=sys.stderr,
            )
        exports = list(dict.fromkeys(args.export or []))
        if model.humans and smplx is None and {"gltf", "bvh", "json"} & set(exports):
            raise Human3rError("--export gltf, bvh and json need the SMPL-X model of the bodies: pass --smplx PATH")
        live_json = "json" in exports and settings.camera_poses is None  # given poses move the frames at the end
        saved = _FrameListeners(viewer, live_json)
        try:
            outs = run_job(job, model, settings, smplx, progress=not args.quiet, on_saved=saved)
        finally:
            saved.close()
    finally:
        if viewer is not None:
            viewer.stop()
    for o in outs:
        print(f"wrote {o} (reconstruction.npz, frames/, trajectory.tum, scene.glb, meta.json)")
        if live_json:
            print(f"wrote {o / 'frames.jsonl'} (JSON Lines, appended as frames completed)")
        for fmt in exports:
            if fmt == "json" and live_json:
                continue
            from human3r_jax.exporters import FORMATS, export

            dest, summary = export(o, fmt, **({"smplx": smplx} if "smplx" in FORMATS[fmt].options else {}))
            print(f"wrote {dest}: {summary}")
    return 0


class _FrameListeners:
    """What `reconstruct` does with each frame once written: the live viewer (the first input) and the
    JSON Lines file each output folder gets with --export json."""

    def __init__(self, viewer, live_json: bool):
        self.viewer, self.live_json, self.jsonl = viewer, live_json, {}

    def __call__(self, j: int, folder, n: int, frame: dict) -> None:
        if self.viewer is not None and j == 0:
            self.viewer.add_frame(n, frame)
        if self.live_json:
            from human3r_jax.exporters.jsonl import JsonLinesWriter, frame_record

            if folder not in self.jsonl:
                self.jsonl[folder] = JsonLinesWriter(folder / "frames.jsonl")
            self.jsonl[folder].add(frame_record(frame, frame.get("smpl_joints_world"), False, index=n))

    def close(self) -> None:
        for w in self.jsonl.values():
            w.close()


def _url(host: str, port: int) -> str:
    host = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::", "::1") else host
    host = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
    return f"http://{host}:{port}"


def _evaluate(args) -> int:
    _join(args)
    from human3r_jax.evaluation.runner import EvaluationError
    from human3r_jax.weights import resolve

    common = {
        "checkpoint": resolve(args.checkpoint, progress=not args.quiet) if args.checkpoint else None,
        "random_weights": args.random_weights,
        "rescore": args.rescore,
        "reset_interval": args.reset_interval,
        "ttt3r": args.ttt3r,
        "size": args.size,
        "progress": not args.quiet,
    }
    if args.task == "human":
        from human3r_jax.evaluation.human import evaluate as evaluate_human

        if args.body_models is None:
            raise EvaluationError("evaluate human needs --body-models DIR (the SMPL / SMPL-X files; see the README)")
        if args.align:
            raise EvaluationError("--align is for the depth task only")
        sequences = None
        if args.sequences is not None:
            sequences = [s.strip() for s in args.sequences.split(",") if s.strip()]
            if not sequences:
                raise EvaluationError(f"--sequences {args.sequences!r}: no sequence name given")
        evaluate_human(
            args.dataset,
            args.root,
            args.out,
            body_models=args.body_models,
            sequences=sequences,
            fix_quirks=args.fix_quirks,
            **common,
        )
    else:
        from human3r_jax.evaluation.scene import evaluate

        for flag, value in (
            ("--body-models", args.body_models),
            ("--sequences", args.sequences),
            ("--fix-quirks", args.fix_quirks),
        ):
            if value:
                raise EvaluationError(f"{flag} is for the human task only")
        evaluate(args.task, args.dataset, args.root, args.out, align=args.align, **common)
    print(f"wrote {args.out}/metrics.json ({args.task}/{args.dataset})")
    return 0


def _export(args) -> int:
    from human3r_jax.exporters import export

    smplx = _load_smplx(args.smplx)
    dest, summary = export(
        args.out_dir,
        args.format,
        out=args.out,
        overwrite=args.overwrite,
        smplx=smplx,
        binary=args.binary,
        input_resolution=args.input_resolution,
        images=args.images,
        per_frame=args.per_frame,
        body_only=args.body_only,
        units=args.units,
        fps=args.fps,
        conf_threshold=args.conf_threshold,
        points_per_frame=args.points_per_frame,
        max_points=args.max_points,
    )
    print(f"wrote {dest}: {summary}")
    return 0


def _load_smplx(path):
    if not path:
        return None
    from human3r_jax.models.smplx import load_smplx

    return load_smplx(path)


def _view(args) -> int:
    import time

    from human3r_jax.viewer import SceneViewer

    viewer = SceneViewer(args.out_dir, host=args.host, port=args.port)
    print(f"viewing {args.out_dir} at {_url(args.host, viewer.port)} (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(1)
    finally:
        viewer.stop()


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (its default also prints the usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_CHECKPOINT_OPTION_HELP = (
    "a released name (human3r_896L, human3r_672L, human3r_672B, human3r_672S, cut3r_512_dpt_4_64, "
    "cut3r_224_linear_4: downloaded, checked and converted once into the cache), a converted checkpoint folder "
    "(human3r-jax convert) or an official .pth"
)


def build_parser() -> argparse.ArgumentParser:
    from human3r_jax.cameras import INTRINSICS_HELP, POSES_HELP
    from human3r_jax.data.video import STALL_TIMEOUT

    p = _Parser(prog="human3r-jax", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("reconstruct", help="reconstruct videos or image folders (cameras, scene, SMPL-X bodies)")
    r.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video (mp4/mov/avi/webm/ts) or folder of images (several inputs of one resolution run as a batch); "
        "or, alone, a live source: a webcam /dev/videoN, a stream URL (rtsp, http, udp, tcp, srt) or - for a "
        "stream on standard input (MPEG-TS, Matroska, or fragmented/faststart mp4), run until it ends or Ctrl-C",
    )
    r.add_argument("--checkpoint", help=_CHECKPOINT_OPTION_HELP)
    r.add_argument(
        "--random-weights",
        nargs="?",
        const="human3r_tiny",
        metavar="PRESET",
        type=_preset_name,
        help="no checkpoint: random weights of a preset (default human3r_tiny) to try the pipeline; "
        "the output is meaningless",
    )
    r.add_argument("--out", required=True, help="output folder (one subfolder per input when there are several)")
    r.add_argument("--smplx", metavar="PATH", help="SMPLX_NEUTRAL.npz or its folder: world-frame body meshes")
    r.add_argument("--size", type=int, default=512, choices=[512, 224], help="model resolution rule (default 512)")
    r.add_argument("--reset-interval", type=positive_int, help="reset the state every N frames (official semantics)")
    r.add_argument("--ttt3r", action="store_true", help="TTT3R state update (better on long videos)")
    r.add_argument("--subsample", type=positive_int, default=1, help="use every N-th frame")
    r.add_argument("--max-frames", type=positive_int, help="stop after this many frames")
    r.add_argument(
        "--conf-threshold", type=finite_float, default=1.5, help="confidence of the points kept in scene.glb"
    )
    r.add_argument("--max-humans", type=positive_int, help="human slots per frame (Human3R; default 16)")
    r.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="the model's compute dtype: float32 (default: equal to the official model within 1e-4) or bfloat16 "
        "(for GPUs and TPUs; on CPUs it is slower; its error, measured per output, is in the README's Speed "
        "section); the parameters and every file written stay float32",
    )
    r.add_argument(
        "--glb-frame", type=nonnegative_int, help="frame whose bodies go into scene.glb (default: last with people)"
    )
    r.add_argument("--intrinsics", metavar="FX,FY,CX,CY|FILE", help=f"known intrinsics: {INTRINSICS_HELP}")
    r.add_argument(
        "--camera-poses",
        metavar="FILE",
        help=f"known camera poses, one per processed frame: {POSES_HELP}; the scene is scaled by the Sim(3) "
        "fitted to them and placed in their world (meta.json: cameras.alignment)",
    )
    r.add_argument(
        "--static-camera",
        action="store_true",
        help="the camera does not move: every camera-to-world is the identity (world = the camera's frame)",
    )
    r.add_argument(
        "--export",
        nargs="+",
        metavar="FORMAT",
        choices=["colmap", "ply", "gltf", "bvh", "json"],
        help="also export at the end (colmap, ply, gltf, bvh, json; json is appended as frames complete); "
        "see `human3r-jax export`",
    )
    r.add_argument(
        "--view", action="store_true", help="serve the browser viewer while reconstructing, frames added as they come"
    )
    r.add_argument("--port", type=port, default=8080, help="--view: the viewer's port (0: any free one)")
    r.add_argument("--host", default="127.0.0.1", help="--view: the address to listen on")
    r.add_argument(
        "--drop-frames",
        action="store_true",
        help="live sources: when the model is slower than the source, skip to the newest frame (bounded latency)",
    )
    r.add_argument(
        "--stall-timeout",
        type=positive_float,
        default=STALL_TIMEOUT,
        metavar="SECONDS",
        help=f"live sources: end with an error after this long without a frame (default {STALL_TIMEOUT:g})",
    )
    r.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier output of this program (kept until the new one is complete)",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_process_options(r)
    r.set_defaults(func=_reconstruct)

    e = sub.add_parser(
        "evaluate", help="human mesh / video depth / camera pose benchmarks (official protocols), resumable"
    )
    e.add_argument(
        "task",
        choices=["human", "depth", "pose"],
        help="human: 3DPW, EMDB, RICH; depth: Bonn, KITTI, Sintel; pose: TUM, ScanNet, Sintel",
    )
    e.add_argument(
        "--dataset",
        required=True,
        metavar="NAME",
        help="human: 3dpw, emdb1, emdb2, rich; depth: bonn, bonn_50…bonn_500, kitti, sintel; "
        "pose: tum, tum_50…tum_1000, scannet, sintel",
    )
    e.add_argument("--root", required=True, metavar="DATA_DIR", help="the dataset folder (official layout)")
    e.add_argument("--checkpoint", help=_CHECKPOINT_OPTION_HELP)
    e.add_argument(
        "--random-weights",
        nargs="?",
        const="human3r_tiny",
        metavar="PRESET",
        type=_preset_name,
        help="no checkpoint: random weights of a preset (meaningless metrics; to try the pipeline)",
    )
    e.add_argument(
        "--out",
        required=True,
        help="output folder: per-sequence predictions and metrics.json; a re-run into it resumes",
    )
    e.add_argument(
        "--rescore", action="store_true", help="recompute the metrics from the cached predictions (no model)"
    )
    e.add_argument(
        "--reset-interval",
        type=nonnegative_int,
        metavar="N",
        help="reset the state every N frames, 0 = never (default: the official value: 3dpw/emdb1 100, "
        "emdb2 50, rich never; Human3R pose 100; depth never)",
    )
    e.add_argument(
        "--ttt3r",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TTT3R state update (default: on for Human3R, off for CUT3R, as the official scripts)",
    )
    e.add_argument(
        "--align",
        action="append",
        choices=["scale", "metric", "scale&shift"],
        help="depth alignment, repeatable (default: the official set: Human3R scale and metric, CUT3R scale)",
    )
    e.add_argument("--size", type=int, default=512, choices=[512, 224], help="model resolution rule (official 512)")
    e.add_argument(
        "--body-models",
        metavar="DIR",
        help="human: the licensed SMPL / SMPL-X files (smpl/, smplx/ as the official models folder; see the README)",
    )
    e.add_argument("--sequences", metavar="NAME,…", help="human: score only these sequences")
    e.add_argument(
        "--fix-quirks",
        action="store_true",
        help="human: fix the released code's 3DPW gender and RICH intrinsics quirks (not the paper's protocol)",
    )
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_process_options(e)
    e.set_defaults(func=_evaluate)

    v = sub.add_parser("view", help="interactive 3-D viewer of a reconstruction (needs the viewer extra: viser)")
    v.add_argument("out_dir", help="a `human3r-jax reconstruct` output folder")
    v.add_argument("--port", type=port, default=8080)
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 to share on the network)")
    v.set_defaults(func=_view)

    x = sub.add_parser(
        "export", help="a reconstruction → COLMAP, PLY, animated SMPL-X (glTF, BVH) or JSON Lines (no model run)"
    )
    x.add_argument("out_dir", metavar="OUT_DIR", help="a `human3r-jax reconstruct` output folder (partial ones too)")
    x.add_argument(
        "--format",
        required=True,
        choices=["colmap", "ply", "gltf", "bvh", "json"],
        help="colmap: cameras, poses, points; ply: point cloud; gltf: animated bodies, camera, points (.glb); "
        "bvh: one skeleton animation per person; json: JSON Lines, one frame per line",
    )
    x.add_argument(
        "--out",
        metavar="PATH",
        help="where to write (default inside OUT_DIR: colmap/, points.ply or points/, people.glb, bvh/, frames.jsonl)",
    )
    x.add_argument("--overwrite", action="store_true", help="replace an earlier export of this program")
    x.add_argument("--smplx", metavar="PATH", help="gltf, bvh, json: SMPLX_NEUTRAL.npz or its folder (the bodies)")
    x.add_argument("--binary", action="store_true", help="colmap: the binary model (.bin) instead of text")
    x.add_argument(
        "--input-resolution",
        action="store_true",
        help="colmap: cameras scaled back to the input frames (default: the model resolution)",
    )
    x.add_argument("--images", action="store_true", help="colmap: also write the frames as images/NNNNNN.png")
    x.add_argument("--per-frame", action="store_true", help="ply: one file per frame (a folder)")
    x.add_argument("--body-only", action="store_true", help="json, bvh: the 22 body joints only")
    x.add_argument("--units", choices=["m", "cm"], help="bvh: metres (default) or centimetres")
    x.add_argument("--fps", type=positive_float, help="gltf, bvh: frame rate for image folders (videos: their own)")
    x.add_argument("--conf-threshold", type=finite_float, help="colmap, ply, gltf: confidence of the points kept")
    x.add_argument(
        "--points-per-frame", type=positive_int, help="colmap, ply: at most this many points from each frame"
    )
    x.add_argument("--max-points", type=positive_int, help="colmap, ply, gltf: at most this many points")
    x.set_defaults(func=_export)

    c = sub.add_parser("convert", help="convert an official CUT3R / Human3R .pth checkpoint")
    c.add_argument("checkpoint", help="official .pth file (read without PyTorch; nothing in it is executed)")
    c.add_argument("out_dir", help="output directory (orbax parameters + config.json)")
    c.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it is an earlier converted checkpoint")
    c.add_argument(
        "--dino-widths",
        type=_dino_widths,
        metavar="EMBED,DEPTH,HEADS",
        help="Human3R with a non-standard DINOv2 backbone: its widths (hub names need none)",
    )
    c.set_defaults(func=_convert)

    q = sub.add_parser("parity", help="check the port against fixtures of the official code")
    q.add_argument(
        "fixtures", nargs="+", help="fixture folder(s): checkpoint.pth, config.json, inputs/outputs/intermediates.npz"
    )
    q.add_argument("--tol", type=positive_float, default=1e-4, help="relative L2 tolerance (default 1e-4)")
    q.add_argument(
        "--tol-for", action="append", metavar="NAME=TOL", type=name_and_tolerance, help="tolerance for one output/stage"
    )
    q.add_argument(
        "--smplx",
        metavar="PATH",
        help="SMPL-X model (SMPLX_NEUTRAL.npz or its folder) to also compare the Human3R bodies "
        "(the one the fixture was made with)",
    )
    q.set_defaults(func=_parity)

    t = sub.add_parser("train", help="fine-tune Human3R on BEDLAM (the official recipe by default)")
    t.add_argument(
        "--config",
        default="human3r_bedlam",
        help="a config file (Python, get_config()) or a bundled name: human3r_bedlam, tiny_synthetic",
    )
    t.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value (Python literal; repeatable), e.g. --set lr=2e-4",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar (log lines only)")
    _add_process_options(t)
    t.set_defaults(func=_train)

    from human3r_jax.data.bedlam_preprocess import add_arguments

    b = sub.add_parser("preprocess-bedlam", help="convert the raw BEDLAM release to the training layout")
    add_arguments(b)
    b.set_defaults(func=_preprocess_bedlam)
    return p


def _terminate(signum, frame):
    """SIGTERM (what a job scheduler sends) stops a run as Ctrl-C does: the frames done are kept."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        retain_freed_memory()
        return args.func(args)
    except (Human3rError, FileExistsError, FileNotFoundError) as e:
        print(f"human3r-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the user's file system: permissions, a full or read-only disk
        where = f"{e.filename}: " if e.filename else ""
        print(f"human3r-jax {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        by = str(e) or "SIGINT"
        print(f"human3r-jax {args.command}: interrupted ({by})", file=sys.stderr)
        return 128 + (signal.SIGTERM if by == "SIGTERM" else signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
