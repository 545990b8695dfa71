"""Translate: token-id sources → detokenized best hypotheses. The one loop of the CLI, validation and evaluation.

Each batch is padded, its length limit ``a·x + b`` is clamped to the decoder's position table, beam search runs
(:func:`deltalm.generation.search.beam_search`, fairseq semantics) and the best hypothesis is detokenized
with the vocabulary (specials, sentinels and language tags dropped). The caller chooses the batches (the CLI
sorts by length; data-parallel validation gives each rank its share), so the order of the result is by
index. The settings and their defaults: :class:`deltalm.generation.options.GenerationOptions`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from deltalm.generation.options import GenerationError, GenerationOptions
from deltalm.vocabulary import EOS_ID, PAD_ID, Vocabulary

__all__ = [
    "GenerationError",
    "GenerationOptions",
    "length_batches",
    "source_ids",
    "translate",
    "translate_lines",
]


def check_target_language(vocab: Vocabulary, tgt_lang: str | None) -> None:
    """Refuse (:class:`GenerationError`) a tagged model without ``tgt_lang``, or a ``tgt_lang`` it has no tag for."""
    if vocab.lang_tags and not tgt_lang:
        raise GenerationError(
            f"the model has language tags ({', '.join(vocab.lang_tags)}); give --tgt-lang with one of them"
        )
    if tgt_lang and vocab.lang_tags and tgt_lang not in vocab.lang_tags:
        raise GenerationError(
            f"--tgt-lang {tgt_lang}: the model has no tag for it (tags: {', '.join(vocab.lang_tags)})"
        )


def source_ids(
    lines: Sequence[str], vocab: Vocabulary, tgt_lang: str | None, max_len: int
) -> list[np.ndarray]:
    """``[tag] tokens </s>`` per line (truncated to ``max_len``); an empty line gives an empty array.

    The target-language tag is prepended when the vocabulary has one for ``tgt_lang`` (a multilingual
    fine-tuned model); a tagged vocabulary without ``tgt_lang``, or with no tag for it, is a
    :class:`GenerationError`.
    """
    check_target_language(vocab, tgt_lang)
    prefix: list[int] = []
    if tgt_lang and tgt_lang in vocab.lang_tags:
        prefix = [vocab.lang_tag_id(tgt_lang)]
    body_limit = max_len - len(prefix) - 1
    out = []
    for ids in vocab.encode_batch(list(lines)):
        if len(ids) == 0:
            out.append(np.zeros(0, dtype=np.int64))
            continue
        out.append(np.asarray([*prefix, *ids[:body_limit].tolist(), EOS_ID], dtype=np.int64))
    return out


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of non-empty items sorted by length (longest first, ties in input order), cut into batches."""
    order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: (-lengths[i], i))
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


@torch.no_grad()
def translate(
    model,
    vocab: Vocabulary,
    sources: Sequence[np.ndarray],
    batches: Iterable[Sequence[int]],
    options: GenerationOptions,
    progress: Callable[[int], None] | None = None,
) -> dict[int, str]:
    """Best hypothesis of ``sources[i]`` for every index ``i`` in ``batches``, keyed by index.

    ``sources``: 1-D id arrays ``[tag] X </s>``. ``batches``: lists of indices into ``sources`` (non-empty
    sources only). ``progress(sentences_done)`` is called after each batch. Dropout is off during the call and
    the model's training mode is restored afterwards.
    """
    from deltalm.generation.search import beam_search

    options.validate()
    limit = model.config.max_source_length - 1  # tokens before EOS the decoder's position table holds
    device = next(model.parameters()).device
    out: dict[int, str] = {}
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            longest = max(len(sources[i]) for i in batch)
            tokens = torch.full((len(batch), longest), PAD_ID, dtype=torch.long)
            for row, index in enumerate(batch):
                tokens[row, : len(sources[index])] = torch.from_numpy(
                    np.asarray(sources[index], dtype=np.int64)
                )
            max_len_b = max(1, min(options.max_len_b, limit - int(options.max_len_a * longest)))
            hyps = beam_search(
                model,
                tokens.to(device),
                beam_size=options.beam_size,
                max_len_a=options.max_len_a,
                max_len_b=max_len_b,
                min_len=options.min_len,
                length_penalty=options.length_penalty,
                no_repeat_ngram_size=options.no_repeat_ngram_size,
            )
            for index, sentence in zip(batch, hyps, strict=True):
                out[index] = vocab.decode(sentence[0].tokens) if sentence else ""
            if progress is not None:
                progress(len(out))
    finally:
        model.train(was_training)
    return out


def translate_lines(
    model,
    vocab: Vocabulary,
    lines: Sequence[str],
    options: GenerationOptions,
    *,
    tgt_lang: str | None,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Best hypothesis per text line, in input order (batched by length); empty lines give empty lines."""
    if batch_size < 1:
        raise GenerationError(f"batch size must be >= 1, got {batch_size}")
    sources = source_ids(lines, vocab, tgt_lang, model.config.max_source_length)
    total = sum(1 for s in sources if len(s))
    found = translate(
        model,
        vocab,
        sources,
        length_batches([len(s) for s in sources], batch_size),
        options,
        progress=None if progress is None else (lambda done: progress(done, total)),
    )
    return [found.get(i, "") for i in range(len(lines))]
