"""Export benchmark: peak resident memory and time of ``python -m deltalm.export`` vs. DeepSpeed's ``zero_to_fp32``.

    .venv/bin/python -m benchmarks.export [--d-model 512] [--layers 6] [--vocab 32000] [--world 2] [--stage 2]

Trains a model of the given size for 2 steps through the engine (benchmarks/checkpoint_runs.py, CPU ranks), then runs
each consolidation in a fresh process and reads its peak RSS from ``wait4``: (a) a process that only imports what
the export imports (baseline), (b) ``python -m deltalm.export`` (safetensors, fp32), (c) DeepSpeed's
``get_fp32_state_dict_from_zero_checkpoint`` + ``safetensors.save_file``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def measure(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one child process."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--stage", type=int, default=2)
    args = parser.parse_args()
    from benchmarks import rank_launcher

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        overrides = [
            f"model.d_model={args.d_model}", f"model.heads={args.d_model // 64}", f"model.ffn={4 * args.d_model}",
            f"model.encoder_layers={args.layers}", f"model.decoder_blocks={args.layers // 2}",
            f"model.vocab_size={args.vocab}",
        ]  # fmt: skip
        script = REPO / "benchmarks" / "checkpoint_runs.py"
        args_of_run = [str(tmp), f"{args.stage}:fp32", *overrides]
        results = rank_launcher.run(args.world, script, args_of_run, timeout=1800)
        for rc, _out, err in results:
            if rc:
                raise SystemExit(err[-3000:])
        run = tmp / f"z{args.stage}_fp32"
        from safetensors import safe_open

        with safe_open(str(run / "reference_fp32.safetensors"), "pt") as f:
            numel = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118
        fp32_mib = numel * 4 / 2**20
        ckpt_mib = sum(p.stat().st_size for p in (run / "checkpoints").rglob("*.pt")) / 2**20
        py = sys.executable
        base = measure(
            [
                py,
                "-c",
                "import deltalm.export.exporter, deltalm.checkpoints.engine_checkpoint as c; c._deepspeed_safe_types()",
            ]
        )
        ours = measure([py, "-m", "deltalm.export", "--run-dir", str(run), "--out", str(tmp / "ours")])
        ds_code = (
            "import sys; from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint as g;"
            "from safetensors.torch import save_file;"
            "sd = g(sys.argv[1]); save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2])"
        )
        theirs = measure([py, "-c", ds_code, str(run / "checkpoints"), str(tmp / "ds.safetensors")])
    print(f"model: {numel:,} parameters ({fp32_mib:.0f} MiB fp32); checkpoint {ckpt_mib:.0f} MiB on disk; "
          f"{args.world} ranks, ZeRO-{args.stage}")  # fmt: skip
    print("| process | peak RSS MiB | above import baseline MiB | (above baseline) / fp32 size | seconds |")
    print("|---|---|---|---|---|")
    for name, (rss, sec) in (
        ("imports only (baseline)", base),
        ("python -m deltalm.export", ours),
        ("zero_to_fp32 + save_file", theirs),
    ):
        print(f"| {name} | {rss:.0f} | {rss - base[0]:.0f} | {(rss - base[0]) / fp32_mib:.2f} | {sec:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
