"""What a line and a blank line are, for every text input the project reads.

- A **line** ends at ``\\n`` (or at the end of the input); one trailing ``\\r`` is part of the line end (CRLF files
  read like LF files). Every other character is text, including U+2028/U+2029 (line/paragraph separator), form
  feed, vertical tab, U+0085 (NEL) and a lone ``\\r`` inside a line: ``str.splitlines`` would break on those,
  this module never does. ``"a\\nb"`` and ``"a\\nb\\n"`` are both two lines; ``""`` is none; ``"\\n"`` is one
  empty line. So a tool that maps lines to lines gives N lines out for N lines in.
- A **blank line** is empty after stripping whitespace (``str.strip``: spaces, tabs, U+3000, U+00A0, ...).
  In CC100-layout text a blank line separates documents.
- A **byte-order mark** (U+FEFF, UTF-8 ``EF BB BF``) at the very start of an input is not text: one is
  stripped from every input (data files, references, stdin).

Readers: :func:`split_lines` (a decoded string), :func:`iter_byte_lines` (a binary stream, lazily, without its
line ends or BOM), :func:`read_text_lines` (a whole UTF-8 file or stream). :data:`BLANK_LINE_BYTES` finds a
newline followed by a blank line in UTF-8 bytes (the CC100 document boundary), for byte-level cutters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import BinaryIO

BOM = "\ufeff"
BOM_BYTES = BOM.encode("utf-8")

# Characters for which ``str.isspace`` is true, minus "\n", as UTF-8 byte sequences.
_SPACE_BYTES = (
    rb"[\t\x0b\x0c\r\x1c-\x1f ]"
    rb"|\xc2[\x85\xa0]"
    rb"|\xe1\x9a\x80"
    rb"|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]"
    rb"|\xe2\x81\x9f"
    rb"|\xe3\x80\x80"
)
SPACE_RUN_BYTES = re.compile(rb"(?:" + _SPACE_BYTES + rb")*")
"""A run of whitespace without ``\n``, in UTF-8 bytes (``fullmatch``: the bytes of a blank line)."""
BLANK_LINE_BYTES = re.compile(rb"\n(?:" + _SPACE_BYTES + rb")*\n")
"""``\\n`` + a blank line (with its ``\\n``) in UTF-8 bytes: ``match.end()`` is where the next document starts."""


def strip_bom(text: str) -> str:
    """``text`` without one leading U+FEFF."""
    return text[1:] if text.startswith(BOM) else text


def strip_bom_bytes(data: bytes) -> bytes:
    """UTF-8 ``data`` without one leading byte-order mark."""
    return data[3:] if data.startswith(BOM_BYTES) else data


def strip_line_end(line: str) -> str:
    """``line`` without its ``\\n`` and one ``\\r`` before it (a line as read from a file)."""
    if line.endswith("\n"):
        line = line[:-1]
    return line[:-1] if line.endswith("\r") else line


def strip_line_end_bytes(line: bytes) -> bytes:
    """:func:`strip_line_end` for raw bytes."""
    if line.endswith(b"\n"):
        line = line[:-1]
    return line[:-1] if line.endswith(b"\r") else line


def is_blank(line: str) -> bool:
    """Whether ``line`` is empty after stripping whitespace."""
    return not line.strip()


def split_lines(text: str) -> list[str]:
    """The lines of ``text`` (see the module doc); a leading BOM is not part of the first line."""
    text = strip_bom(text)
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def join_lines(lines: Iterable[str]) -> str:
    """Text of ``lines``, each ended by ``\\n``; a ``\\n`` inside a line becomes a space (one line stays one)."""
    return "".join(line.replace("\n", " ") + "\n" for line in lines)


def iter_byte_lines(handle: BinaryIO) -> Iterator[bytes]:
    """The lines of a binary stream as bytes, without line ends; a leading BOM is dropped from the first line.

    Binary iteration breaks at ``b"\\n"`` only, so U+2028, form feeds and lone ``\\r`` stay inside lines.
    """
    first = True
    for raw in handle:
        line = strip_line_end_bytes(raw)
        if first:
            line, first = strip_bom_bytes(line), False
        yield line


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source}: not UTF-8 (byte {exc.start})") from None


def decode_text(data: bytes, source: str) -> str:
    """UTF-8 ``data`` as text without a leading BOM; ``ValueError`` naming ``source`` and the byte offset."""
    return strip_bom(_decode(data, source))


def read_text_lines(handle: BinaryIO, source: str) -> list[str]:
    """All lines of a UTF-8 binary stream (a file or ``sys.stdin.buffer``); ``ValueError`` if not UTF-8."""
    return split_lines(_decode(handle.read(), source))


def blank_line_groups(lines: Iterable[str]) -> Iterator[list[str]]:
    """Runs of non-blank lines separated by blank lines (CC100 documents: one paragraph a line)."""
    group: list[str] = []
    for line in lines:
        if is_blank(line):
            if group:
                yield group
                group = []
        else:
            group.append(line)
    if group:
        yield group
