"""Plain single-device layers of DeltaLM: attention, feed-forward, layer norm, embeddings."""

from deltalm.model.modules.attention import MultiheadAttention
from deltalm.model.modules.embedding import Embeddings, make_positions
from deltalm.model.modules.feed_forward import FeedForward
from deltalm.model.modules.layer_norm import LayerNorm, apex_available

__all__ = ["Embeddings", "FeedForward", "LayerNorm", "MultiheadAttention", "apex_available", "make_positions"]
