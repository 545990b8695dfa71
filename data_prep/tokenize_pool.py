"""Tokenization of blocks in worker processes, results returned in input order with bounded prefetch.

Each worker loads the SentencePiece model once and encodes whole blocks through the batch API
(``Encode(list, num_threads=1)``); ids become contract ids with numpy (``Vocabulary.pieces_to_ids``) and a
block comes back as flat int32 values + per-row lengths, never as Python lists of ids.
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

from deltalm.vocabulary import Vocabulary

from .readers import Block
from .records import ParallelRecords, parse_aligned, parse_jsonl, parse_mono, parse_tsv

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

    columns: dict[str, tuple[np.ndarray, np.ndarray]]
    skips: list[Skip] = field(default_factory=list)
    nbytes: int = 0

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
        recs = parse_mono(block.payload(), block.line, spec.max_line_bytes, spec.max_doc_bytes)
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


def _parse_parallel(spec: TaskSpec, block: Block) -> ParallelRecords:
    if spec.fmt == "tsv":
        return parse_tsv(block.payload(), block.line, spec.max_line_bytes)
    if spec.fmt == "jsonl":
        return parse_jsonl(block.payload(), block.line, spec.max_line_bytes, spec.src_lang, spec.tgt_lang)
    if spec.fmt == "aligned":
        src, tgt = block.data
        return parse_aligned(src, tgt, block.line)
    raise ValueError(f"unknown input format {spec.fmt!r}")


def _worker_init() -> None:
    """Die with the parent (Linux): a SIGKILLed parent must not leave workers behind."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class TokenizePool:
    """Order-preserving map of :func:`tokenize_block` over blocks; ``workers=1`` runs in-process.

    At most ``2 * workers`` blocks are in flight, so memory stays bounded whatever the input size.
    """

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool = None
        if workers > 1:
            ctx = multiprocessing.get_context("fork")
            self._pool = ctx.Pool(workers, initializer=_worker_init)

    def map(self, spec: TaskSpec, blocks: Iterable[Block]) -> Iterator[tuple[Block, BlockResult]]:
        if self._pool is None:
            for block in blocks:
                yield block, tokenize_block(spec, block)
            return
        pending: deque = deque()
        limit = 2 * self.workers
        for block in blocks:
            pending.append((block, self._pool.apply_async(tokenize_block, (spec, block))))
            if len(pending) >= limit:
                done, result = pending.popleft()
                yield done, result.get()
        while pending:
            done, result = pending.popleft()
            yield done, result.get()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> TokenizePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
