"""Handing freed heap memory back to the operating system.

An evaluation pass allocates and frees large tensors batch after batch (a SAINet forward holds
attention maps of a few hundred MiB at batch 8192). glibc's allocator keeps much of what is freed in
its arenas, so resident memory stays high after a pass (measured: +487 MiB after 500 K validation
examples at batch 8192, 73 MiB after a trim) and training carries it on. `malloc_trim` returns the
free pages; evaluation calls it every few batches and at the end of each pass
(`scripts/profile_eval_memory.py` measures the alternatives). Lowering glibc's mmap threshold
bounds the creep too, but makes evaluation ~60% slower (every large tensor becomes a fresh mmap
and page faults)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _glibc_malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim       # glibc only (musl has no malloc_trim)
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Returns freed heap pages to the OS where the C library can (glibc); True when it could."""
    trim = _glibc_malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
