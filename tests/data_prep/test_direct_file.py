"""DirectFile: the same bytes as a plain write, whether the filesystem takes O_DIRECT, refuses it at open, or
refuses it at the first write."""

from __future__ import annotations

import errno
import os
import random

import pytest

from data_prep import direct_file
from data_prep.direct_file import DirectFile


def chunks(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    sizes = [0, 1, 4095, 4096, 4097, 3, 70_000, 12_288, 1, 200_000, 5]
    return [rng.randbytes(n) for n in sizes]


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("stage", [4096, 16384, 1 << 20])
def test_bytes_equal_a_plain_write(tmp_path, direct, stage):
    parts = chunks(stage)
    path = tmp_path / "out.bin"
    total = 0
    with DirectFile(path, direct=direct, stage_bytes=stage) as handle:
        for part in parts:
            assert handle.write(part) == len(part)
            total += len(part)
            assert handle.tell() == total
        handle.commit()
    assert path.read_bytes() == b"".join(parts)
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_an_exact_multiple_of_the_stage_leaves_nothing_to_pad(tmp_path):
    path = tmp_path / "out.bin"
    data = random.Random(0).randbytes(3 * 8192)
    with DirectFile(path, stage_bytes=8192) as handle:
        handle.write(memoryview(data))
        handle.commit()
    assert path.read_bytes() == data


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EOPNOTSUPP])
def test_open_refused_falls_back_to_buffered_writes(tmp_path, monkeypatch, code):
    real_open = os.open

    def refuse_direct(path, flags, mode=0o777):
        if flags & os.O_DIRECT:
            raise OSError(code, os.strerror(code))
        return real_open(path, flags, mode)

    monkeypatch.setattr(direct_file.os, "open", refuse_direct)
    path = tmp_path / "out.bin"
    with DirectFile(path, stage_bytes=4096) as handle:
        assert not handle.direct
        for part in chunks(1):
            handle.write(part)
        handle.commit()
    assert path.read_bytes() == b"".join(chunks(1))


def test_write_refused_switches_to_buffered_mid_file(tmp_path, monkeypatch):
    real_write = os.write
    calls = []

    def refuse_second_direct_write(fd, data):
        calls.append(len(data))
        if len(calls) == 2:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(direct_file.os, "write", refuse_second_direct_write)
    path = tmp_path / "out.bin"
    parts = chunks(2)
    with DirectFile(path, stage_bytes=4096) as handle:
        for part in parts:
            handle.write(part)
        handle.commit()
        assert not handle.direct
    assert path.read_bytes() == b"".join(parts)


def test_other_errors_are_raised(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct_file.os, "write", full)
    with DirectFile(tmp_path / "out.bin", stage_bytes=4096) as handle, pytest.raises(OSError) as info:
        handle.write(b"x" * 5000)
    assert info.value.errno == errno.ENOSPC


def test_a_short_unaligned_direct_write_switches_to_buffered(tmp_path, monkeypatch):
    """A direct write that returns an unaligned count leaves the rest unaligned: it goes on buffered."""
    real_open, real_write = os.open, os.write
    calls = []
    # the fd is opened without O_DIRECT underneath, so the simulated short write can really land
    monkeypatch.setattr(direct_file.os, "open", lambda p, f, m=0o777: real_open(p, f & ~os.O_DIRECT, m))

    def short_first(fd, data):
        calls.append(len(data))
        return real_write(fd, data[:1000] if len(calls) == 1 else data)

    monkeypatch.setattr(direct_file.os, "write", short_first)
    path = tmp_path / "out.bin"
    parts = chunks(3)
    with DirectFile(path, stage_bytes=4096) as handle:
        assert handle.direct
        for part in parts:
            handle.write(part)
        handle.commit()
        assert not handle.direct
    assert calls[:2] == [4096, 3096]
    assert path.read_bytes() == b"".join(parts)
