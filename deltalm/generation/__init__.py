"""Generation: batched beam search (greedy = beam 1) over the model's incremental decoding protocol, and
:func:`translate`, the loop from token ids to detokenized text. Names load lazily (torch only when used)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deltalm.lazy_exports import lazy_exports

_EXPORTS = {
    "Hypothesis": "deltalm.generation.search",
    "beam_search": "deltalm.generation.search",
    "greedy_search": "deltalm.generation.search",
    "GenerationError": "deltalm.generation.options",
    "GenerationOptions": "deltalm.generation.options",
    "translate": "deltalm.generation.translation",
    "translate_lines": "deltalm.generation.translation",
}

__all__ = [
    "GenerationError",
    "GenerationOptions",
    "Hypothesis",
    "beam_search",
    "greedy_search",
    "translate",
    "translate_lines",
]

if TYPE_CHECKING:  # pragma: no cover
    from deltalm.generation.options import GenerationError, GenerationOptions
    from deltalm.generation.search import Hypothesis, beam_search, greedy_search
    from deltalm.generation.translation import translate, translate_lines


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
