"""What the benchmark scripts say about the machine beside each time: its fp32 matmul rate and CPU name.

Imported by the scripts in this folder (run as ``python benchmarks/<script>.py``, which puts this folder on the path).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch


def matmul_gflops(n: int = 1024, repeats: int = 8) -> float:
    """fp32 matmul rate of this process, in GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(threads: int, gflops: float) -> dict:
    """The machine entry of a results file: CPU, cores, torch threads, the fp32 matmul rate measured for the run,
    Python and torch versions, and the load average now (the machine is shared)."""
    return {
        "cpu": cpu_name(), "cores": os.cpu_count(), "threads": threads, "matmul_fp32_gflops": round(gflops, 1),
        "python": platform.python_version(), "torch": torch.__version__, "load_average": os.getloadavg(),
    }  # fmt: skip
