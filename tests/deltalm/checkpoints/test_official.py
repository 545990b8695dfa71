"""The released DeltaLM ``{"weights": {...}}`` layout: base-shaped key set, bit-exact round trip, refusals."""

from __future__ import annotations

import pytest
import torch

import deltalm
from deltalm.checkpoints.official import official_keys
from deltalm.file_io import CheckpointError
from deltalm.model.config import DeltaLMConfig

ENC, DEC, D, FFN, ROWS = 12, 6, 16, 24, 104  # base's layer counts at a tiny width


def fake_release(embedding_ln: bool = True, dtype=torch.float32, seed: int = 0) -> dict[str, torch.Tensor]:
    """A key set laid out like deltalm-base.pt (docs/design.md#model), random values, src/tgt copies equal."""
    g = torch.Generator().manual_seed(seed)
    w: dict[str, torch.Tensor] = {}

    def lin(prefix, out, inp):
        w[f"{prefix}.weight"] = torch.randn(out, inp, generator=g).to(dtype)
        w[f"{prefix}.bias"] = torch.randn(out, generator=g).to(dtype)

    def ln(prefix):
        w[f"{prefix}.weight"] = (1 + 0.1 * torch.randn(D, generator=g)).to(dtype)
        w[f"{prefix}.bias"] = torch.randn(D, generator=g).to(dtype)

    def attn(prefix):
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            lin(f"{prefix}.{p}", D, D)

    tokens = torch.randn(ROWS, D, generator=g).to(dtype)
    positions = torch.randn(514, D, generator=g).to(dtype)
    for copy in ("src_embedding", "tgt_embedding"):
        w[f"{copy}.embed_tokens.weight"] = tokens.clone()
        w[f"{copy}.embed_positions.weight"] = positions.clone()
    if embedding_ln:
        ln("src_embedding.emb_layer_norm")
        w["tgt_embedding.emb_layer_norm.weight"] = w["src_embedding.emb_layer_norm.weight"].clone()
        w["tgt_embedding.emb_layer_norm.bias"] = w["src_embedding.emb_layer_norm.bias"].clone()
    for i in range(ENC):
        p = f"encoder.layers.{i}"
        attn(f"{p}.self_attn")
        ln(f"{p}.self_attn_layer_norm")
        lin(f"{p}.ffn.fc1", FFN, D)
        lin(f"{p}.ffn.fc2", D, FFN)
        ln(f"{p}.final_layer_norm")
    for j in range(DEC):
        p = f"decoder.layers.{j}"
        attn(f"{p}.self_attn")
        attn(f"{p}.encoder_attn")
        for f in ("ffn_1", "ffn_2"):
            lin(f"{p}.{f}.fc1", FFN, D)
            lin(f"{p}.{f}.fc2", D, FFN)
        for n in ("self_attn_layer_norm", "ffn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"):
            ln(f"{p}.{n}")
    return w


def test_base_key_set_has_392_tensors_and_matches_our_mapping():
    w = fake_release()
    assert len(w) == 392
    cfg = DeltaLMConfig.preset("base", vocab_size=ROWS, d_model=D, heads=4, ffn=FFN)
    assert set(official_keys(cfg)) == set(w)
    assert len(official_keys(DeltaLMConfig.preset("base"))) == 392


@pytest.mark.parametrize(("embedding_ln", "dtype"), [(True, torch.float32), (False, torch.float16)])
def test_round_trip_is_bit_exact(tmp_path, embedding_ln, dtype):
    w = fake_release(embedding_ln, dtype)
    torch.save({"weights": w}, tmp_path / "deltalm.pt")
    model = deltalm.load_official(tmp_path / "deltalm.pt", heads=4)
    cfg = model.config
    assert (cfg.encoder_layers, cfg.decoder_blocks, cfg.d_model, cfg.ffn, cfg.vocab_size) == (
        ENC,
        DEC,
        D,
        FFN,
        ROWS,
    )
    assert cfg.embedding_layer_norm is embedding_ln and cfg.heads == 4 and cfg.max_positions == 514
    assert model.embedding.embed_tokens.weight.dtype == dtype
    deltalm.save_official(model, tmp_path / "again.pt")
    back = torch.load(tmp_path / "again.pt", weights_only=True)["weights"]
    assert set(back) == set(w)
    for key, tensor in w.items():
        assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key


def test_default_heads_and_vocab_padding_rows_dropped_on_save(tmp_path):
    w = fake_release()
    torch.save({"weights": w}, tmp_path / "deltalm.pt")
    model = deltalm.load_official(tmp_path / "deltalm.pt", pad_vocab_to_multiple=64)
    assert model.config.heads == 1  # d_model // 64, at least 1
    assert model.embedding.embed_tokens.weight.shape[0] == 128
    deltalm.save_official(model, tmp_path / "again.pt")
    back = torch.load(tmp_path / "again.pt", weights_only=True)["weights"]
    assert torch.equal(back["src_embedding.embed_tokens.weight"], w["src_embedding.embed_tokens.weight"])


def test_loaded_model_runs_and_uses_the_weights(tmp_path):
    w = fake_release()
    torch.save({"weights": w}, tmp_path / "deltalm.pt")
    model = deltalm.load_official(tmp_path / "deltalm.pt", heads=4, dropout=0.0).eval()
    assert torch.equal(model.decoder.layers[5].ffn_2.fc1.weight, w["decoder.layers.5.ffn_2.fc1.weight"])
    logits = model(torch.tensor([[5, 6, 2]]), torch.tensor([[2, 7]]))
    assert logits.shape == (1, 2, ROWS) and torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda w: w.pop("decoder.layers.3.encoder_attn.k_proj.bias"),
            "missing key decoder.layers.3.encoder_attn.k_proj.bias",
        ),
        (
            lambda w: w.update({"decoder.layers.0.extra.weight": torch.zeros(1)}),
            "unexpected key decoder.layers.0.extra.weight",
        ),
        (
            lambda w: w.update({"encoder.layers.2.ffn.fc2.weight": torch.zeros(D, FFN + 1)}),
            "encoder.layers.2.ffn.fc2.weight has shape",
        ),
        (
            lambda w: w["tgt_embedding.embed_positions.weight"].add_(1.0),
            "tgt_embedding.embed_positions.weight differs",
        ),
        (lambda w: w.pop("src_embedding.embed_tokens.weight"), "lacks key src_embedding.embed_tokens.weight"),
    ],
)
def test_bad_checkpoints_are_refused_naming_the_key(tmp_path, edit, message):
    w = fake_release()
    edit(w)
    torch.save({"weights": w}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=message):
        deltalm.load_official(tmp_path / "bad.pt", heads=4)


def test_not_a_release_file(tmp_path):
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="'weights' mapping"):
        deltalm.load_official(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a weights-only torch checkpoint"):
        deltalm.load_official(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="not found"):
        deltalm.load_official(tmp_path / "missing.pt")
