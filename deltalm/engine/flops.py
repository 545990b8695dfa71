"""Model FLOPs per training sample and the device peak table, for MFU.

Counts matmul FLOPs (2 per multiply-add) of the interleaved encoder-decoder at the padded shapes the hardware
runs; training = 3 x forward (backward = 2 x forward). Activation recomputation is not counted (MFU, not HFU).
The paper's base shapes (512 source / 114 target tokens) give ~500 GFLOP per sample.
"""

from __future__ import annotations

from deltalm.model.config import DeltaLMConfig

# Dense peak TFLOP/s per device at the training precision (vendor data sheets, SXM parts, no sparsity).
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
    "A10": {"bf16": 125.0, "fp16": 125.0, "fp32": 31.2},
    "L4": {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3},
    "V100": {"bf16": 0.0, "fp16": 125.0, "fp32": 15.7},
    "MI300X": {"bf16": 1307.0, "fp16": 1307.0, "fp32": 163.4},
}


def forward_flops(config: DeltaLMConfig, source_len: int, target_len: int) -> float:
    """Forward matmul FLOPs of one sample with ``source_len`` encoder and ``target_len`` decoder tokens."""
    d, f, s, t = config.d_model, config.ffn, source_len, target_len
    encoder_layer = 8 * d * d * s + 4 * d * f * s + 4 * s * s * d
    decoder_block = (
        8 * d * d * t
        + 4 * t * t * d  # self-attention: projections, scores + values
        + 8 * d * f * t  # FFN-1 and FFN-2
        + 4 * d * d * t
        + 4 * d * d * s
        + 4 * t * s * d  # cross-attention: q/out, k/v over the source, scores
    )
    output = 2 * d * config.padded_vocab_size * t
    return float(config.encoder_layers * encoder_layer + config.decoder_blocks * decoder_block + output)


def training_flops_per_sample(config: DeltaLMConfig, source_len: int, target_len: int) -> float:
    return 3.0 * forward_flops(config, source_len, target_len)


def device_peak_tflops(device_name: str, precision: str) -> float:
    """Peak of a device named like ``torch.cuda.get_device_name()``; 0.0 when unknown (MFU then not reported)."""
    upper = device_name.upper()
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in upper:
            return PEAK_TFLOPS[key].get(precision, 0.0)
    return 0.0


def mfu(flops_per_step: float, step_seconds: float, peak_tflops: float, world_size: int) -> float | None:
    """Model FLOPs utilization of one optimizer step across ``world_size`` devices (None without a peak)."""
    if peak_tflops <= 0 or step_seconds <= 0:
        return None
    return flops_per_step / step_seconds / (peak_tflops * 1e12 * world_size)
