"""Validation over tokenized examples: the loss of a rank's share, and its hypotheses gathered in order.

Hypotheses come from :func:`deltalm.generation.translation.translate` with the task's settings
(:meth:`finetune.config.TaskConfig.generation_options`); data-parallel ranks each take a share of the batches
(:func:`finetune.batching.eval_batches`) and :func:`gather_texts` reassembles the order. Detokenization drops specials, sentinels and tags; ``<unk>`` shows
as SentencePiece shows it, `` ⁇ ``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from deltalm.generation.translation import translate
from deltalm.model.model import DeltaLM
from deltalm.vocabulary import Vocabulary
from finetune.batching import collate, eval_batches
from finetune.config import TaskConfig
from finetune.tasks import Example


def generate(
    model: DeltaLM,
    examples: Sequence[Example],
    vocab: Vocabulary,
    task: TaskConfig,
    batch_size: int | None = None,
    dp_rank: int = 0,
    dp_world_size: int = 1,
    progress: Callable[[int], None] | None = None,
) -> dict[int, str]:
    """Detokenized best hypotheses of this rank's share of ``examples``, keyed by example index.

    ``progress``, when given, is called after every batch with the number of sentences done so far."""
    batches = eval_batches(examples, batch_size or task.eval_batch_size, dp_rank, dp_world_size)
    return translate(
        model, vocab, [e.source for e in examples], batches, task.generation_options(), progress=progress
    )


@torch.no_grad()
def validation_loss(
    model: DeltaLM,
    examples: Sequence[Example],
    batch_size: int,
    label_smoothing: float,
    dp_rank: int = 0,
    dp_world_size: int = 1,
) -> tuple[float, float, int]:
    """(loss sum, nll sum, target tokens) of this rank's share of ``examples`` (dropout off)."""
    device = next(model.parameters()).device
    loss = nll = 0.0
    tokens = 0
    was_training = model.training
    model.eval()
    try:
        for indices in eval_batches(examples, batch_size, dp_rank, dp_world_size):
            batch = {k: v.to(device) for k, v in collate([examples[i] for i in indices]).items()}
            result = model.loss(batch, label_smoothing=label_smoothing)
            loss += float(result.loss_sum)
            nll += float(result.nll_sum)
            tokens += int(result.num_tokens)
    finally:
        model.train(was_training)
    return loss, nll, tokens


def gather_texts(local: dict[int, str], count: int) -> list[str]:
    """All ranks' hypotheses in example order (every rank gets the full list)."""
    parts = [local]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)
    merged: dict[int, str] = {}
    for part in parts:
        merged.update(part)
    missing = [i for i in range(count) if i not in merged]
    if missing:
        raise RuntimeError(f"generation lost {len(missing)} examples (first index {missing[0]})")
    return [merged[i] for i in range(count)]
