"""``--verify`` of :mod:`deltalm.export`: reload an export and compare it with the checkpoint's own weights.

- ``safetensors``: every tensor must equal the checkpoint's fp32 tensor rounded to the export dtype (bit for bit),
  and the reloaded model's logits on a fixed batch must equal (exactly, computed in fp32) those of the checkpoint's
  weights rounded the same way.
- ``official``: tensors bit-equal (the embedding's logical rows: the layout drops vocabulary padding rows), logits
  exactly equal (padding rows are never predicted).
- ``xlmr-encoder``: ``transformers.XLMRobertaModel`` loads it and its last hidden states match our encoder's within
  ``XLMR_TOLERANCE`` (two different attention implementations: not bit-equal by construction).
"""

from __future__ import annotations

from pathlib import Path

import torch

from deltalm.export_checkpoint import EngineCheckpoint
from deltalm.vocabulary import EOS_ID, NUM_SPECIALS, PAD_ID

XLMR_TOLERANCE = 1e-4


def probe_batch(vocab_size: int, seed: int = 0, batch: int = 2, src_len: int = 12, tgt_len: int = 7):
    """A fixed batch (with padding in the second row) to compare logits on."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(NUM_SPECIALS, vocab_size, (batch, src_len), generator=g)
    src[:, -1] = EOS_ID
    src[-1, src_len // 2 :] = PAD_ID
    src[-1, src_len // 2 - 1] = EOS_ID
    tgt = torch.randint(NUM_SPECIALS, vocab_size, (batch, tgt_len), generator=g)
    tgt[:, 0] = EOS_ID
    return src, tgt


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    finite = torch.isfinite(a) & torch.isfinite(b)
    if not torch.equal(torch.isfinite(a), torch.isfinite(b)):
        return float("inf")
    return float((a[finite] - b[finite]).abs().max()) if finite.any() else 0.0


@torch.no_grad()
def verify_export(ckpt: EngineCheckpoint, out: Path, format: str, dtype: str = "fp32") -> dict:
    """Returns ``{"ok": bool, "summary": str, ...}``; never raises on a mismatch (the caller decides)."""
    from deltalm.export import DTYPES, consolidated_model

    export_dtype = DTYPES[dtype]
    reference = consolidated_model(ckpt, export_dtype).float()
    src, tgt = probe_batch(ckpt.model_config.vocab_size)
    if format == "xlmr-encoder":
        from transformers import XLMRobertaModel

        hf = XLMRobertaModel.from_pretrained(str(out)).eval()
        theirs = hf(input_ids=src, attention_mask=src.ne(PAD_ID).long()).last_hidden_state
        ours = reference.encode(src)
        mask = src.ne(PAD_ID)
        diff = float((theirs - ours)[mask].abs().max())
        ok = diff <= XLMR_TOLERANCE
        return {
            "ok": ok,
            "max_abs_diff": diff,
            "summary": f"hidden states max |diff| {diff:.2e} (tolerance {XLMR_TOLERANCE})",
        }
    if format == "official":
        from deltalm.adapters.official import load_official

        c = ckpt.model_config
        loaded = (
            load_official(
                out,
                heads=c.heads,
                separate=c.separate_decoder_positions,
                pad_vocab_to_multiple=c.pad_vocab_to_multiple,
            )
            .float()
            .eval()
        )
    else:
        from deltalm.adapters.pretrained import from_pretrained

        loaded = from_pretrained(out).float().eval()
    ref_state = reference.state_dict()
    rows = ckpt.model_config.vocab_size

    def logical(key: str, tensor: torch.Tensor) -> torch.Tensor:
        # the official layout keeps only the logical vocabulary rows (padding rows come back as zeros)
        return tensor[:rows] if format == "official" and key == "embedding.embed_tokens.weight" else tensor

    mismatched = [
        k for k, v in loaded.state_dict().items() if not torch.equal(logical(k, v), logical(k, ref_state[k]))
    ]
    ref_logits = reference(src, tgt)
    new_logits = loaded(src, tgt)
    diff = _max_diff(ref_logits, new_logits)
    ok = not mismatched and torch.equal(ref_logits, new_logits)
    summary = (
        f"{len(ref_state)} tensors {'bit-equal' if not mismatched else f'differ ({len(mismatched)}, first {mismatched[0]})'}"
        f" to the checkpoint's fp32 weights{'' if dtype == 'fp32' else f' rounded to {dtype}'};"
        f" logits {'equal' if diff == 0.0 else f'max |diff| {diff:.3e}'}"
    )
    return {"ok": ok, "max_abs_diff": diff, "mismatched": mismatched, "summary": summary}
