"""The one definition of a line, a blank line and a byte-order mark (deltalm/text_lines.py)."""

from __future__ import annotations

import io

import pytest

from deltalm.text_lines import (
    BLANK_LINE_BYTES,
    blank_line_groups,
    is_blank,
    iter_byte_lines,
    join_lines,
    read_text_lines,
    split_lines,
)

INSIDE = ["\u2028", "\u2029", "\x0c", "\x0b", "\x85", "\x1c", "\x1d", "\x1e", "\r"]  # text, not line ends


@pytest.mark.parametrize(
    "text,lines",
    [
        ("", []),
        ("\n", [""]),
        ("a", ["a"]),
        ("a\nb", ["a", "b"]),
        ("a\nb\n", ["a", "b"]),
        ("a\r\nb\r\n", ["a", "b"]),
        ("a\r\r\n", ["a\r"]),  # one trailing CR is the line end's
        ("\ufeffa\n", ["a"]),
        ("\ufeff\ufeffa\n", ["\ufeffa"]),  # one BOM only
        ("a\n\n", ["a", ""]),
        *[(f"x{c}y\nz\n", [f"x{c}y", "z"]) for c in INSIDE],
    ],
)
def test_split_lines(text, lines):
    assert split_lines(text) == lines
    assert list(iter_byte_lines(io.BytesIO(text.encode()))) == [x.encode() for x in lines]
    assert read_text_lines(io.BytesIO(text.encode()), "t") == lines


def test_n_lines_round_trip():
    lines = ["a\u2028b", "", "c\x0cd", "e\x85f", " ", "g\nh"]
    assert split_lines(join_lines(lines)) == [*lines[:5], "g h"]


def test_blank_lines_and_documents():
    assert all(is_blank(x) for x in ["", " ", "\t", "\r", "\u3000", "\u00a0", "\u2028", " \x0c "])
    assert not any(is_blank(x) for x in ["\ufeff", "\u200b", "x", ". "])
    lines = split_lines("a\nb\r\n \r\n\u3000\nc\n\t\n")
    assert list(blank_line_groups(lines)) == [["a", "b"], ["c"]]


def test_blank_line_bytes_agree_with_is_blank():
    for cp in range(0x110000):
        c = chr(cp)
        if c == "\n" or 0xD800 <= cp < 0xE000:
            continue
        assert bool(BLANK_LINE_BYTES.fullmatch(b"\n" + c.encode() + b"\n")) == is_blank(c), hex(cp)
    assert BLANK_LINE_BYTES.search(b"doc\r\n\r\nnext").span() == (4, 7)


def test_invalid_utf8_is_one_line_error():
    with pytest.raises(ValueError, match=r"^in.txt: not UTF-8 \(byte 2\)$"):
        read_text_lines(io.BytesIO(b"ab\xff\n"), "in.txt")
