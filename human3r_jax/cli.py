"""The `human3r-jax` command.

    human3r-jax convert IN.pth OUT_DIR        official checkpoint → our format (no PyTorch needed)
    human3r-jax parity FIXTURE_DIR [...]      compare against a fixture of the official code
"""

from __future__ import annotations

import argparse
import os
import sys


def _dino_widths(text: str | None):
    if not text:
        return None
    from human3r_jax.config import DinoConfig

    try:
        embed, depth, heads = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--dino-widths takes EMBED,DEPTH,HEADS, got {text!r}") from None
    return DinoConfig(embed_dim=embed, depth=depth, num_heads=heads)


def _convert(args) -> int:
    from human3r_jax.converters.convert import convert_and_save

    out = convert_and_save(args.checkpoint, args.out_dir, overwrite=args.overwrite, dino=args.dino_widths)
    print(f"converted {args.checkpoint} -> {out}")
    return 0


def _parity(args) -> int:
    from human3r_jax.converters.parity import run_fixture

    tols = {}
    for item in args.tol_for or []:
        name, _, value = item.partition("=")
        tols[name] = float(value)
    status = 0
    for fixture in args.fixtures:
        report = run_fixture(fixture, tol=args.tol, tols=tols, smplx_path=args.smplx)
        print(report.table())
        status |= 0 if report.ok else 1
    return status


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="human3r-jax", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert an official CUT3R / Human3R .pth checkpoint")
    c.add_argument("checkpoint", help="official .pth file (read without PyTorch; nothing in it is executed)")
    c.add_argument("out_dir", help="output directory (orbax parameters + config.json)")
    c.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    c.add_argument("--dino-widths", type=_dino_widths, metavar="EMBED,DEPTH,HEADS",
                   help="Human3R with a non-standard DINOv2 backbone: its widths (hub names need none)")
    c.set_defaults(func=_convert)

    q = sub.add_parser("parity", help="check the port against fixtures of the official code")
    q.add_argument("fixtures", nargs="+", help="fixture folder(s): checkpoint.pth, config.json, inputs/outputs/"
                                              "intermediates.npz")
    q.add_argument("--tol", type=float, default=1e-4, help="relative L2 tolerance (default 1e-4)")
    q.add_argument("--tol-for", action="append", metavar="NAME=TOL", help="tolerance for one output/stage")
    q.add_argument("--smplx", metavar="PATH", help="SMPL-X model (SMPLX_NEUTRAL.npz or its folder) to also compare "
                                                  "the Human3R bodies (the fixtures used the synthetic one of "
                                                  "shared/tools/make_fake_smplx.py --seed 0)")
    q.set_defaults(func=_parity)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    from human3r_jax.errors import USER_ERRORS

    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"human3r-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"human3r-jax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
