"""Generation and validation loss over tokenized examples (used by validation in training and by evaluate).

Hypotheses come from :func:`deltalm.generation.beam_search.beam_search` (fairseq semantics) with the task's
beam, length rule ``a·x + b`` (clamped to the position table), minimum length, length penalty and n-gram
blocking; the best hypothesis is detokenized with the vocabulary (specials, sentinels and tags dropped; ``<unk>``
shows as SentencePiece shows it, `` ⁇ ``).
Data-parallel ranks each take a share of the batches; :func:`gather_texts` reassembles the order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from deltalm.generation.beam_search import beam_search
from deltalm.model import DeltaLM
from deltalm.vocabulary import PAD_ID, Vocabulary
from finetune.batching import collate, eval_batches
from finetune.config import TaskConfig
from finetune.tasks import Example


def _source_tensor(examples: Sequence[Example]) -> torch.Tensor:
    longest = max(len(e.source) for e in examples)
    out = torch.full((len(examples), longest), PAD_ID, dtype=torch.long)
    for i, e in enumerate(examples):
        out[i, : len(e.source)] = torch.from_numpy(e.source.astype("int64"))
    return out


@torch.no_grad()
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
    device = next(model.parameters()).device
    a, b = task.length_rule
    limit = model.config.max_source_length - 1
    out: dict[int, str] = {}
    was_training = model.training
    model.eval()
    try:
        for indices in eval_batches(examples, batch_size or task.eval_batch_size, dp_rank, dp_world_size):
            batch = [examples[i] for i in indices]
            src = _source_tensor(batch).to(device)
            longest = int(src.ne(PAD_ID).sum(dim=1).max())
            max_len_b = min(b, limit - int(a * longest))
            hyps = beam_search(
                model,
                src,
                beam_size=task.beam_size,
                max_len_a=a,
                max_len_b=max(max_len_b, 1),
                min_len=task.min_len,
                length_penalty=task.length_penalty,
                no_repeat_ngram_size=task.no_repeat_ngram_size,
            )
            for i, sentence in zip(indices, hyps, strict=True):
                out[i] = vocab.decode(sentence[0].tokens) if sentence else ""
            if progress is not None:
                progress(len(out))
    finally:
        model.train(was_training)
    return out


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
