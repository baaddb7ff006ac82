#!/usr/bin/env bash
# The GPU benchmark (benchmarks/gpu.py), prepared here and run on the GPU machine in one call.
#
#   benchmarks/gpu_run.sh prepare   # here (internet): wheels for the GPU machine's Python 3.12 into .whl/, then checked:
#                                   # tags, one version each, every requirement met, every desweep import covered,
#                                   # and pip install --no-deps of the set into an empty CPython 3.12 target
#   benchmarks/gpu_run.sh run       # there (no internet): install .whl/ into /tmp/site, run gpu.py, write the table
#                                   # to $OUT (the device tool's output folder) or results/gpu
#
# There, the whole run is one call of the device tool, carrying the wheels (about 18 MiB):
#   run(command="bash benchmarks/gpu_run.sh run", carry=[".whl"], timeout_s=600)
# CELLS (50000), GENES (2000) and EPOCHS (10) change the size; the default run takes about 7 minutes of the 10.
set -euo pipefail
cd "$(dirname "$0")/.."
WHL=${WHL:-.whl}

case "${1:-}" in
prepare)
    PY=${PYTHON:-.venv/bin/python}
    rm -rf "$WHL"
    "$PY" benchmarks/gpu_wheels.py download "$WHL"
    "$PY" benchmarks/gpu_wheels.py check "$WHL"
    "$PY" benchmarks/gpu_wheels.py install-test "$WHL"
    ;;
run)
    RESULTS=${OUT:-results/gpu}
    mkdir -p "$RESULTS"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHL"/*.whl
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$RESULTS/gpu_info.txt"
    python3 -c "import desweep, scvi, torch; print('desweep', desweep.__file__, 'scvi-tools', scvi.__version__, 'torch', torch.__version__)"
    python3 benchmarks/gpu.py --cells "${CELLS:-50000}" --genes "${GENES:-2000}" --epochs "${EPOCHS:-10}" --threads "$(nproc)" \
        --workdir /tmp/desweep-gpu --table "$RESULTS/gpu_table.csv" 2>&1 | tee "$RESULTS/gpu_log.txt"
    ;;
*)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
