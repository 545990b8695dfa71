"""Zero-shot transfer mixing: a fraction of the micro-batches is the pre-training objective instead of the task.

DeltaLM's zero-shot recipe trains half of the steps on the task and half on span corruption over monolingual
text in the task's languages, with the sentinels dropped from the targets (the model then learns to emit
plain text in those languages, not sentinel-delimited spans). The corruption is
:func:`pretrain.objectives.span_corruption` with ``drop_sentinels=True``.

Which micro-batch is which is exact, not random: micro-batch ``k`` is a pre-training one iff
``floor((k+1)·r) > floor(k·r)`` for ratio ``r``, so any window of ``n`` micro-batches holds ``n·r ± 1`` of
them (``r = 0.5`` alternates). Span-corruption noise is drawn from ``(seed, k, rank)``, so a resumed run
replays the same batches.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deltalm.text_lines import blank_line_groups, split_lines
from deltalm.vocabulary import Vocabulary
from finetune.batching import BucketedBatches, PairSampler
from finetune.readers import DataError, SkipReport
from finetune.tasks import Example
from pretrain.objectives import span_corruption

MIN_CHUNK = 8  # shorter text leftovers are dropped (counted as short_chunk)


def is_pretrain_step(k: int, ratio: float) -> bool:
    """Whether micro-batch ``k`` is a pre-training (span corruption) micro-batch at mix ``ratio``."""
    return math.floor((k + 1) * ratio) > math.floor(k * ratio)


def read_documents(path: str | Path) -> list[str]:
    """Documents of a CC100-layout text file: paragraphs one a line, a blank line between documents (lines and
    blank lines per :mod:`deltalm.text_lines`; undecodable bytes become U+FFFD)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"monolingual file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read ({str(exc).splitlines()[0]})") from None
    lines = split_lines(data.decode("utf-8", errors="replace"))
    return [" ".join(line.strip() for line in group) for group in blank_line_groups(lines)]


def mono_chunks(
    files: Sequence[tuple[str, str]],
    vocab: Vocabulary,
    raw_length: int,
    report: SkipReport,
    max_chunks: int = 0,
) -> list[Example]:
    """Token chunks of ``raw_length`` from (path, lang) files, as examples with an empty target.

    Each document is tokenized and cut into consecutive chunks; leftovers shorter than 8 tokens are dropped
    (``short_chunk``). ``max_chunks`` > 0 caps the chunks per file.
    """
    chunks: list[Example] = []
    empty = np.zeros(0, dtype=np.int32)
    for path, lang in files:
        docs = read_documents(path)
        report.read += len(docs)
        per_file = 0
        for d, ids in enumerate(vocab.encode_batch(docs)):
            for start in range(0, len(ids), raw_length):
                piece = ids[start : start + raw_length]
                if len(piece) < MIN_CHUNK:
                    report.add("short_chunk", f"{path}:doc{d + 1}", f"{len(piece)} tokens")
                    continue
                chunks.append(Example(piece, empty, "", lang, lang, f"{path}:doc{d + 1}"))
                per_file += 1
                if max_chunks and per_file >= max_chunks:
                    break
            if max_chunks and per_file >= max_chunks:
                break
    return chunks


def corrupt(
    chunk: Example,
    rng: np.random.Generator,
    vocab: Vocabulary,
    noise_density: float,
    mean_span: float,
    tag_id: int | None = None,
) -> Example:
    """Span-corrupt one chunk with the sentinels dropped from the target (``[tag] input </s>`` → ``noise </s>``)."""
    inputs, targets = span_corruption(
        chunk.source.astype(np.int64),
        rng,
        noise_density=noise_density,
        mean_span=mean_span,
        first_sentinel=vocab.first_sentinel,
        eos=vocab.eos,
        drop_sentinels=True,
        num_sentinels=vocab.num_sentinels,
    )
    if tag_id is not None:
        inputs = np.concatenate([[tag_id], inputs])
    return Example(
        inputs.astype(np.int32), targets.astype(np.int32), "", chunk.src_lang, chunk.tgt_lang, chunk.origin
    )


class ZeroShotMixer:
    """Interleaves task micro-batches (a :class:`PairSampler`) with span-corruption micro-batches."""

    def __init__(
        self,
        task: PairSampler,
        mono: BucketedBatches,
        vocab: Vocabulary,
        ratio: float = 0.5,
        seed: int = 0,
        noise_density: float = 0.15,
        mean_span: float = 3.0,
        tag_ids: dict[str, int] | None = None,
    ) -> None:
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"zero-shot ratio must be in (0, 1), got {ratio}")
        self.task = task
        self.mono = mono
        self.vocab = vocab
        self.ratio = ratio
        self.seed = seed
        self.noise_density = noise_density
        self.mean_span = mean_span
        self.tag_ids = tag_ids or {}
        self.k = 0

    def next_batch(self) -> tuple[str, list[Example]]:
        """(``"pretrain"`` or the task's pair name, examples) of the next micro-batch."""
        k = self.k
        self.k += 1
        if not is_pretrain_step(k, self.ratio):
            return self.task.next_batch()
        rng = np.random.default_rng([self.seed, k, self.mono.dp_rank, 11])
        chunks = self.mono.next_batch()
        examples = [
            corrupt(c, rng, self.vocab, self.noise_density, self.mean_span, self.tag_ids.get(c.tgt_lang))
            for c in chunks
        ]
        return "pretrain", examples

    def state_dict(self) -> dict:
        return {"k": self.k, "task": self.task.state_dict(), "mono": self.mono.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.k = int(state["k"])
        self.task.load_state_dict(state["task"])
        self.mono.load_state_dict(state["mono"])
