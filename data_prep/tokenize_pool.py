"""Tokenization of blocks in worker processes, results returned in input order with bounded prefetch.

Each worker loads the SentencePiece model once and encodes whole blocks through the batch API
(``Encode(list, num_threads=1)``); ids become contract ids with numpy (``Vocabulary.pieces_to_ids``) and a
block comes back as flat int32 values + per-row lengths, never as Python lists of ids: through a shared-memory
slot (:mod:`data_prep.result_slots`), not through the pool's pipe.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from deltalm.text_lines import strip_bom_bytes
from deltalm.vocabulary import Vocabulary

from .readers import Block
from .records import ParallelRecords, parse_aligned, parse_jsonl, parse_mono, parse_tsv
from .result_slots import Layout, ResultSlots

Skip = tuple[str, int]


@dataclass(frozen=True)
class TaskSpec:
    """What a worker needs to turn a block into rows (picklable)."""

    spm_path: str
    fmt: str  # mono | tsv | jsonl | aligned
    max_line_bytes: int
    max_doc_bytes: int = 64 << 20
    src_lang: str = ""
    tgt_lang: str = ""


@dataclass
class BlockResult:
    """Tokenized rows of one block: per column (flat int32 values, int64 lengths)."""

    columns: dict[str, tuple[np.ndarray, np.ndarray]] | None  # None: stored in a result slot (see layout)
    skips: list[Skip] = field(default_factory=list)
    nbytes: int = 0
    layout: Layout | None = None

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()))[1])

    def drop_rows(self, k: int) -> BlockResult:
        """The same block without its first ``k`` rows (rows already in shards when resuming)."""
        columns = {}
        for name, (values, lengths) in self.columns.items():
            columns[name] = (values[int(lengths[:k].sum()) :], lengths[k:])
        return BlockResult(columns, self.skips, self.nbytes)


_VOCAB: Vocabulary | None = None
_VOCAB_PATH: str | None = None


def _vocab(path: str) -> Vocabulary:
    global _VOCAB, _VOCAB_PATH
    if _VOCAB is None or path != _VOCAB_PATH:
        _VOCAB, _VOCAB_PATH = Vocabulary.from_spm(path), path
    return _VOCAB


def encode_flat(vocab: Vocabulary, texts: list, long_texts: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Batch-encode ``texts`` (str or UTF-8 bytes): (flat contract ids int32, lengths int64).

    ``long_texts`` (documents): SentencePiece returns one int32 numpy array per text (a memcpy, no Python ints),
    faster than ``out_type=int`` once texts hold more than a few dozen tokens. Short texts (sentences): Python
    lists flattened by ``np.fromiter``.
    """
    if not texts:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
    if long_texts:
        arrays = vocab.processor.Encode(texts, out_type="numpy", num_threads=1)
        lengths = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
        return vocab.pieces_to_ids(np.concatenate(arrays)), lengths
    pieces = vocab.processor.Encode(texts, out_type=int, num_threads=1)
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    flat = np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int64, count=int(lengths.sum()))
    return vocab.pieces_to_ids(flat), lengths


def tokenize_block(spec: TaskSpec, block: Block) -> BlockResult:
    vocab = _vocab(spec.spm_path)
    if spec.fmt == "mono":
        recs = parse_mono(_text_payload(block), block.line, spec.max_line_bytes, spec.max_doc_bytes)
        values, lengths = encode_flat(vocab, recs.docs, long_texts=True)
        keep = lengths > 0
        skips = list(recs.skips)
        if not keep.all():  # e.g. only characters that normalization removes
            skips += [("empty_document", recs.line_of(int(i))) for i in np.flatnonzero(~keep)]
            lengths = lengths[keep]
        skips.sort(key=lambda s: s[1])
        return BlockResult({"tokens": (values, lengths)}, skips, block.nbytes)
    recs = _parse_parallel(spec, block)
    src_values, src_lens = encode_flat(vocab, recs.src)
    tgt_values, tgt_lens = encode_flat(vocab, recs.tgt)
    keep = (src_lens > 0) & (tgt_lens > 0)
    skips = list(recs.skips)
    if not keep.all():
        skips += [("empty_side", recs.first_line[i]) for i in np.flatnonzero(~keep)]
        src_values, src_lens = src_values[np.repeat(keep, src_lens)], src_lens[keep]
        tgt_values, tgt_lens = tgt_values[np.repeat(keep, tgt_lens)], tgt_lens[keep]
    skips.sort(key=lambda s: s[1])
    return BlockResult({"src": (src_values, src_lens), "tgt": (tgt_values, tgt_lens)}, skips, block.nbytes)


def _text_payload(block: Block) -> bytes:
    """The block's bytes; the file's first block loses a leading byte-order mark."""
    data = block.payload()
    return strip_bom_bytes(data) if block.offset[0] == 0 else data


def _parse_parallel(spec: TaskSpec, block: Block) -> ParallelRecords:
    if spec.fmt == "tsv":
        return parse_tsv(_text_payload(block), block.line, spec.max_line_bytes)
    if spec.fmt == "jsonl":
        return parse_jsonl(
            _text_payload(block), block.line, spec.max_line_bytes, spec.src_lang, spec.tgt_lang
        )
    if spec.fmt == "aligned":
        src, tgt = block.data
        return parse_aligned(src, tgt, block.line)
    raise ValueError(f"unknown input format {spec.fmt!r}")


_SLOTS: ResultSlots | None = None  # the parent's result slots, inherited by the forked workers


def _worker_init(slots: ResultSlots | None) -> None:
    """Die with the parent (Linux): a SIGKILLed parent must not leave workers behind."""
    global _SLOTS
    _SLOTS = slots
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _tokenize_to_slot(spec: TaskSpec, block: Block, slot: int) -> BlockResult:
    """:func:`tokenize_block` in a worker, its columns left in result slot ``slot`` when they fit."""
    result = tokenize_block(spec, block)
    layout = _SLOTS.store(slot, result.columns) if _SLOTS is not None else None
    if layout is not None:
        result.columns, result.layout = None, layout
    return result


class TokenizePool:
    """Order-preserving map of :func:`tokenize_block` over blocks; ``workers=1`` runs in-process.

    At most ``2 * workers`` blocks are in flight, so memory stays bounded whatever the input size; each has
    a result slot of ``slot_bytes`` (4 bytes a token and 8 a row: 4x the block bytes holds any real text).
    """

    def __init__(self, workers: int, slot_bytes: int = 4 << 20):
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        self.limit = 2 * workers
        self._pool = None
        self._slots = None
        if workers > 1:
            self._slots = ResultSlots(self.limit, slot_bytes)  # before the fork: the workers share it
            ctx = multiprocessing.get_context("fork")
            self._pool = ctx.Pool(workers, initializer=_worker_init, initargs=(self._slots,))

    def map(self, spec: TaskSpec, blocks: Iterable[Block]) -> Iterator[tuple[Block, BlockResult]]:
        """(block, result) in input order; a result's arrays are valid until the next item is requested."""
        if self._pool is None:
            for block in blocks:
                yield block, tokenize_block(spec, block)
            return
        pending: deque = deque()
        for block in blocks:
            slot = self._slots.acquire()
            pending.append((block, slot, self._pool.apply_async(_tokenize_to_slot, (spec, block, slot))))
            if len(pending) >= self.limit:
                yield from self._finish(*pending.popleft())
        while pending:
            yield from self._finish(*pending.popleft())

    def _finish(self, block: Block, slot: int, pending) -> Iterator[tuple[Block, BlockResult]]:
        try:
            result = pending.get()
            if result.columns is None:
                result.columns = self._slots.load(slot, result.layout)
            yield block, result
        finally:  # after the consumer is done with the block (or gave up): the slot may be reused
            self._slots.release(slot)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        self._slots = None  # the mapping goes when the last view of it does

    def __enter__(self) -> TokenizePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
