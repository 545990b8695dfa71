"""Device facts for the MFU benchmark: the measured GEMM ceiling, the NVIDIA driver, peak memory."""

from __future__ import annotations

import subprocess
import time


def gemm_ceiling_tflops(device, precision: str) -> float:
    """Measured dense matmul throughput at the training precision (square GEMMs; the best of a few sizes)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    cuda = device.type == "cuda"
    sizes = (4096, 8192) if cuda else (512, 1024)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        reps = 20 if cuda else 3
        for _ in range(2):
            a @ b
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(reps):
                a @ b
            end.record()
            torch.cuda.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            started = time.perf_counter()
            for _ in range(reps):
                a @ b
            seconds = time.perf_counter() - started
        best = max(best, 2 * n**3 * reps / seconds / 1e12)
    return best


def nvidia_driver() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.split()[0] if out.returncode == 0 and out.stdout.split() else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def peak_memory_gb(device, resident: int = 0) -> tuple[float, str]:
    """Peak memory of the timed steps (CUDA: max allocated minus ``resident`` bytes held before the model)."""
    import torch

    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated(device) - resident) / 2**30, "cuda max allocated"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process peak RSS"
