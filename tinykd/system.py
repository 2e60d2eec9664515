"""Process-level settings that make CPU work faster without changing any result."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_done = False


def tune_allocator() -> bool:
    """Keep large tensors' memory in glibc's heap between uses.

    By default glibc serves every allocation above its mmap threshold (dynamic, at most
    32 MiB) with a fresh `mmap`, and gives freed heap tops back to the kernel: a forward pass
    that allocates tens of MiB of activations per layer then page-faults every page anew.
    Measured here on a bert-base forward (2 CPU cores): GELU over a 1,600 x 3,072 activation
    took 10 ms with fresh pages and 3.6 ms with reused ones. Raising both thresholds to their
    maximum keeps the pages. Linux/glibc only; elsewhere (or without glibc) it does nothing.
    Returns whether the settings were applied.
    """
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, or no libc found
        return False
    _done = bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _done


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), for the figures that name their machine."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
