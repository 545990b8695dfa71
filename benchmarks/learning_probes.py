"""Held-out measurements for the learning check (``benchmarks/learning_check.py``).

- :func:`mlm_heldout`: masked-LM loss and accuracy of an HF ``XLMRobertaForMaskedLM`` directory on held-out
  text, next to the unigram baseline (token frequencies of the training text) on the very same masked positions;
- :func:`span_corruption_batches` / :func:`translation_span_batches`: fixed held-out pre-training batches
  (T5 span corruption of monolingual text, mT6 translation span corruption of parallel pairs);
- :func:`heldout_loss`: per-token cross-entropy (nats) of a :class:`deltalm.model.DeltaLM` on such batches;

All randomness comes from fixed seeds, so two models are always scored on identical batches.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import torch

from deltalm.vocabulary import EOS_ID, NUM_SPECIALS, Vocabulary
from pretrain.loader import model_batch
from pretrain.objectives import corruption_lengths, span_corruption_batch, translation_pair


def read_documents(path: Path) -> list[list[str]]:
    """CC100 layout: documents (lists of non-empty lines) separated by blank lines."""
    docs: list[list[str]] = [[]]
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                docs[-1].append(line.strip())
            elif docs[-1]:
                docs.append([])
    return [d for d in docs if d]


def write_documents(path: Path, docs: list[list[str]]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n\n".join("\n".join(d) for d in docs) + "\n")


def read_pairs(path: Path, tgt: str) -> list[tuple[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [(r["en"], r[tgt]) for r in rows]


# ---------------------------------------------------------------------- the encoder's masked LM
@torch.no_grad()
def mlm_heldout(
    encoder_dir: Path, vocab: Vocabulary, train_lines: list[str], heldout_lines: list[str], seed: int = 1234
) -> dict:
    """Masked-LM loss (nats/token) and top-1 accuracy on held-out text vs the unigram baseline.

    The held-out rows are masked like training (15 %: 80 % ``<mask>``, 10 % random, 10 % kept) with a fixed
    generator; the unigram model is add-one smoothed token frequencies of ``train_lines`` (specials excluded,
    as they are never masked), scored on the same positions; its accuracy is that of always guessing the
    most frequent token.
    """
    from transformers import XLMRobertaForMaskedLM

    from demo.encoder import MAX_POSITIONS, mask_tokens, pack

    model = XLMRobertaForMaskedLM.from_pretrained(str(encoder_dir)).eval()
    rows = pack(vocab, heldout_lines, MAX_POSITIONS - 2)
    g = torch.Generator().manual_seed(seed)
    inputs, labels = mask_tokens(rows, vocab, g)
    counts = torch.ones(vocab.mask + 1, dtype=torch.float64)
    counts[:NUM_SPECIALS] = 0
    counts[vocab.mask] = 0
    for ids in vocab.encode_batch(train_lines):
        counts += torch.bincount(torch.as_tensor(ids, dtype=torch.long), minlength=len(counts))[: len(counts)]
    log_unigram = (counts / counts.sum()).log()
    nll = correct = n = 0.0
    uni_nll = uni_correct = 0.0
    top = int(counts.argmax())
    for start in range(0, len(rows), 16):
        x, y = inputs[start : start + 16], labels[start : start + 16]
        logits = model(input_ids=x).logits
        keep = y.ne(-100)
        target = y[keep]
        logp = torch.log_softmax(logits[keep].double(), dim=-1)
        nll += float(-logp.gather(1, target[:, None]).sum())
        correct += float((logp.argmax(-1) == target).sum())
        uni_nll += float(-log_unigram[target].sum())
        uni_correct += float((target == top).sum())
        n += int(keep.sum())
    return {
        "heldout_masked_tokens": int(n),
        "mlm_loss": nll / n,
        "mlm_accuracy": correct / n,
        "unigram_loss": uni_nll / n,
        "unigram_accuracy": uni_correct / n,
    }


# ---------------------------------------------------------------------- held-out pre-training batches
def _windows(stream: list[int], raw: int, limit: int) -> np.ndarray:
    rows = min(len(stream) // raw, limit)
    return np.asarray(stream[: rows * raw], dtype=np.int64).reshape(rows, raw)


def _corrupted_batches(
    rows: np.ndarray, rng: np.random.Generator, noise: float, vocab: Vocabulary
) -> list[dict[str, torch.Tensor]]:
    """Span corruption (mean span 3) of ``rows``, 16 rows a model batch."""
    batches = []
    for start in range(0, len(rows), 16):
        inputs, targets = span_corruption_batch(
            rows[start : start + 16], rng, noise, 3.0, first_sentinel=vocab.first_sentinel, eos=EOS_ID
        )
        batches.append(model_batch(inputs, targets, EOS_ID))
    return batches


def span_corruption_batches(
    vocab: Vocabulary, lines_by_lang: dict[str, list[str]], input_length: int, windows: int, seed: int = 7
) -> list[dict[str, torch.Tensor]]:
    """Span corruption (noise 0.15, span 3) of held-out text: ``windows`` rows per language, 16 a batch."""
    raw, _ = corruption_lengths(input_length, 0.15, 3.0)
    rng = np.random.default_rng(seed)
    batches = []
    for lang in sorted(lines_by_lang):
        stream: list[int] = []
        for ids in vocab.encode_batch(lines_by_lang[lang]):
            stream += [*ids.tolist(), EOS_ID]
        batches += _corrupted_batches(_windows(stream, raw, windows), rng, 0.15, vocab)
    return batches


def translation_span_batches(
    vocab: Vocabulary,
    pairs_by_lang: dict[str, list[tuple[str, str]]],
    input_length: int,
    windows: int,
    seed: int = 8,
) -> list[dict[str, torch.Tensor]]:
    """Translation span corruption (noise 0.5, span 3) of ``src </s> tgt </s>`` packed into windows."""
    raw, _ = corruption_lengths(input_length, 0.5, 3.0)
    rng = np.random.default_rng(seed)
    batches = []
    for lang in sorted(pairs_by_lang):
        pairs = pairs_by_lang[lang]
        src_ids = vocab.encode_batch([s for s, _ in pairs])
        tgt_ids = vocab.encode_batch([t for _, t in pairs])
        stream: list[int] = []
        for s, t in zip(src_ids, tgt_ids, strict=True):
            stream += [*translation_pair(s, t, EOS_ID).tolist(), EOS_ID]
        batches += _corrupted_batches(_windows(stream, raw, windows), rng, 0.5, vocab)
    return batches


@torch.no_grad()
def heldout_loss(model, batches: list[dict[str, torch.Tensor]]) -> float:
    """Cross-entropy (nats per target token, no smoothing, dropout off) of ``model`` over ``batches``."""
    was_training = model.training
    model.eval()
    total = tokens = 0.0
    for batch in batches:
        out = model.loss(batch)
        total += float(out.nll_sum)
        tokens += int(out.num_tokens)
    model.train(was_training)
    return total / max(tokens, 1)
