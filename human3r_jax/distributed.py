"""Multi-process runs on JAX's multi-controller runtime (`jax.distributed`): starting it, and the
global arrays that every process builds from its own part.

Launching. One process is the default and needs nothing. Otherwise every process calls `initialize`
before anything else touches JAX, with the same coordinator and process count and its own id, taken
from (first found):
  * the options `--coordinator HOST:PORT --num-processes N --process-id I`;
  * the environment variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID;
  * a cluster launcher that JAX detects itself (SLURM, Open MPI, Cloud TPU), as `jax.distributed.initialize()`.
Process 0 hosts the coordination service at HOST:PORT; the others connect to it. The rendezvous is bounded:
a coordinator that does not answer, a port already taken, or a process that never joins ends every waiting
process with one line (`DistributedError`, or, where JAX itself is waiting, that line printed and exit
status 2) after `timeout_s`, instead of JAX's abort with a stack trace.

Data. Each process holds only its part of a global batch (the data pipeline builds samples
[p·B/P, (p+1)·B/P) of batch k); `global_batch` assembles the global arrays from the parts, and
`global_array` places a host array every process holds in full (parameters) with any sharding.
`host_copy` brings global arrays back to every process (a collective: all processes call it), and only
the main process (`is_main`) writes files, logs and console lines.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import sys
import threading
import time

import jax
import numpy as np

from human3r_jax.errors import Human3rError

# (option, environment variable) of each setting of a plain launch
SETTINGS = {
    "coordinator": ("--coordinator", "JAX_COORDINATOR_ADDRESS"),
    "num_processes": ("--num-processes", "JAX_NUM_PROCESSES"),
    "process_id": ("--process-id", "JAX_PROCESS_ID"),
}
LAUNCHERS = ("slurm", "ompi", "gcetpu", "gketpu")  # JAX's cluster detectors that run without opting in
DEFAULT_TIMEOUT_S = 300  # processes of one cluster job may start minutes apart
GRACE_S = 10  # JAX's own deadline lies this far after ours, so that ours always ends the wait first
ADDRESS = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(?P<port>\d{1,5})")


class DistributedError(Human3rError):
    """A multi-process launch that cannot start: a bad option, or processes that cannot meet."""


@dataclasses.dataclass(frozen=True)
class Launch:
    coordinator: str  # HOST:PORT of process 0's coordination service
    num_processes: int
    process_id: int
    source: str  # where the settings came from: "options", "environment" or a launcher's name
    local_device_ids: tuple[int, ...] | None = None  # set by a launcher with one process per device

    def describe(self, key: str) -> str:
        """How the user named a setting: `--coordinator 1.2.3.4:5` or `JAX_COORDINATOR_ADDRESS=…`."""
        option, variable = SETTINGS[key]
        value = getattr(self, key)
        return {"options": f"{option} {value}", "environment": f"{variable}={value}"}.get(
            self.source, f"{key} {value} (from {self.source})"
        )


def _count(text, what: str, least: int) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value < least:
        raise DistributedError(f"{what}: expected an integer at least {least}")
    return value


def _check_address(address: str, what: str) -> tuple[str, int]:
    m = ADDRESS.fullmatch(address.strip())
    if not m or not 0 < int(m["port"]) < 65536:
        raise DistributedError(f"{what}: expected HOST:PORT (a port in 1..65535), e.g. 10.0.0.1:1234")
    return m["host"].strip("[]"), int(m["port"])


def _detected_launch(timeout_s: int) -> Launch | None:
    """The settings of a cluster launcher JAX detects, as `jax.distributed.initialize()` would use them."""
    from jax._src import clusters  # JAX's launcher detection; no public API tells whether one is present

    env = next((c for c in clusters.ClusterEnv._cluster_types if c.name in LAUNCHERS and c.is_env_present()), None)
    if env is None:
        return None
    port = os.environ.get("JAX_COORDINATOR_PORT")
    address = env.get_coordinator_address(timeout_secs=timeout_s, override_coordinator_port=port)
    local = env.get_local_process_id()
    on_tpu = env.name.endswith("tpu")  # JAX never pins TPU processes to one device
    ids = None if on_tpu or local is None else (local,)
    return Launch(address, env.get_process_count(), env.get_process_id(), env.name, ids)


def resolve(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    environ=os.environ,
) -> Launch | None:
    """The launch the options, the environment or a detected launcher describe (see the module
    docstring); None for a single process. DistributedError, naming the option or variable, for
    settings that are incomplete or out of range."""
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    if any(v is not None for v in given.values()):
        source, values, names = "options", given, {k: option for k, (option, _) in SETTINGS.items()}
    elif any(environ.get(variable) for _, variable in SETTINGS.values()):
        values = {k: environ.get(variable) or None for k, (_, variable) in SETTINGS.items()}
        source, names = "environment", {k: variable for k, (_, variable) in SETTINGS.items()}
    else:
        return _detected_launch(timeout_s)
    missing = [names[k] for k, v in values.items() if v is None]
    if missing:
        raise DistributedError(
            f"{', '.join(missing)}: not set; a multi-process launch needs "
            f"{', '.join(names.values())} together (or none of them for one process)"
        )
    count = _count(values["num_processes"], f"{names['num_processes']}={values['num_processes']}", 1)
    index = _count(values["process_id"], f"{names['process_id']}={values['process_id']}", 0)
    if index >= count:
        raise DistributedError(
            f"{names['process_id']}={index}: must be below {names['num_processes']}={count} (ids 0..{count - 1})"
        )
    _check_address(str(values["coordinator"]), f"{names['coordinator']}={values['coordinator']}")
    return Launch(str(values["coordinator"]).strip(), count, index, source)


# ---------------------------------------------------------------- starting


def _claim_port(launch: Launch) -> None:
    """Process 0 hosts the service: its port must be free on this host."""
    _, port = _check_address(launch.coordinator, launch.describe("coordinator"))
    try:
        socket.create_server(("", port)).close()
    except OSError as e:
        raise DistributedError(
            f"{launch.describe('coordinator')}: process 0 cannot listen on port {port} ({e.strerror or e}); "
            "choose a free port"
        ) from None


def _reach_coordinator(launch: Launch, timeout_s: float) -> None:
    """Processes other than 0 wait (bounded) until process 0's service accepts connections."""
    host, port = _check_address(launch.coordinator, launch.describe("coordinator"))
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, port), timeout=max(0.1, min(2.0, deadline - time.monotonic()))).close()
            return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(
                    f"{launch.describe('coordinator')}: cannot reach the coordinator within {timeout_s:g} s "
                    f"({e.strerror or e}); start process 0 on that host with the same --coordinator "
                    f"(this is process {launch.process_id} of {launch.num_processes})"
                ) from None
            time.sleep(0.2)


def _watchdog(launch: Launch, timeout_s: float, prog: str) -> threading.Timer:
    """Ends this process with one line if JAX's rendezvous outlasts `timeout_s` (JAX would abort later,
    with a stack trace; its wait cannot be interrupted from Python)."""

    def give_up():
        sys.stderr.write(
            f"{prog}: error: {launch.describe('coordinator')}: not all {launch.num_processes} processes joined "
            f"within {timeout_s:g} s (this is process {launch.process_id}); start every process with the same "
            "--coordinator and --num-processes and a distinct --process-id\n"
        )
        sys.stderr.flush()
        os._exit(2)

    timer = threading.Timer(timeout_s, give_up)
    timer.daemon = True
    return timer


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    prog: str = "human3r-jax",
) -> Launch | None:
    """Join the multi-process run the arguments, the environment or a launcher describe (`resolve`), before
    any other use of JAX; nothing for one process. → the launch, or None.

    Every wait is bounded by `timeout_s`: process 0 must be able to listen on the coordinator's port,
    the others must reach it, and all must join. A failure before JAX's rendezvous raises DistributedError;
    a rendezvous that does not complete prints one line `{prog}: error: …` and exits with status 2."""
    launch = resolve(coordinator, num_processes, process_id, timeout_s)
    if launch is None or launch.num_processes == 1:
        return None
    if launch.process_id == 0:
        _claim_port(launch)
    else:
        _reach_coordinator(launch, timeout_s)
    timer = _watchdog(launch, timeout_s, prog)
    timer.start()
    try:
        jax.distributed.initialize(
            coordinator_address=launch.coordinator,
            num_processes=launch.num_processes,
            process_id=launch.process_id,
            local_device_ids=launch.local_device_ids,
            initialization_timeout=int(timeout_s) + GRACE_S,
        )
    except (RuntimeError, ValueError) as e:  # JaxRuntimeError is a RuntimeError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedError(f"{launch.describe('coordinator')}: jax.distributed cannot start ({first})") from None
    finally:
        timer.cancel()
    return launch


def is_main() -> bool:
    """The process that writes files, logs and console lines (process 0; the only one of a plain run)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (nothing for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def process_devices(data_parallel: bool = True) -> list:
    """The devices of a global mesh: every process's (data_parallel), else the first of each process."""
    if data_parallel:
        return jax.devices()
    return [jax.local_devices(process_index=p)[0] for p in range(jax.process_count())]


# ---------------------------------------------------------------- global arrays


def global_batch(local: dict, sharding) -> dict:
    """This process's part of a batch ({key: [B/P, ...]}, the parts of processes 0..P−1 in order along the
    first axis) → the global batch ({key: [B, ...]} jax.Arrays with `sharding`). Every process calls it."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def global_array(x, sharding) -> jax.Array:
    """A host array that every process holds in full (e.g. a parameter) → a jax.Array with `sharding`
    (each process places only the shards its devices hold)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def host_copy(tree):
    """The full values of a tree of global arrays as numpy on every process (for exports and tests). A
    collective where an array is sharded over other processes' devices: every process must call it."""
    from jax.experimental import multihost_utils

    def fetch(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
            return np.asarray(jax.device_get(x))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(fetch, tree)
