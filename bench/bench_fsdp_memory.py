"""Training memory per device with and without fully sharded parameters (`fsdp`), at 1, 2, 4 and 8 devices.

    python bench/bench_fsdp_memory.py                    # 896L, the official recipe: batch 8, 4 views, 512x288
    python bench/bench_fsdp_memory.py --compile          # also XLA's memory analysis of the compiled step (slow)
    python bench/bench_fsdp_memory.py --preset human3r_tiny --batch 8 --views 2 --size 64x48 --compile

Two measures:
  * state (jax.eval_shape, exact): the bytes a device holds between steps: the parameters (trainable,
    fixed, frozen; float32 master copies), the AdamW moments and the carried fixed-group gradients, each
    array whole (replicated) or split along its largest dimension the device count divides (fsdp,
    `trainer.param_spec`);
  * step (--compile): XLA's memory analysis of the train step compiled for n devices (forced host
    devices, XLA:CPU): arguments, outputs, temporaries, and their peak arguments + outputs − aliased
    (donated) + temporaries. A GPU compiler's temporaries differ; the arguments and outputs do not.
Prints a table and writes JSON (bench/results/fsdp_memory.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from options import count, frame_size, json_path

GB = 2**30


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="human3r_896L")
    p.add_argument("--batch", type=count, default=8)
    p.add_argument("--views", type=count, default=4)
    p.add_argument("--size", default="512x288", type=frame_size, help="WxH of the step's batch")
    p.add_argument("--humans", type=count, default=10, help="slots per view (official 10)")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--no-remat", dest="remat", action="store_false")
    p.add_argument("--devices", default="1,2,4,8", help="device counts (each divides --batch)")
    p.add_argument("--compile", action="store_true", help="also compile the step at each device count")
    p.add_argument("--smplx", help="SMPLX_NEUTRAL.npz or its folder (for --compile; default: a synthetic one)")
    p.add_argument("--json", type=json_path, default=Path("bench/results/fsdp_memory.json"))
    return p.parse_args(argv)


def state_bytes(groups: dict, n: int, fsdp: bool) -> dict:
    """Bytes per device of each group of abstract arrays over n devices."""
    import jax
    import numpy as np
    from jax.sharding import PartitionSpec as P

    from human3r_jax.train.trainer import param_spec

    def per_device(x) -> int:
        whole = int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
        return whole // n if fsdp and param_spec(tuple(x.shape), n) != P() else whole

    return {name: sum(per_device(x) for x in jax.tree.leaves(tree)) for name, tree in groups.items()}


def step_memory(cfg, hcfg, graphdef, tx, groups: dict, body_model, n: int, hw: tuple[int, int]) -> dict:
    """XLA's memory analysis of the train step compiled over the first n devices."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from human3r_jax.data.schema import STEP_KEYS, batch_spec
    from human3r_jax.train.trainer import TrainState, make_train_step, state_shardings

    mesh = Mesh(np.array(jax.devices()[:n]), ("data",))

    def abstract(tree, shardings):
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)

    def placed(tree):
        return abstract(tree, state_shardings(tree, mesh, cfg.fsdp))

    state = TrainState(
        jax.ShapeDtypeStruct((), np.int32), groups["trainable"], groups["opt_state"], groups["fixed_grads"]
    )
    h, w = hw
    batch = {
        k: jax.ShapeDtypeStruct(
            tuple((h, w)[i - 2] if d is None else d for i, d in enumerate(shape)),
            dtype,
            sharding=NamedSharding(mesh, P("data")),
        )
        for k, (dtype, shape) in batch_spec(cfg.batch_size, cfg.num_views, cfg.max_humans).items()
        if k in STEP_KEYS
    }
    body = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=NamedSharding(mesh, P())), body_model
    )
    step = jax.jit(make_train_step(cfg, hcfg, graphdef, tx, mesh), donate_argnums=(0,))
    t0 = time.perf_counter()
    m = step.lower(placed(state), placed(groups["fixed"]), placed(groups["frozen"]), body, batch).compile()
    m = m.memory_analysis()
    out = {
        "arguments": m.argument_size_in_bytes,
        "outputs": m.output_size_in_bytes,
        "aliased": m.alias_size_in_bytes,
        "temporaries": m.temp_size_in_bytes,
    }
    out["peak"] = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
    out["compile_s"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv=None) -> int:
    args = parse(argv)
    counts = [int(c) for c in args.devices.split(",")]
    if any(args.batch % c for c in counts):
        sys.exit(f"--devices {args.devices}: every count must divide --batch {args.batch}")
    # the device counts as forced host devices, before JAX starts
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={max(counts)}"
    ).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    import jax
    from flax import nnx

    from human3r_jax import checkpoint as ckpt
    from human3r_jax.train import optim
    from human3r_jax.train.config import TrainConfig
    from human3r_jax.train.init import model_config
    from human3r_jax.train.trainer import RUN_ONLY_FIELDS, optimizer

    w, h = (int(x) for x in args.size.split("x"))
    cfg = TrainConfig(
        model=args.preset,
        random_init=True,
        batch_size=args.batch,
        num_views=args.views,
        max_humans=args.humans,
        resolutions=((w, h),),
        compute_dtype=args.dtype,
        remat=args.remat,
    )
    hcfg = model_config(cfg)
    model = ckpt.abstract_model(hcfg, jax.numpy.bfloat16 if args.dtype == "bfloat16" else None)
    shapes = {k: jax.ShapeDtypeStruct(s, jax.numpy.float32) for k, s in ckpt.param_shapes(model).items()}
    trainable, fixed, frozen = optim.split_params(shapes, cfg.trainable_params, cfg.fixed_params, cfg.frozen_params)
    step_cfg = dataclasses.replace(cfg, **{f: getattr(TrainConfig, f) for f in RUN_ONLY_FIELDS})
    tx = optimizer(step_cfg, tuple((k, tuple(v.shape)) for k, v in sorted(trainable.items())))
    nested = ckpt.unflatten(trainable)
    groups = {
        "trainable": nested,
        "fixed": fixed,
        "frozen": frozen,
        "opt_state": jax.eval_shape(tx.init, nested),
        "fixed_grads": fixed if cfg.fixed_grads == "accumulate" else {},
    }
    body_model = None
    if args.compile:
        from bench_train import default_smplx

        from human3r_jax.data.schema import NUM_BETAS
        from human3r_jax.models.smplx import load_smplx

        body_model = load_smplx(args.smplx or default_smplx(), num_betas=NUM_BETAS)
    rows = []
    for n in counts:
        for fsdp in (False, True):
            row = {"devices": n, "fsdp": fsdp, "state": state_bytes(groups, n, fsdp)}
            row["state"]["total"] = sum(row["state"].values())
            if args.compile and fsdp and n == 1:  # the same program as without fsdp
                row["step"] = rows[-1]["step"]
            elif args.compile:
                fsdp_cfg = dataclasses.replace(step_cfg, fsdp=fsdp)
                row["step"] = step_memory(fsdp_cfg, hcfg, nnx.graphdef(model), tx, groups, body_model, n, (h, w))
                print(f"compiled for {n} device(s), fsdp={fsdp}: {row['step']}", flush=True)
            rows.append(row)
    print_table(args, rows)
    result = {
        "preset": args.preset,
        "batch": args.batch,
        "views": args.views,
        "size": [w, h],
        "slots": args.humans,
        "dtype": args.dtype,
        "remat": args.remat,
        "trainable_params": sum(x.size for x in jax.tree.leaves(nested)),
        "fixed_params": sum(x.size for x in fixed.values()),
        "frozen_params": sum(x.size for x in frozen.values()),
        "backend": "XLA:CPU (forced host devices)",
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def print_table(args, rows: list[dict]) -> None:
    step = "step" in rows[0]
    head = f"{'devices':>7} {'fsdp':>5} {'params GB':>10} {'optimizer GB':>13} {'state GB':>9}"
    print(f"{args.preset}, batch {args.batch}, {args.views} views, {args.size}, {args.dtype}, remat {args.remat}")
    print(head + (f" {'step args GB':>12} {'temps GB':>9} {'peak GB':>8}" if step else ""))
    for r in rows:
        s = r["state"]
        line = (
            f"{r['devices']:>7} {'yes' if r['fsdp'] else 'no':>5} "
            f"{(s['trainable'] + s['fixed'] + s['frozen']) / GB:10.3f} "
            f"{(s['opt_state'] + s['fixed_grads']) / GB:13.3f} {s['total'] / GB:9.3f}"
        )
        if step:
            m = r["step"]
            line += f" {m['arguments'] / GB:12.3f} {m['temporaries'] / GB:9.3f} {m['peak'] / GB:8.3f}"
        print(line)


if __name__ == "__main__":
    raise SystemExit(main())
