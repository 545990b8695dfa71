"""DeltaLM core library: vocabulary contract, model config, the model, checkpoint adapters, generation.

Heavy names (torch) are imported lazily so that ``import deltalm.vocabulary`` (data_prep) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deltalm.lazy_exports import lazy_exports

_EXPORTS = {
    "DeltaLMConfig": "deltalm.model.config",
    "DeltaLM": "deltalm.model.model",
    "LossOutput": "deltalm.model.loss",
    "chunked_cross_entropy": "deltalm.model.loss",
    "DecodingState": "deltalm.model.decoding_state",
    "Vocabulary": "deltalm.vocabulary",
    "from_xlmr": "deltalm.checkpoints.xlmr",
    "export_encoder_as_xlmr": "deltalm.checkpoints.xlmr",
    "load_official": "deltalm.checkpoints.official",
    "save_official": "deltalm.checkpoints.official",
    "save_pretrained": "deltalm.checkpoints.pretrained",
    "from_pretrained": "deltalm.checkpoints.pretrained",
}

__all__ = [
    "DecodingState",
    "DeltaLM",
    "DeltaLMConfig",
    "LossOutput",
    "Vocabulary",
    "chunked_cross_entropy",
    "export_encoder_as_xlmr",
    "from_pretrained",
    "from_xlmr",
    "load_official",
    "save_official",
    "save_pretrained",
]

if TYPE_CHECKING:  # pragma: no cover
    from deltalm.checkpoints.official import load_official, save_official
    from deltalm.checkpoints.pretrained import from_pretrained, save_pretrained
    from deltalm.checkpoints.xlmr import export_encoder_as_xlmr, from_xlmr
    from deltalm.model.config import DeltaLMConfig
    from deltalm.model.decoding_state import DecodingState
    from deltalm.model.loss import LossOutput, chunked_cross_entropy
    from deltalm.model.model import DeltaLM
    from deltalm.vocabulary import Vocabulary


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())
