"""read_bytes reads a file's stated size first and then whatever it has beyond that: the
same bytes, and the same refusals at the size limit, as one read of the limit would give."""

from __future__ import annotations

from pathlib import Path

import pytest

from protsteps.errors import StructureError
from protsteps.structure._io import SizeLimitError, read_bytes


@pytest.mark.parametrize("size", [0, 1, 10, 100, 70_000])
def test_sizes_and_limits(tmp_path, size):
    path = tmp_path / "f.pdb"
    path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    assert read_bytes(path) == path.read_bytes()
    for limit in (0, 5, size - 1, size, size + 1):
        if limit < 0:
            continue
        if size > limit:
            with pytest.raises(SizeLimitError):
                read_bytes(path, limit)
        else:
            assert read_bytes(path, limit) == path.read_bytes()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs procfs")
def test_a_file_longer_than_its_stated_size():
    # procfs files state size 0: everything is read past the stated size, up to the limit
    path = Path("/proc/self/cmdline")
    data = read_bytes(path)
    assert len(data) > 0
    assert read_bytes(path, len(data) + 1000) == data
    with pytest.raises(StructureError):
        read_bytes(path, len(data) - 1)
