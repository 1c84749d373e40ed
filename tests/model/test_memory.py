import platform
import sys

import pytest

from model.memory import release_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="malloc_trim is glibc's")
def test_freed_memory_is_handed_back_on_glibc():
    blocks = [bytearray(64 * 1024) for _ in range(2000)]     # below the mmap threshold: heap pages
    del blocks
    assert release_freed_memory() is True
