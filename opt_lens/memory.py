"""How much memory this process may still use, so that a model too large is refused before downloading it."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

LIMIT_ENV = "OPT_LENS_MEMORY_LIMIT_MB"
_CGROUP_LIMIT_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


@dataclass(frozen=True)
class MemoryBudget:
    limit_bytes: int
    source: str  # where the limit came from, for the refusal message
    available_bytes: int  # what is left for new weights now


def _physical_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _meminfo_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def process_rss_bytes() -> int:
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def process_memory_bytes() -> int:
    """The memory this process holds, each resident page counted once (Linux: the proportional set size).

    Weights load from safetensors files through memory maps: the resident set counts a file's page once per
    mapping, so a model whose file is mapped again (a reload while the old object is still referenced) would
    count its weights twice and refuse the next model. The proportional set size divides each page among the
    mappings that share it. Falls back to the resident set where ``smaps_rollup`` is missing.
    """
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return process_rss_bytes()


@functools.cache
def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def return_large_blocks_when_freed(mmap_threshold: int = 4 * 2**20, trim_threshold: int = 32 * 2**20,
                                   arenas: int = 2) -> None:
    """Give every block of ``mmap_threshold`` bytes or more (a long prompt's activations, captured tensors)
    pages of its own, which go back to the operating system the moment the block is freed.

    By default glibc raises that threshold to the largest block freed so far (up to 32 MB), after which a
    long prompt's activations land in heaps that stay resident after the forward pass. Fixing it also stops
    glibc adjusting ``trim_threshold``, the free heap it keeps for reuse: left at its 128 KB default, every
    forward pass would hand the heap back and fault it in again. With 4 MB and 32 MB captures cost the same
    as with glibc's defaults (``benchmarks/capture_cost.py --app-allocator``), and the Compare page on a
    1024-token prompt peaked 100-190 MB lower than with ``release_freed_memory`` alone. Process-wide, so the
    app makes this call, not the library. A no-op outside glibc.

    It also keeps glibc to ``arenas`` heaps: by default each of up to 8 per CPU keeps its own free memory.
    Thirty students walking every page at once (``benchmarks/classroom.py --scenarios memory``) peaked at
    2,887 MB with this cap and 2,948 MB without it (2,857 MB with MALLOC_ARENA_MAX=2 set before start).
    """
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
        mallopt(_M_ARENA_MAX, arenas)


MKL_FAST_MM_ENV = "MKL_DISABLE_FAST_MM"


def keep_no_buffers_per_thread() -> None:
    """Stop Intel MKL (torch's matrix multiply on x86) keeping its work buffers for every thread that ever
    multiplied, kept even after the thread ends.

    Streamlit runs every script run in a thread of its own, and MKL sets aside buffers for each thread that
    multiplies. Twenty threads that each read one position through GPT-2's unembedding had 750 MB of such
    buffers mapped, 414 MB of it still after they ended (mapped address space: alone, the process's resident
    memory barely moved); with MKL's own switch set, none (the multiply took as long). With thirty students
    walking every page (``benchmarks/classroom.py --scenarios memory``), glibc's mapped blocks peaked at
    3.0 GB without the switch and 0.36 GB with it, and the server's resident memory in the first 100 s at
    3,037 MB and 2,503 MB (the run's overall peak, later, stayed at about 2.9 GB). MKL reads the switch when
    torch loads, so this must run first; a teacher's own setting is kept.
    """
    if "torch" in sys.modules and os.environ.get(MKL_FAST_MM_ENV) is None:
        logger.warning("torch is already loaded: %s=1 comes too late to stop MKL keeping buffers per thread",
                       MKL_FAST_MM_ENV)
    os.environ.setdefault(MKL_FAST_MM_ENV, "1")


def release_freed_memory() -> None:
    """Hand the memory freed after a forward pass back to the operating system.

    glibc keeps freed blocks in per-thread heaps for reuse: after a 1024-token forward pass on a GPT-2-size
    model that is about 100 MB of resident memory nobody uses, which a shared 2.7 GB server cannot spare.
    A no-op where the C library has no ``malloc_trim`` (macOS, musl).
    """
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


_IGNORED_LIMITS_LOGGED: set[str] = set()


def memory_limit() -> tuple[int, str]:
    """The memory this process may use: the override variable, else the container's limit, else physical RAM."""
    override = os.environ.get(LIMIT_ENV, "").strip()
    if override:
        try:
            limit = float(override) * 2**20
        except ValueError:
            limit = math.nan
        if math.isfinite(limit) and limit >= 1:  # under a byte (1e-9) would be a limit of 0 B, like -1
            return int(limit), f"{LIMIT_ENV}={override}"
        if override not in _IGNORED_LIMITS_LOGGED:  # said once: every page a student opens reads the limit
            _IGNORED_LIMITS_LOGGED.add(override)
            logger.warning("Ignoring %s=%r: not a positive, finite number of megabytes", LIMIT_ENV, override)
    physical = _physical_bytes()
    for path in _CGROUP_LIMIT_FILES:
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value.isdigit() and int(value) < physical:
            return int(value), "the container's memory limit"
    return physical, "this machine's memory"


def memory_budget() -> MemoryBudget:
    limit, source = memory_limit()
    available = limit - process_memory_bytes()
    system_available = _meminfo_available_bytes()
    if system_available is not None:
        available = min(available, system_available)
    return MemoryBudget(limit_bytes=limit, source=source, available_bytes=max(available, 0))


def format_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
