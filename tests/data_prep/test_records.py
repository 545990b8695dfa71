"""The fast CC100 parser (C and numpy) agrees with the exact line-by-line one wherever it accepts a block."""

from __future__ import annotations

import random

from data_prep import records

# every str.isspace character, and lines that merely start with the same UTF-8 bytes as one
SPACES = [chr(c) for c in range(0x110000) if chr(c).isspace() and chr(c) not in "\n\r"]
LOOKALIKES = ["“quote”", "「台詞」", "カタカナ", "\u2010dash", "\u00a1hola", "\u1681x", "\u3001、"]


def test_fast_and_loop_parsers_agree(monkeypatch):
    rng = random.Random(0)
    pieces = ["abc", "Grüße", "", "", " \t", "x y", "中文", "long " * 30, *LOOKALIKES]
    cases = []
    for _ in range(3000):
        n = rng.randint(0, 30)
        lines = [rng.choice(pieces) for _ in range(n)]
        if rng.random() < 0.2:  # a whitespace-only line of any kind of space
            lines.insert(rng.randint(0, n), "".join(rng.choices(SPACES, k=rng.randint(1, 3))))
        text = "\n".join(lines) + rng.choice(["", "\n", "\n\n", "\n\n\n"])
        if rng.random() < 0.3:  # CRLF line ends (the fast path reads them too)
            text = text.replace("\n", "\r\n")
        cases.append((text.encode(), rng.choice([1 << 20, 40, 160]), rng.choice([1 << 20, 100, 400])))
    fast = [records._parse_mono_fast(data, 5, line_max, doc_max) for data, line_max, doc_max in cases]
    assert 300 < sum(f is not None for f in fast) < 2900  # both paths exercised
    monkeypatch.setattr(records, "_parse_mono_fast", lambda *a: None)
    for (data, line_max, doc_max), f in zip(cases, fast, strict=True):
        if f is not None:
            slow = records.parse_mono(data, 5, line_max, doc_max)
            lines = [f.line_of(i) for i in range(len(f.docs))]
            assert (f.docs, lines, f.skips) == (slow.docs, slow.doc_first_line, slow.skips), data


def test_every_kind_of_whitespace_line_is_a_blank_line_on_both_paths(monkeypatch):
    cases = [f"a\n{space}\nb\n".encode() for space in SPACES]
    cases += [f"a\r\n{space}\r\nb\r\n".encode() for space in SPACES if space not in "\r"]
    fast = [records._parse_mono_fast(data, 1, 1 << 20, 1 << 20) for data in cases]
    assert all(f is not None and f.docs == [b"a", b"b"] and f.line_of(1) == 3 for f in fast)
    for space in SPACES:  # a whitespace-only first line: the exact path decides
        assert records._parse_mono_fast(f"{space}\nb\n".encode(), 1, 1 << 20, 1 << 20) is None, hex(
            ord(space)
        )
    for text in LOOKALIKES:
        assert records._parse_mono_fast(f"a\n{text}\n".encode(), 1, 1 << 20, 1 << 20) is not None, text
    monkeypatch.setattr(records, "_parse_mono_fast", lambda *a: None)
    for data in cases:
        slow = records.parse_mono(data, 1, 1 << 20, 1 << 20)
        assert slow.docs == [b"a", b"b"] and slow.doc_first_line == [1, 3] and slow.skips == [], data


def test_utf8_validator_agrees_with_python():
    rng = random.Random(1)
    edge = [b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf0\x9f\x98", b"\xe2\x82", b"\x80", b"\xff",
            b"\xef\xbf\xbf", b"\xf4\x8f\xbf\xbf", b"\xed\x9f\xbf", b"\xee\x80\x80", "Grüße 中文 😀".encode()]  # fmt: skip
    cases = edge + [bytes(rng.randrange(256) for _ in range(rng.randint(0, 6))) for _ in range(20000)]
    cases += [b"ok " + c + " 😀".encode() for c in edge]
    for data in cases:
        try:
            data.decode("utf-8")
            python = True
        except UnicodeDecodeError:
            python = False
        assert records.valid_utf8(data) == python, data


def test_crlf_blocks_give_the_records_of_lf_blocks_on_both_paths(monkeypatch):
    lf = "Erster Absatz.\nZweiter Absatz.\n\n中文段落。\n\nA\u2028B\x0cC\n".encode()
    crlf = lf.replace(b"\n", b"\r\n")
    fast_lf, fast_crlf = (records._parse_mono_fast(d, 3, 1 << 20, 1 << 20) for d in (lf, crlf))
    assert fast_lf is not None and fast_crlf is not None
    assert fast_crlf.docs == fast_lf.docs == [b"Erster Absatz. Zweiter Absatz.", "中文段落。".encode(),
                                             "A\u2028B\x0cC".encode()]  # fmt: skip
    assert [fast_crlf.line_of(i) for i in range(3)] == [3, 6, 8]
    monkeypatch.setattr(records, "_parse_mono_fast", lambda *a: None)
    slow = records.parse_mono(crlf, 3, 1 << 20, 1 << 20)
    assert slow.docs == fast_lf.docs and slow.doc_first_line == [3, 6, 8] and slow.skips == []


def test_bad_line_is_dropped_not_its_document():
    out = records.parse_mono(b"good one\n\xff bad\ngood two\n\nnext\n", 1, 1 << 20, 1 << 20)
    assert out.docs == [b"good one good two", b"next"] and out.doc_first_line == [1, 5]
    assert out.skips == [("invalid_utf8", 2)]
    out = records.parse_mono(b"a\n\n\xff\n\nb\n", 1, 1 << 20, 1 << 20)  # a bad line alone: no empty_document
    assert out.docs == [b"a", b"b"] and out.skips == [("invalid_utf8", 3)]


def test_unclean_blocks_take_the_exact_path():
    for data in (
        b"a\rb\n",
        b"a\r\r\nb\n",
        b"a\xff\n",
        b"a\n\n\nb\n",
        b"\na\n",
        b" \na\n",
        b"a\x00\n",
    ):
        assert records._parse_mono_fast(data, 1, 1 << 20, 1 << 20) is None, data
    out = records.parse_mono(b"a\nb\n \t\nc\n\n\n", 1, 1 << 20, 1 << 20)
    assert (
        out.docs == [b"a b", b"c"] and out.doc_first_line == [1, 4] and out.skips == [("empty_document", 6)]
    )
    fast = records.parse_mono(b"a\nb\n\nc\n\n", 7, 1 << 20, 1 << 20)
    assert fast.docs == [b"a b", b"c"] and [fast.line_of(0), fast.line_of(1)] == [7, 10] and fast.skips == []
