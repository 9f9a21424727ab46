"""A reconstruction job: `prepare` checks the inputs and output folders and plans the batches (nothing
written), `run_job` runs each batch with its writers and swaps `--overwrite` outputs in at the end, and
`reconstruct` is the two in one."""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Sequence
from pathlib import Path

import jax

from human3r_jax import cameras, outputs
from human3r_jax.data.video import FrameSource, InputError, display_name, is_live
from human3r_jax.reconstruct.loop import run
from human3r_jax.reconstruct.reader import first_frame_size
from human3r_jax.reconstruct.settings import LoadedModel, Settings, check_settings
from human3r_jax.reconstruct.writer import SequenceWriter

_DEFAULT_SETTINGS = Settings()  # the default of every `settings` below (frozen)


@dataclasses.dataclass
class Job:
    """What a run will read and write, checked before any model is loaded."""

    sources: list[FrameSource]
    outs: list[Path]  # the final output folder of each source
    targets: dict[Path, Path]  # final folder → where the run writes (itself, or <out>.partial)
    groups: dict[tuple[int, int], list[int]]  # model resolution (W, H) → sources run together
    poses: list[dict | None] | None = None  # each source's given camera-to-world [4, 4] by frame index (--camera-poses)


def prepare(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    settings: Settings = _DEFAULT_SETTINGS,
    overwrite: bool = False,
    protect: Sequence[str | Path] = (),
) -> Job:
    """Check the inputs (each source's first frame is decoded and preprocessed) and the output
    folders, and plan the batches; nothing is written. Given intrinsics and camera poses are read and checked
    against the frames here (per-frame K or poses: the input's frame list is read, a video decoded once).

    An output folder must be absent or empty; with `overwrite` it may also be an earlier
    reconstruction (see `human3r_jax.outputs`), which is then kept until the new one is complete:
    the run writes into `<out>.partial` beside it and swaps it in at the end, and an interrupted or
    failed run leaves the earlier output untouched and its own frames in `<out>.partial`. No output
    folder may be or hold an input, nor one of `protect` (the checkpoint, the SMPL-X model).
    """
    out_dir = Path(out_dir)
    check_settings(settings)
    live = [p for p in inputs if is_live(p)]
    if live and len(inputs) > 1:  # checked before any source is opened (a live one starts reading at once)
        raise InputError(f"{display_name(live[0])}: a live source runs alone; give it as the only input")
    sources = [FrameSource(p, settings.subsample, settings.max_frames, settings.stall_timeout) for p in inputs]
    outs = [out_dir] if len(sources) == 1 else [out_dir / Path(s.path).stem for s in sources]
    if len(set(outs)) != len(outs):
        raise InputError("several inputs have the same name; give inputs with distinct names")
    if out_dir.exists() and not out_dir.is_dir():
        raise outputs.OutputError(f"{out_dir}: exists and is not a folder; choose another --out")
    poses = _known_cameras(settings, sources)
    camera_files = [p for p in (settings.camera_poses, settings.intrinsics) if isinstance(p, (str, Path))]
    guarded = [s.path for s in sources if not s.live] + list(protect) + [p for p in camera_files if Path(p).is_file()]
    targets = {}
    for o in outs:
        targets[o] = o
        if outputs.check_output(o, "reconstruction", overwrite, guarded):
            targets[o] = o.with_name(o.name + ".partial")
            outputs.check_output(targets[o], "reconstruction", True, guarded)
    groups: dict[tuple[int, int], list[int]] = {}
    for j, s in enumerate(sources):
        groups.setdefault(first_frame_size(s, settings.size), []).append(j)
    return Job(sources, outs, targets, groups, poses)


def _known_cameras(settings: Settings, sources: list[FrameSource]) -> list[dict | None]:
    """Check the given intrinsics and camera poses (per-frame ones against the frame list) → each source's
    given poses by frame index (None without --camera-poses)."""
    k = None if settings.intrinsics is None else cameras.parse_intrinsics(settings.intrinsics)
    per_frame = k is not None and len(k) > 1
    if len(sources) > 1 and (per_frame or settings.camera_poses is not None):
        option = "--camera-poses" if settings.camera_poses is not None else "--intrinsics (one K per frame)"
        raise cameras.CameraError(f"{option} applies to one input; got {len(sources)}")
    if not per_frame and settings.camera_poses is None:
        return [None] * len(sources)
    if sources[0].live:  # matching needs the whole frame list, which a live source does not have
        option = "--camera-poses" if settings.camera_poses is not None else "--intrinsics (one K per frame)"
        raise cameras.CameraError(f"{option} needs a video or image folder, not the live source {sources[0].name}")
    stamps = cameras.frame_stamps(sources[0])
    if per_frame:
        named = isinstance(settings.intrinsics, (str, Path))
        cameras.check_per_frame(k, stamps, f"--intrinsics {settings.intrinsics}" if named else "--intrinsics")
    if settings.camera_poses is None:
        return [None]
    return [cameras.load_poses(settings.camera_poses, sources[0], stamps)]


def run_job(
    job: Job,
    model: LoadedModel,
    settings: Settings = _DEFAULT_SETTINGS,
    smplx=None,
    on_frame=None,
    progress: bool = True,
    on_saved=None,
) -> list[Path]:
    """Run a prepared job: each group of sources as one batch, each output written as it goes → the
    outputs written (in a multi-process run, this process's share: inputs j with j % count == index within
    each group of one resolution).

    on_saved(j, folder, n, frame): called with frame n of source j as its file in `folder` holds it, once
    written (a live viewer, JSON Lines as frames complete). Ctrl-C or SIGTERM ends a live source's run as
    its normal end (the output is complete); it interrupts any other run."""
    # A multi-process run (human3r_jax.distributed): each process runs its share of each group's inputs.
    me, count = jax.process_index(), jax.process_count()
    groups = [g[me::count] for g in job.groups.values() if g[me::count]]
    for o in (job.outs[j] for g in groups for j in g):
        target = job.targets[o]
        if target != o and target.exists():
            outputs.remove_own(target, "reconstruction")  # left by an earlier interrupted --overwrite run
    for members in groups:
        outs = [job.outs[j] for j in members]
        writers = [
            SequenceWriter(
                job.targets[o],
                model,
                settings,
                job.sources[j],
                smplx,
                job.poses and job.poses[j],
                on_saved=None if on_saved is None else functools.partial(on_saved, j, job.targets[o]),
            )
            for j, o in zip(members, outs)
        ]
        complete, error, timing = False, None, {}
        try:
            timing = run(model, [job.sources[j] for j in members], writers, settings, smplx, on_frame, progress)
            complete = True
        except KeyboardInterrupt as e:
            if not all(job.sources[j].live for j in members):
                error = "interrupted"
                raise
            complete, timing = True, {"ended_by": str(e) or "SIGINT"}
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            for w in writers:
                w.close(complete, error, timing)
            for o in outs:
                if job.targets[o] == o:
                    continue
                if complete:
                    outputs.replace_dir(job.targets[o], o)
                else:
                    print(
                        f"{o}: the earlier output is kept as it was; this run's frames are in {job.targets[o]}",
                        file=sys.stderr,
                    )
    return [job.outs[j] for g in groups for j in g]


def reconstruct(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    model: LoadedModel,
    settings: Settings = _DEFAULT_SETTINGS,
    smplx=None,
    overwrite: bool = False,
    on_frame=None,
    progress: bool = True,
    protect: Sequence[str | Path] = (),
) -> list[Path]:
    """Reconstruct each input into out_dir (or out_dir/<input name> for several inputs); see `prepare`."""
    job = prepare(inputs, out_dir, settings, overwrite, protect)
    return run_job(job, model, settings, smplx, on_frame, progress)
