"""Generation: batched beam search (greedy = beam 1) over the model's incremental decoding protocol."""

from deltalm.generation.beam_search import Hypothesis, beam_search, greedy_search

__all__ = ["Hypothesis", "beam_search", "greedy_search"]
