"""The released DeltaLM ``{"weights": {...}}`` layout: base-shaped key set, bit-exact round trip, refusals."""

from __future__ import annotations

import pytest
import torch

import deltalm
from deltalm.adapters.checkpoint_io import CheckpointError
from deltalm.adapters.official import official_keys
from deltalm.model_config import DeltaLMConfig

ENC, DEC, D, FFN, ROWS = 12, 6, 16, 24, 104  # base's layer counts at a tiny width


def fake_release(embedding_ln: bool = True, dtype=torch.float32, seed: int = 0) -> dict[str, torch.Tensor]:
    """A key set laid out like deltalm-base.pt, random values, src/tgt copies equal."""
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
            lambda w: w["tgt_embedding.embed_tokens.weight"].add_(1.0),
            "tgt_embedding.embed_tokens.weight differs .* shares its token embeddings",
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


def official_finetuned(embedding_ln: bool = True, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """A release-layout file as the official code writes it after fine-tuning: the decoder's position table
    and embedding LayerNorm have moved away from the encoder's; token embeddings are still one tensor."""
    w = fake_release(embedding_ln, dtype)
    g = torch.Generator().manual_seed(9)
    for key in [k for k in w if k.startswith("tgt_embedding.") and "embed_tokens" not in k]:
        w[key] = (w[key].float() + torch.randn(w[key].shape, generator=g)).to(dtype)
    return w


@pytest.mark.parametrize(("embedding_ln", "dtype"), [(True, torch.float32), (False, torch.bfloat16)])
def test_separate_decoder_tables_round_trip_bit_exact(tmp_path, embedding_ln, dtype):
    w = official_finetuned(embedding_ln, dtype)
    torch.save({"weights": w}, tmp_path / "ft.pt")
    model = deltalm.load_official(tmp_path / "ft.pt", heads=4)
    assert model.config.separate_decoder_positions is True
    assert torch.equal(
        model.decoder_embedding.embed_positions.weight, w["tgt_embedding.embed_positions.weight"]
    )
    assert torch.equal(model.embedding.embed_positions.weight, w["src_embedding.embed_positions.weight"])
    deltalm.save_official(model, tmp_path / "again.pt")
    back = torch.load(tmp_path / "again.pt", weights_only=True)["weights"]
    assert set(back) == set(w)
    for key, tensor in w.items():
        assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key
    # a file whose copies are equal still loads into one shared table (and saves back the same)
    torch.save({"weights": fake_release(embedding_ln, dtype)}, tmp_path / "release.pt")
    assert deltalm.load_official(tmp_path / "release.pt", heads=4).config.separate_decoder_positions is False
    forced = deltalm.load_official(tmp_path / "release.pt", heads=4, separate=True)
    assert forced.config.separate_decoder_positions is True
    with pytest.raises(CheckpointError, match="tgt_embedding.* differs from its src_embedding copy"):
        deltalm.load_official(tmp_path / "ft.pt", heads=4, separate=False)


def k_is_norm(key: str) -> bool:
    return "layer_norm" in key


def test_separate_decoder_tables_give_the_official_forward(tmp_path):
    """The encoder reads src_embedding.*, the decoder tgt_embedding.* (the official loader's rule): logits equal
    the shared-table model's encoder with the src tables followed by its decoder with the tgt tables."""
    w = official_finetuned()
    for key in [k for k in w if "layers." in k]:  # a scale where a block's input still shows in its output
        w[key] = (
            w[key] * 0.2
            if not k_is_norm(key)
            else torch.ones_like(w[key])
            if key.endswith("weight")
            else 0 * w[key]
        )
    torch.save({"weights": w}, tmp_path / "ft.pt")
    as_src = {k: (w["src" + k[3:]] if k.startswith("tgt_embedding.") else v) for k, v in w.items()}
    as_tgt = {k: (w["tgt" + k[3:]] if k.startswith("src_embedding.") else v) for k, v in w.items()}
    torch.save({"weights": as_src}, tmp_path / "src.pt")
    torch.save({"weights": as_tgt}, tmp_path / "tgt.pt")
    load = lambda name: deltalm.load_official(tmp_path / name, heads=4, dropout=0.0).eval()  # noqa: E731
    model, enc_model, dec_model = load("ft.pt"), load("src.pt"), load("tgt.pt")
    src = torch.tensor([[5, 6, 7, 2], [1, 8, 9, 2]])  # a left-padded row too
    src[1, 0] = 1
    tgt = torch.tensor([[2, 7, 9], [2, 10, 11]])
    with torch.no_grad():
        logits = model(src, tgt)
        encoded = enc_model.encode(src)
        expected = dec_model.logits(dec_model.decode(tgt, encoded, src.ne(1)))
        assert torch.equal(model.encode(src), encoded)
        torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
        shared_logits = enc_model(src, tgt)
        assert (logits - shared_logits).abs().max() > 1e-3  # the decoder tables matter
        # incremental decoding (beam search's path) uses the decoder's own table too
        state = model.start_decoding(encoded, src.ne(1))
        steps = []
        for t in range(tgt.size(1)):
            step_logits, state = model.decode_step(tgt[:, t], state)
            steps.append(step_logits)
    torch.testing.assert_close(
        torch.stack(steps, 1)[..., :ROWS], logits.float()[..., :ROWS], rtol=0, atol=1e-5
    )


def test_fresh_separate_model_starts_from_the_shared_weights(tmp_path):
    cfg = DeltaLMConfig.preset(
        "tiny", vocab_size=ROWS, d_model=D, heads=4, ffn=FFN, encoder_layers=1, decoder_blocks=1
    )
    torch.manual_seed(0)
    shared = deltalm.DeltaLM(cfg)
    torch.manual_seed(0)
    separate = deltalm.DeltaLM(cfg.replace(separate_decoder_positions=True))
    ours = separate.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in shared.state_dict().items())  # same init stream
    assert torch.equal(
        separate.decoder_embedding.embed_positions.weight, shared.embedding.embed_positions.weight
    )
    deltalm.save_pretrained(separate, tmp_path / "sep")
    back = deltalm.from_pretrained(tmp_path / "sep")
    assert back.config.separate_decoder_positions and set(back.state_dict()) == set(ours)
