"""Growing a pre-trained model's vocabulary for the fine-tuning language tags.

Language tags (``__de__`` …) exist only in fine-tuning, after the sentinels, so a pre-trained
model's embedding (tied to the output projection) needs new rows. Each new row is initialized to the mean of
the existing real-token rows (every row but ``<pad>``): a neutral starting point with the typical norm of a
token, so a tag neither dominates nor vanishes at the first steps. A model saved with tags keeps each tag's
row by name (:func:`tag_row_sources`): the trained ``__de__`` row stays the ``__de__`` row whatever order the
task lists its languages in. Rows beyond the logical vocabulary
(padding to a multiple) are zero and never scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deltalm.model import DeltaLM


def grow_vocabulary(model: DeltaLM, vocab_size: int, sources: Sequence[int | None] | None = None) -> DeltaLM:
    """``model`` with a ``vocab_size``-row logical vocabulary.

    ``sources[i]`` is the old row that new row ``i`` copies, or None for a new row (the mean of the old real
    rows); the default keeps rows ``0..old-1`` in place and appends new ones. Returns ``model`` itself when
    nothing changes; refuses to shrink without ``sources``.
    """
    old = model.config.vocab_size
    if sources is None:
        if vocab_size < old:
            raise ValueError(f"cannot shrink the vocabulary from {old} to {vocab_size} rows")
        sources = [*range(old), *[None] * (vocab_size - old)]
    if len(sources) != vocab_size or any(s is not None and not 0 <= s < old for s in sources):
        raise ValueError(f"row sources must give {vocab_size} rows taken from 0..{old - 1}")
    if vocab_size == old and list(sources) == list(range(old)):
        return model
    new_config = model.config.replace(vocab_size=vocab_size)
    state = model.state_dict()
    weight_key = next(name for name, p in model.named_parameters() if p is model.output_weight)
    old_weight = state[weight_key]
    keep = torch.ones(old, dtype=torch.bool)
    keep[model.config.pad_id] = False
    mean_row = old_weight[:old][keep].double().mean(dim=0).to(old_weight.dtype)
    new_weight = torch.zeros(new_config.padded_vocab_size, old_weight.size(1), dtype=old_weight.dtype)
    for row, source in enumerate(sources):
        new_weight[row] = mean_row if source is None else old_weight[source]
    grown = DeltaLM(new_config).to(old_weight.device)
    state = {k: (new_weight if k == weight_key else v) for k, v in state.items()}
    grown.load_state_dict(state, strict=True)
    grown.train(model.training)
    return grown


def tag_row_sources(first_tag: int, saved_tags: Sequence[str], tags: Sequence[str]) -> list[int | None]:
    """Row sources (:func:`grow_vocabulary`) mapping language-tag rows by tag name.

    Rows below ``first_tag`` (specials, SentencePiece pieces, sentinels) stay in place; the row of tag ``t``
    comes from the saved row of ``t`` when the model had it, else it is new.
    """
    saved = {tag: first_tag + i for i, tag in enumerate(saved_tags)}
    return [*range(first_tag), *(saved.get(tag) for tag in tags)]
