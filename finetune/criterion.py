"""The fine-tuning criterion: label-smoothed cross-entropy (fairseq's ``label_smoothed_nll_loss``).

The computation is the model's chunked loss (deltalm/model/loss.py), never the full ``[tokens, 250k]`` logits:
with ε the smoothing and V the real vocabulary (padding rows excluded),
``loss = (1 − ε − ε/(V−1)) · nll + ε/(V−1) · Σ_v −log p_v`` summed over real target tokens; the engine divides
by the global token count. ``task.label_smoothing`` (default 0.1) is the one knob.
"""

from __future__ import annotations

from collections.abc import Callable

from deltalm.model.loss import LossOutput
from deltalm.model.model import DeltaLM


def make_criterion(label_smoothing: float) -> Callable[[DeltaLM, dict], LossOutput]:
    """The trainer's ``loss_fn(model, batch)`` for this smoothing."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")

    def criterion(model: DeltaLM, batch: dict) -> LossOutput:
        return model.loss(batch, label_smoothing=label_smoothing)

    return criterion
