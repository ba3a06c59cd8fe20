"""How much memory the process holds, as the check that refuses a model too large reads it."""

from __future__ import annotations

import mmap

from opt_lens import memory

FILE_MB = 48


def test_a_file_mapped_twice_counts_once_against_the_memory_limit(monkeypatch, tmp_path):
    """Weights load through memory maps of their safetensors file: a second mapping of the same file (a model
    loaded again while the old object lives) shares its pages, and must not look like twice the memory."""
    path = tmp_path / "weights.safetensors"
    path.write_bytes(bytes(range(256)) * (FILE_MB * 2**20 // 256))
    monkeypatch.setenv(memory.LIMIT_ENV, "100000")
    monkeypatch.setattr(memory, "_meminfo_available_bytes", lambda: None)  # the limit alone, not the machine
    before_budget, before_rss = memory.memory_budget().available_bytes, memory.process_rss_bytes()
    with open(path, "rb") as file:
        maps = [mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) for _ in range(2)]
    try:
        page = mmap.PAGESIZE
        for m in maps:  # read a byte of every page: each page of both maps resident
            sum(m[i] for i in range(0, len(m), page))
        used_by_budget = before_budget - memory.memory_budget().available_bytes
        resident = memory.process_rss_bytes() - before_rss
    finally:
        for m in maps:
            m.close()
    size = FILE_MB * 2**20
    assert resident > 1.8 * size  # the resident set counts the file's pages once per mapping
    assert 0.8 * size < used_by_budget < 1.25 * size  # the budget counts them once
