"""The generation settings and their defaults, in one place (no torch: command lines read them for --help)."""

from __future__ import annotations

from dataclasses import dataclass


class GenerationError(ValueError):
    """A bad generation request (options, unknown target language): one line."""


@dataclass
class GenerationOptions:
    """Beam search settings; the defaults are the translation defaults (fairseq's translation recipe)."""

    beam_size: int = 5
    max_len_a: float = 1.2  # at most int(a * source_tokens + b) tokens before EOS, capped by the positions
    max_len_b: int = 10
    min_len: int = 1
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    def validate(self) -> None:
        if self.beam_size < 1:
            raise GenerationError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.max_len_a < 0 or self.max_len_b < 1:
            raise GenerationError(
                f"max_len_a must be >= 0 and max_len_b >= 1, got {self.max_len_a} and {self.max_len_b}"
            )
        if self.min_len < 0 or self.no_repeat_ngram_size < 0:
            raise GenerationError("min_len and no_repeat_ngram_size must be >= 0")
