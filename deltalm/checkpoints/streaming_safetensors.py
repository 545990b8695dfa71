"""A streaming safetensors writer: the header first (names, dtypes, shapes are known up front), then each tensor's
bytes as it is produced, so a consolidated export never holds more than one tensor beyond its source.

The file is the standard format (8-byte little-endian header length, JSON header padded with spaces to a multiple
of 8, then the raw little-endian data in header order) and is read by ``safetensors.torch.load_file``. The bytes
depend only on the tensors, their order and the metadata: the same input gives the same file.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from pathlib import Path

import torch

DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64"}


class StreamingSafetensorsWriter:
    """``with StreamingSafetensorsWriter(path, specs) as w: w.write(name, tensor)`` in the order of ``specs``."""

    def __init__(
        self,
        path: str | Path,
        specs: Iterable[tuple[str, torch.Size, torch.dtype]],
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.specs = [(name, torch.Size(shape), dtype) for name, shape, dtype in specs]
        header: dict = {}
        if metadata:
            header["__metadata__"] = dict(metadata)
        offset = 0
        for name, shape, dtype in self.specs:
            if dtype not in DTYPES:
                raise ValueError(f"{name}: dtype {dtype} is not supported by this writer")
            nbytes = shape.numel() * torch.empty((), dtype=dtype).element_size()
            header[name] = {
                "dtype": DTYPES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        self._header = struct.pack("<Q", len(raw)) + raw
        self._next = 0
        self._handle = None

    def __enter__(self) -> StreamingSafetensorsWriter:
        self._handle = open(self.path, "wb")
        self._handle.write(self._header)
        return self

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self._next >= len(self.specs):
            raise ValueError(f"unexpected tensor {name}: all {len(self.specs)} tensors already written")
        want_name, want_shape, want_dtype = self.specs[self._next]
        if name != want_name or tensor.shape != want_shape or tensor.dtype != want_dtype:
            raise ValueError(
                f"tensor {self._next} is {name} {tuple(tensor.shape)} {tensor.dtype}, "
                f"expected {want_name} {tuple(want_shape)} {want_dtype}"
            )
        data = tensor.detach().contiguous().cpu()
        # raw bytes through an untyped view (works for bf16, which numpy lacks)
        self._handle.write(data.reshape(-1).view(torch.uint8).numpy().tobytes())
        self._next += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        handle, self._handle = self._handle, None
        try:
            if exc_type is None and self._next != len(self.specs):
                missing = self.specs[self._next][0]
                raise ValueError(
                    f"{self.path}: {len(self.specs) - self._next} tensors not written (next: {missing})"
                )
            handle.flush()
        finally:
            handle.close()
