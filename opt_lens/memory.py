"""How much memory this process may still use, so that a model too large is refused before downloading it."""

from __future__ import annotations

import logging
import os
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


def memory_limit() -> tuple[int, str]:
    """The memory this process may use: the override variable, else the container's limit, else physical RAM."""
    override = os.environ.get(LIMIT_ENV, "").strip()
    if override:
        try:
            return int(float(override) * 2**20), f"{LIMIT_ENV}={override}"
        except ValueError:
            logger.warning("Ignoring %s=%r: not a number of megabytes", LIMIT_ENV, override)
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
    available = limit - process_rss_bytes()
    system_available = _meminfo_available_bytes()
    if system_available is not None:
        available = min(available, system_available)
    return MemoryBudget(limit_bytes=limit, source=source, available_bytes=max(available, 0))


def format_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
