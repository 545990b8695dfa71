"""DeltaLM core library: vocabulary contract, model config, the model, checkpoint adapters, generation.

Heavy names (torch) are imported lazily so that ``import deltalm.vocabulary`` (data_prep) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DeltaLMConfig": "deltalm.model_config",
    "DeltaLM": "deltalm.model",
    "LossOutput": "deltalm.loss",
    "chunked_cross_entropy": "deltalm.loss",
    "DecodingState": "deltalm.decoding_state",
    "Vocabulary": "deltalm.vocabulary",
    "from_xlmr": "deltalm.adapters.xlmr",
    "export_encoder_as_xlmr": "deltalm.adapters.xlmr",
    "load_official": "deltalm.adapters.official",
    "save_official": "deltalm.adapters.official",
    "save_pretrained": "deltalm.adapters.pretrained",
    "from_pretrained": "deltalm.adapters.pretrained",
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
    from deltalm.adapters.official import load_official, save_official
    from deltalm.adapters.pretrained import from_pretrained, save_pretrained
    from deltalm.adapters.xlmr import export_encoder_as_xlmr, from_xlmr
    from deltalm.decoding_state import DecodingState
    from deltalm.loss import LossOutput, chunked_cross_entropy
    from deltalm.model import DeltaLM
    from deltalm.model_config import DeltaLMConfig
    from deltalm.vocabulary import Vocabulary


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'deltalm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
