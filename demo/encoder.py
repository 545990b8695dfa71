"""``python -m demo.encoder``: the demo's stand-in for InfoXLM — a small ``XLMRobertaForMaskedLM`` trained
briefly with masked-LM (15 % of tokens: 80 % ``<mask>``, 10 % random, 10 % kept) on monolingual text, saved as an
HF directory that :func:`deltalm.from_xlmr` reads.

Its width, heads, FFN and layers are a DeltaLM model preset's (``--model``: the DeltaLM built from it gets as many
encoder layers and the preset's interleaved decoder blocks), its position table holds 128 tokens
(:data:`MAX_POSITIONS`), and its vocabulary is the contract's for the given SentencePiece model (HF XLM-R ids:
specials, pieces, ``<mask>``). Deterministic for a seed (one torch thread).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from deltalm.engine.metrics_log import format_duration
from deltalm.model.config import MODEL_PRESETS, DeltaLMConfig
from deltalm.vocabulary import BOS_ID, EOS_ID, NUM_SPECIALS, PAD_ID, Vocabulary

PROGRESS_EVERY_S = 30.0  # a progress line at least this often (and every tenth of the run)
MAX_POSITIONS = 130  # 128 tokens + the pad offset of 2: the demo's position table, whatever the preset


def read_documents(paths: list[str], limit_lines: int = 20000) -> list[str]:
    lines: list[str] = []
    for path in paths:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            for _, line in zip(range(limit_lines), handle, strict=False):
                if line.strip():
                    lines.append(line.strip())
    return lines


def pack(vocab: Vocabulary, lines: list[str], length: int) -> torch.Tensor:
    """Token stream ``<s> tokens </s>`` per line, cut into rows of ``length``."""
    stream: list[int] = []
    for ids in vocab.encode_batch(lines):
        stream += [BOS_ID, *ids.tolist(), EOS_ID]
    rows = len(stream) // length
    return torch.tensor(stream[: rows * length], dtype=torch.long).view(rows, length)


def mask_tokens(
    batch: torch.Tensor, vocab: Vocabulary, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    labels = batch.clone()
    chosen = (torch.rand(batch.shape, generator=g) < 0.15) & (batch >= NUM_SPECIALS)
    labels[~chosen] = -100
    inputs = batch.clone()
    roll = torch.rand(batch.shape, generator=g)
    inputs[chosen & (roll < 0.8)] = vocab.mask
    random_ids = torch.randint(NUM_SPECIALS, vocab.spm_size + 1, batch.shape, generator=g)
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = random_ids[swap]
    return inputs, labels


def hf_shape(config: DeltaLMConfig) -> dict[str, int]:
    """The ``XLMRobertaConfig`` width, heads, FFN and layer fields of a DeltaLM config's encoder."""
    return {
        "hidden_size": config.d_model,
        "num_attention_heads": config.heads,
        "intermediate_size": config.ffn,
        "num_hidden_layers": config.encoder_layers,
    }


def train_encoder(
    spm: str,
    inputs: list[str],
    out: Path,
    steps: int,
    seed: int = 0,
    batch_size: int = 16,
    model: str = "tiny",
) -> dict:
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    vocab = Vocabulary.from_spm(spm)
    config = XLMRobertaConfig(
        vocab_size=vocab.mask + 1,
        max_position_embeddings=MAX_POSITIONS,
        type_vocab_size=1,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-5,  # XLM-R's and DeltaLM's (transformers' default is 1e-12)
        **hf_shape(DeltaLMConfig.preset(model)),
    )
    model = XLMRobertaForMaskedLM(config)
    data = pack(vocab, read_documents(inputs), MAX_POSITIONS - 2)
    if len(data) < batch_size:
        raise ValueError(f"only {len(data)} rows of text; need at least {batch_size}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    losses = []
    started = last_print = time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        rows = torch.randint(0, len(data), (batch_size,), generator=g)
        batch_inputs, labels = mask_tokens(data[rows], vocab, g)
        lr = 1e-3 * min(1.0, step / max(1, steps // 10))
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = model(input_ids=batch_inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(round(float(loss), 4))
        now = time.perf_counter()
        if step % max(1, steps // 10) == 0 or step == steps or now - last_print >= PROGRESS_EVERY_S:
            last_print = now
            eta = (now - started) / step * (steps - step)
            print(
                f"[encoder] step {step}/{steps} | mlm loss {loss.item():.3f} | eta {format_duration(eta)}",
                flush=True,
            )
    model.save_pretrained(str(out), safe_serialization=True)
    summary = {
        "steps": steps,
        "rows": len(data),
        "first_loss": losses[0] if losses else None,
        "last_loss": float(np.mean(losses[-10:])) if losses else None,
        "train_seconds": round(time.perf_counter() - started, 1),
        "losses": losses,
    }
    (out / "mlm_training.json").write_text(json.dumps(summary) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.encoder", description=__doc__.splitlines()[0])
    parser.add_argument("--spm", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model",
        choices=list(MODEL_PRESETS),
        default="tiny",
        help="the DeltaLM model preset whose encoder shape to train",
    )
    parser.add_argument("inputs", nargs="+")
    args = parser.parse_args(argv)
    try:
        summary = train_encoder(
            args.spm, args.inputs, Path(args.out), args.steps, args.seed, model=args.model
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[encoder] saved {args.out} (mlm loss {summary['first_loss']} -> {summary['last_loss']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
