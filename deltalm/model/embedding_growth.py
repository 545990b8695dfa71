"""Growing a pre-trained model's vocabulary for the fine-tuning language tags.

Language tags (``__de__`` …) exist only in fine-tuning (docs/design.md#vocabulary), after the sentinels, so a pre-trained
model's embedding (tied to the output projection) needs new rows. Each new row is initialized to the mean of
the existing real-token rows (every row but ``<pad>``): a neutral starting point with the typical norm of a
token, so a tag neither dominates nor vanishes at the first steps. Rows beyond the logical vocabulary
(padding to a multiple) are zero and never scored.
"""

from __future__ import annotations

import torch

from deltalm.model.model import DeltaLM


def grow_vocabulary(model: DeltaLM, vocab_size: int) -> DeltaLM:
    """``model`` with a ``vocab_size``-row logical vocabulary; new rows = mean of the old real rows.

    Returns ``model`` itself when the size already matches; refuses to shrink.
    """
    old = model.config.vocab_size
    if vocab_size == old:
        return model
    if vocab_size < old:
        raise ValueError(f"cannot shrink the vocabulary from {old} to {vocab_size} rows")
    new_config = model.config.replace(vocab_size=vocab_size)
    state = model.state_dict()
    weight_key = next(name for name, p in model.named_parameters() if p is model.output_weight)
    old_weight = state[weight_key]
    keep = torch.ones(old, dtype=torch.bool)
    keep[model.config.pad_id] = False
    mean_row = old_weight[:old][keep].double().mean(dim=0).to(old_weight.dtype)
    new_weight = torch.zeros(new_config.padded_vocab_size, old_weight.size(1), dtype=old_weight.dtype)
    new_weight[:old] = old_weight[:old]
    new_weight[old:vocab_size] = mean_row
    grown = DeltaLM(new_config).to(old_weight.device)
    state = {k: (new_weight if k == weight_key else v) for k, v in state.items()}
    grown.load_state_dict(state, strict=True)
    grown.train(model.training)
    return grown
