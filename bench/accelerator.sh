#!/usr/bin/env bash
# One prepared run on a lent accelerator machine (no network, no package registry; its own Python with JAX):
# parity, forward speed, end-to-end reconstruct and one training step, recorded in OUT_DIR/accelerator.json
# (rewritten after every step) with a table printed at the end. bench/accelerator.py says what each step does.
#
#   bench/accelerator.sh OUT_DIR [--dry-run] [--budget S] [--steps parity,forward,e2e,train] [--shared DIR]
#
# PYTHON (default python3) is the Python with jax. The packages the steps need beyond its JAX stack (PyAV,
# Pillow, trimesh, tqdm) are installed, when it lacks them, from bench/wheels/ (fill it beforehand with
# `python bench/accelerator.py --collect-wheels bench/wheels`) into a temporary folder put on PYTHONPATH with
# this source tree: nothing is installed into that Python, and the folder is removed at the end. (Not a venv:
# one made from a Python that is itself a venv would not see that venv's jax.) --dry-run runs the same steps
# with the tiny preset at tiny sizes on any machine (about 2 minutes on 2 CPU cores).
#
# On the lent machine: ship bench/wheels (gitignored: name it among the paths the device tool carries) and run
# `bash bench/accelerator.sh "$OUT"` with a limit of 7 minutes or more: the steps share --budget (345 s), the set-up
# takes seconds. What did not fit is marked skipped; run it again with --steps.
set -euo pipefail

prog=bench/accelerator.sh
die() {
    echo "$prog: error: $*" >&2
    exit 2
}

if [[ $# -lt 1 || $1 == -* ]]; then
    die "missing OUT_DIR (usage: $prog OUT_DIR [--dry-run] [--budget S] [--steps parity,forward,e2e,train])"
fi
out=$1
shift
bench=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$bench")
py=${PYTHON:-python3}
command -v "$py" >/dev/null 2>&1 || die "no Python: '$py' not found (set PYTHON to the Python with jax)"
"$py" -c "import jax" >/dev/null 2>&1 || die "'$py' cannot import jax (set PYTHON to the Python with jax)"
mkdir -p "$out" || die "cannot create OUT_DIR $out"

work=$(mktemp -d "${TMPDIR:-/tmp}/accelerator.XXXXXX")
trap 'rm -rf "$work"' EXIT
site=$work/site
mapfile -t wanted < <(PYTHONPATH="$repo" "$py" "$bench/accelerator.py" --missing)
if [[ ${#wanted[@]} -gt 0 ]]; then
    [[ -d $bench/wheels ]] || die "'$py' lacks ${wanted[*]} and there is no $bench/wheels (fill it with: python bench/accelerator.py --collect-wheels bench/wheels)"
    echo "$prog: installing ${wanted[*]} from $bench/wheels" >&2
    "$py" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$bench/wheels" --no-deps \
        --target "$site" "${wanted[@]}" || die "cannot install ${wanted[*]} from $bench/wheels"
fi
export PYTHONPATH="$repo:$site${PYTHONPATH:+:$PYTHONPATH}"

status=0
"$py" "$bench/accelerator.py" "$out" --work "$work" "$@" || status=$?
if [[ -f $out/accelerator.json ]]; then
    "$py" "$bench/accelerator.py" --summarize "$out/accelerator.json"
fi
exit "$status"
