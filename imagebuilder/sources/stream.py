"""Writing a downloaded stream: decompress by suffix, and keep runs of zeros as holes."""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Iterator
from typing import BinaryIO

BLOCK = 64 << 10
SUFFIXES = (".xz", ".gz", ".zst", ".bz2")
_ZERO = bytes(BLOCK)


OUT = 8 << 20
ZSTD_PIECE = 1 << 10


class Decoder:
    """Decompresses a stream chosen by the file name's suffix, in bounded pieces.

    Highly compressed zeros would otherwise expand a 1 MiB chunk into gigabytes in memory.
    """

    def __init__(self, name: str):
        self.kind = next((s for s in SUFFIXES if name.endswith(s)), "")
        if self.kind == ".xz":
            self._d = lzma.LZMADecompressor()
        elif self.kind == ".bz2":
            self._d = bz2.BZ2Decompressor()
        elif self.kind == ".gz":
            self._d = zlib.decompressobj(wbits=47)
        elif self.kind == ".zst":
            import zstandard
            self._d = zstandard.ZstdDecompressor().decompressobj()

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decompressed bytes that data yields, in pieces of bounded size."""
        if not self.kind:
            yield data
        elif self.kind == ".gz":
            out = self._d.decompress(data, OUT)
            yield out
            while self._d.unconsumed_tail:
                yield self._d.decompress(self._d.unconsumed_tail, OUT)
        elif self.kind == ".zst":
            for start in range(0, len(data), ZSTD_PIECE):
                yield self._d.decompress(data[start:start + ZSTD_PIECE])
        else:
            yield self._d.decompress(data, OUT)
            while not self._d.needs_input and not self._d.eof:
                yield self._d.decompress(b"", OUT)

    @property
    def complete(self) -> bool:
        """False when a compressed stream ended before its end marker."""
        return not self.kind or getattr(self._d, "eof", True)


class SparseWriter:
    """Writes data to a file, seeking over all-zero blocks so that they stay holes."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.size = 0

    def write(self, data: bytes) -> None:
        """Append data."""
        view = memoryview(data)
        for start in range(0, len(view), BLOCK):
            block = view[start:start + BLOCK]
            if block == (_ZERO if len(block) == BLOCK else bytes(len(block))):
                self.handle.seek(len(block), 1)
            else:
                self.handle.write(block)
            self.size += len(block)

    def reset(self) -> None:
        """Start over from an empty file."""
        self.handle.seek(0)
        self.handle.truncate(0)
        self.size = 0

    def close(self) -> None:
        """Fix the file's length (a trailing hole is not written by seeking alone)."""
        self.handle.truncate(self.size)
