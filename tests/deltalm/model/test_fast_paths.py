"""Each fast path equals the plain path on CPU (fp32, no dropout): values and gradients.

SDPA vs math attention, chunked CE vs full-logits CE, vocabulary padded to 64 vs 8, fused vs separate QKV,
activation checkpointing on vs off. What stays GPU-only (flash kernels, bf16 numerics, fused AdamW, compile
speed) is listed in docs/benchmarks/gpu.md.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deltalm.model.config import DeltaLMConfig
from deltalm.model.model import DeltaLM

VOCAB = 203  # not a multiple of 8: padding rows exist under both multiples


def tiny(**overrides) -> DeltaLMConfig:
    base = dict(
        vocab_size=VOCAB, d_model=32, heads=4, ffn=64, encoder_layers=2, decoder_blocks=2, dropout=0.0
    )
    return DeltaLMConfig.preset("tiny", **{**base, **overrides})


def batch_with_padding(seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded rows of different lengths (incl. a 1-token source), so every mask matters."""
    g = torch.Generator().manual_seed(seed)
    src_lens, tgt_lens = (9, 5, 1), (6, 2, 4)
    b, s, t = 3, max(src_lens), max(tgt_lens) + 1
    src = torch.full((b, s), 1)
    dec_in = torch.full((b, t), 1)
    target = torch.full((b, t), 1)
    for i, (ls, lt) in enumerate(zip(src_lens, tgt_lens, strict=True)):
        src[i, : ls - 1] = torch.randint(4, VOCAB, (ls - 1,), generator=g)
        src[i, ls - 1] = 2
        y = torch.randint(4, VOCAB, (lt,), generator=g)
        dec_in[i, 0] = 2
        dec_in[i, 1 : lt + 1] = y
        target[i, :lt] = y
        target[i, lt] = 2
    return {
        "encoder_input_tokens": src,
        "encoder_padding_mask": src.ne(1),
        "decoder_input_tokens": dec_in,
        "decoder_target_tokens": target,
        "decoder_loss_weights": target.ne(1).long(),
    }


def loss_and_grads(model: DeltaLM, batch: dict, label_smoothing: float = 0.0):
    model.zero_grad()
    out = model.loss(batch, label_smoothing=label_smoothing)
    out.loss_sum.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss_sum.detach(), grads


def twin(model: DeltaLM, **changes) -> DeltaLM:
    """A model with ``changes`` to the config and exactly ``model``'s weights."""
    other = DeltaLM(model.config.replace(**changes))
    other.load_state_dict(model.state_dict())
    return other.train()


def assert_same(a, b, atol=1e-5):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert torch.allclose(loss_a, loss_b, rtol=1e-5, atol=atol), (loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], rtol=1e-4, atol=atol), name


def make(seed: int = 0, **overrides) -> DeltaLM:
    torch.manual_seed(seed)
    return DeltaLM(tiny(**overrides)).train()


def test_sdpa_equals_math_attention():
    model = make(attention_backend="sdpa")
    batch = batch_with_padding()
    assert_same(loss_and_grads(model, batch), loss_and_grads(twin(model, attention_backend="math"), batch))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [5, 4096])  # chunk 1: tests/deltalm/model/test_loss.py
def test_chunked_cross_entropy_equals_full_logits(label_smoothing, chunk):
    model = make(loss_chunk_size=chunk)
    batch = batch_with_padding(1)
    chunked = loss_and_grads(model, batch, label_smoothing)

    # the plain path: full [B, T, V] logits of forward(), log-softmax over the logical vocabulary
    model.zero_grad()
    logits = model(batch["encoder_input_tokens"], batch["decoder_input_tokens"])[..., :VOCAB]
    keep = batch["decoder_loss_weights"] > 0
    lprobs = F.log_softmax(logits[keep].float(), dim=-1)
    nll = -lprobs.gather(1, batch["decoder_target_tokens"][keep][:, None]).squeeze(1)
    eps_i = label_smoothing / (VOCAB - 1)
    loss = ((1 - label_smoothing - eps_i) * nll + eps_i * -lprobs.sum(-1)).sum()
    loss.backward()
    plain = loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert_same(chunked, plain)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_fused_loss_form_equals_the_eager_loss(label_smoothing, monkeypatch):
    """The loss_fused path's chunk kernels (run eagerly here: compile only changes how they execute)."""
    import deltalm.model.loss

    monkeypatch.setattr(
        deltalm.model.loss,
        "_compiled",
        lambda name: {
            "statistics": deltalm.model.loss._chunk_statistics,
            "gradient": deltalm.model.loss._logit_gradient,
        }[name],
    )
    model = make(loss_chunk_size=5)
    batch = batch_with_padding(6)
    fused = twin(model, loss_fused=True)
    assert_same(loss_and_grads(model, batch, label_smoothing), loss_and_grads(fused, batch, label_smoothing))


def test_vocabulary_padded_to_64_gives_the_same_logits_and_gradients():
    model = make(pad_vocab_to_multiple=8)
    padded = DeltaLM(model.config.replace(pad_vocab_to_multiple=64)).train()
    assert (model.config.padded_vocab_size, padded.config.padded_vocab_size) == (208, 256)
    state = model.state_dict()
    key = "embedding.embed_tokens.weight"
    rows = torch.randn(256, model.config.d_model) * 5  # garbage in the extra rows must not matter
    rows[:208] = state[key]
    padded.load_state_dict({**state, key: rows})
    batch = batch_with_padding(2)

    logits_8 = model(batch["encoder_input_tokens"], batch["decoder_input_tokens"])
    logits_64 = padded(batch["encoder_input_tokens"], batch["decoder_input_tokens"])
    assert torch.allclose(logits_8[..., :VOCAB], logits_64[..., :VOCAB], atol=1e-5)
    assert torch.isneginf(logits_64[..., VOCAB:]).all()

    (loss_8, grads_8), (loss_64, grads_64) = (
        loss_and_grads(model, batch, 0.1),
        loss_and_grads(padded, batch, 0.1),
    )
    assert torch.allclose(loss_8, loss_64, atol=1e-5)
    for name, grad in grads_8.items():
        other = grads_64[name]
        if name == key:
            assert torch.allclose(other[VOCAB:], torch.zeros_like(other[VOCAB:]))
            grad, other = grad[:VOCAB], other[:VOCAB]
        assert torch.allclose(grad, other, rtol=1e-4, atol=1e-5), name


def test_fused_qkv_equals_separate_projections():
    model = make(fused_qkv=True)
    batch = batch_with_padding(3)
    batch = {k: v.repeat(16, 1) for k, v in batch.items()}  # >= 128 tokens: the fused branch really runs
    assert_same(loss_and_grads(model, batch), loss_and_grads(twin(model, fused_qkv=False), batch))


def test_activation_checkpointing_equals_plain_backward_with_dropout():
    model = make(dropout=0.1, activation_checkpointing=False)
    batch = batch_with_padding(4)
    torch.manual_seed(11)
    plain = loss_and_grads(model, batch)
    checkpointed = twin(model, activation_checkpointing=True)
    torch.manual_seed(11)
    assert_same(plain, loss_and_grads(checkpointed, batch))  # same dropout masks: the RNG state is replayed


@pytest.mark.gpu
def test_bf16_flash_attention_on_cuda_matches_fp32_math():
    """GPU only: bf16 weights, SDPA (flash/memory-efficient kernels) vs the fp32 math path, loss and gradients."""
    model = make(attention_backend="math").cuda()
    batch = {k: v.cuda() for k, v in batch_with_padding(5).items()}
    batch = {k: v.repeat(8, 1) for k, v in batch.items()}
    reference_loss, reference_grads = loss_and_grads(model, batch)
    fast = twin(model, attention_backend="sdpa").cuda().to(torch.bfloat16)
    loss, grads = loss_and_grads(fast, batch)
    assert abs(loss.float().item() / reference_loss.item() - 1) < 2e-2
    for name, grad in reference_grads.items():
        if name.endswith("k_proj.bias"):
            continue  # mathematically zero (softmax is shift-invariant): only rounding noise on both sides
        cosine = F.cosine_similarity(grad.flatten().float(), grads[name].flatten().float(), dim=0)
        assert cosine > 0.98, (name, cosine.item())


@pytest.mark.gpu
def test_compiled_fused_loss_on_cuda_equals_eager():
    """GPU only: the torch.compile'd chunk kernels (bf16 logits in, one pass) against the eager chunked loss."""
    model = make(loss_chunk_size=7).cuda().to(torch.bfloat16)
    batch = {k: v.cuda() for k, v in batch_with_padding(7).items()}
    eager_loss, eager_grads = loss_and_grads(model, batch, 0.1)
    fused = twin(model, loss_fused=True).cuda().to(torch.bfloat16)
    loss, grads = loss_and_grads(fused, batch, 0.1)
    assert abs(loss.item() / eager_loss.item() - 1) < 1e-3
    for name, grad in eager_grads.items():
        assert torch.allclose(grad.float(), grads[name].float(), rtol=2e-2, atol=1e-3), name
