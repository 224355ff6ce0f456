"""What the numbers were measured on: processor, cores, interpreter and big-integer library."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np
import phe


def cpu_model() -> str:
    """Return the processor's model name from /proc/cpuinfo (or the platform's word for it)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """Return the 1-, 5- and 15-minute load averages: other work on the machine skews every time."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def describe_machine() -> dict[str, Any]:
    """Collect the facts printed in the table header and stored in the JSON results."""
    return {
        "load_average_start": load_average(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count() or 1,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "gmpy2": gmpy2.version(),
        "gmp": gmpy2.mp_version(),
        "phe": getattr(phe, "__version__", "unknown"),
        "numpy": np.__version__,
    }


def describe_line(machine: dict[str, Any]) -> str:
    """One line for the table header."""
    return (
        f"{machine['cpu_model']}, {machine['cores']} cores; Python {machine['python']};"
        f" gmpy2 {machine['gmpy2']} ({machine['gmp']}); phe {machine['phe']}; numpy {machine['numpy']}"
    )
