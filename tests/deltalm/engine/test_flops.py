"""The FLOP count behind MFU: the paper's figure, torch's own op count, 6·N·D from the module tree, the HF peer."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.hf_peer import MT5Peer, matched_mt5_config, mt5_flops_of
from benchmarks.mfu import FixedShapeBatches
from deltalm.engine.flops import device_peak_tflops, forward_flops, training_flops_per_sample
from deltalm.model.config import DeltaLMConfig
from deltalm.model.model import DeltaLM

PAPER_GFLOP = (
    500.0  # DeltaLM base, one 512/114 span-corruption sample, training (paper run: ~25% MFU on V100)
)


def counted_flops(model: nn.Module, batch: dict) -> tuple[float, float]:
    """(forward, backward) FLOPs as torch's FlopCounterMode counts the ops actually run."""
    with FlopCounterMode(display=False) as forward:
        out = model.loss(batch)
    with FlopCounterMode(display=False) as backward:
        out.loss_sum.backward()
    return float(forward.get_total_flops()), float(backward.get_total_flops())


def test_base_at_paper_shapes_is_about_500_gflop():
    base = DeltaLMConfig.preset("base")
    gflop = training_flops_per_sample(base, 512, 114) / 1e9
    assert abs(gflop - PAPER_GFLOP) / PAPER_GFLOP < 0.10, gflop
    assert gflop == pytest.approx(500.24, abs=0.01)  # golden: 3 x 166.75 GFLOP forward
    # large: 2.9x base (twice the layers, 4/3 the width, the same 250k head)
    assert training_flops_per_sample(DeltaLMConfig.preset("large"), 512, 114) / 1e9 == pytest.approx(
        1457.38, abs=0.01
    )


@pytest.mark.parametrize("shape", [(48, 16), (20, 33)])
def test_formula_equals_torch_op_count(shape):
    """Forward = the formula exactly; backward = 2 x forward + the chunked loss's logit recomputation."""
    s, t = shape
    config = DeltaLMConfig.preset("tiny", vocab_size=1000, dropout=0.0, attention_backend="math")
    torch.manual_seed(0)
    model = DeltaLM(config)
    rows = 3
    batch = FixedShapeBatches([(s, t)], rows, config.vocab_size, 0, False).next_batch()
    fwd, bwd = counted_flops(model, batch)
    assert fwd == pytest.approx(rows * forward_flops(config, s, t), rel=1e-9)
    recompute = rows * 2 * config.d_model * config.padded_vocab_size * t  # backward re-runs h @ W.T per chunk
    assert fwd + bwd == pytest.approx(rows * training_flops_per_sample(config, s, t) + recompute, rel=1e-9)


def test_six_n_d_from_the_module_tree():
    """6 x (matmul weights each token stream passes through) x tokens + attention terms == the engine's count."""
    with torch.device("meta"):
        model = DeltaLM(DeltaLMConfig.preset("base"))
    c = model.config
    s, t = 512, 114

    def linear_weights(module: nn.Module, skip=()) -> int:
        return sum(
            m.weight.numel()
            for name, m in module.named_modules()
            if isinstance(m, nn.Linear) and name not in skip
        )

    cross_kv = [f"layers.{j}.encoder_attn.{p}" for j in range(c.decoder_blocks) for p in ("k_proj", "v_proj")]
    source_params = (
        linear_weights(model.encoder)
        + linear_weights(model.decoder)
        - linear_weights(model.decoder, skip=cross_kv)
    )
    target_params = linear_weights(model.decoder, skip=cross_kv) + model.output_weight.numel()
    dense = 6 * (source_params * s + target_params * t)
    attention = 3 * (
        c.encoder_layers * 4 * s * s * c.d_model
        + c.decoder_blocks * (4 * t * t * c.d_model + 4 * t * s * c.d_model)
    )
    assert model.output_weight.shape[0] == c.padded_vocab_size
    assert dense + attention == pytest.approx(training_flops_per_sample(c, s, t), rel=1e-12)


def test_mt5_formula_equals_torch_op_count():
    config = DeltaLMConfig.preset("tiny", vocab_size=1000, dropout=0.0)
    s, t = 40, 12
    peer_config = matched_mt5_config(config, [(s, t)])
    peer_config._attn_implementation = "eager"  # plain matmuls, which the op counter sees exactly
    torch.manual_seed(0)
    peer = MT5Peer(peer_config)
    rows = 2
    batch = FixedShapeBatches([(s, t)], rows, config.vocab_size, 0, False).next_batch()
    fwd, bwd = counted_flops(peer, batch)
    assert fwd + bwd == pytest.approx(rows * mt5_flops_of(peer_config, s, t), rel=1e-9)


@pytest.mark.parametrize("preset", ["small", "base", "large"])
@pytest.mark.parametrize("shape", [(512, 114), (512, 512), (64, 16)])
def test_peer_has_equal_flops_per_sample(preset, shape):
    config = DeltaLMConfig.preset(preset)
    peer = matched_mt5_config(config, [shape])
    ours = training_flops_per_sample(config, *shape)
    assert abs(mt5_flops_of(peer, *shape) / ours - 1) < 0.01
    assert (peer.d_model, peer.num_heads, peer.vocab_size) == (
        config.d_model,
        config.heads,
        config.padded_vocab_size,
    )
    assert (peer.num_layers, peer.num_decoder_layers) == (config.encoder_layers, 2 * config.decoder_blocks)


def test_base_peer_at_paper_shapes_is_golden():
    peer = matched_mt5_config(DeltaLMConfig.preset("base"), [(512, 114)])
    assert peer.d_ff == 1664 and peer.is_gated_act and peer.tie_word_embeddings


def test_device_peak_table():
    assert device_peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.0
    assert device_peak_tflops("Tesla V100-SXM2-32GB", "fp16") == 125.0
    assert device_peak_tflops("NVIDIA A100-SXM4-80GB", "bf16") == 312.0
    assert device_peak_tflops("Some Future Accelerator", "bf16") == 0.0
