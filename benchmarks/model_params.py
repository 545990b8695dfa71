"""Parameter counts of the DeltaLM presets next to the paper's figures (+ a small-preset CPU training-step timing).

Usage: ``.venv/bin/python -m benchmarks.model_params [--step-timing]``. Models are built on the meta device
(no memory, no init), so the counts take well under a second.
"""

from __future__ import annotations

import argparse
import time

import torch

from deltalm.model.config import DeltaLMConfig
from deltalm.model.model import DeltaLM

PAPER = {"base": 360e6, "large": 830e6}


def count(preset: str) -> dict[str, int]:
    with torch.device("meta"):
        model = DeltaLM(DeltaLMConfig.preset(preset))
    parts = {
        "embedding": sum(p.numel() for p in model.embedding.parameters()),
        "encoder": sum(p.numel() for p in model.encoder.parameters()),
        "decoder": sum(p.numel() for p in model.decoder.parameters()),
    }
    parts["total"] = model.num_parameters()
    return parts


def step_timing(steps: int = 5, batch: int = 8, length: int = 64) -> str:
    """Forward+backward of the small preset on CPU: tokens/s (source + target tokens)."""
    torch.manual_seed(0)
    config = DeltaLMConfig.preset("small")
    model = DeltaLM(config).train()
    src = torch.randint(4, config.vocab_size, (batch, length))
    tgt = torch.randint(4, config.vocab_size, (batch, length))
    b = {
        "encoder_input_tokens": src,
        "encoder_padding_mask": torch.ones_like(src, dtype=torch.bool),
        "decoder_input_tokens": tgt,
        "decoder_target_tokens": tgt,
        "decoder_loss_weights": torch.ones_like(tgt),
    }
    model.loss(b, 0.1).loss_sum.backward()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        model.loss(b, 0.1).loss_sum.backward()
    dt = (time.perf_counter() - start) / steps
    return f"small preset fwd+bwd, batch {batch}x{length}+{length}: {dt * 1000:.1f} ms/step, {2 * batch * length / dt:,.0f} tokens/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--step-timing", action="store_true", help="also time a small-preset training step on CPU"
    )
    args = parser.parse_args()
    print(f"torch {torch.__version__}")
    print("| preset | embedding | encoder | decoder | total | paper | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for preset, paper in PAPER.items():
        c = count(preset)
        print(
            f"| {preset} | {c['embedding'] / 1e6:.1f}M | {c['encoder'] / 1e6:.1f}M | {c['decoder'] / 1e6:.1f}M "
            f"| {c['total'] / 1e6:.1f}M ({c['total']:,}) | {paper / 1e6:.0f}M | {c['total'] / paper:.3f} |"
        )
    if args.step_timing:
        print(step_timing())


if __name__ == "__main__":
    main()
