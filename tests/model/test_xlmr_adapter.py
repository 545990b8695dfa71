"""HF XLM-R → DeltaLM initialization (parity with transformers) and encoder export back to XLM-R."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from deltalm.adapters.checkpoint_io import CheckpointError
from deltalm.adapters.xlmr import export_encoder_as_xlmr, from_xlmr, parameter_sources
from deltalm.model import DeltaLM

SHAPES = [  # (vocab, hidden, layers, heads, ffn, positions)
    (61, 16, 2, 2, 32, 20),
    (40, 24, 4, 3, 40, 34),
]


def make_xlmr(tmp_path, vocab, hidden, layers, heads, ffn, positions, seed=0, safetensors=True):
    cfg = transformers.XLMRobertaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=positions,
        layer_norm_eps=1e-5,
        type_vocab_size=1,
    )
    torch.manual_seed(seed)
    model = transformers.XLMRobertaModel(cfg).eval()
    with torch.no_grad():  # make every tensor distinctive (LN weights/biases, token type row non-trivial)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / f"xlmr-{hidden}-{layers}"
    if safetensors:
        model.save_pretrained(path)
    else:
        path.mkdir()
        model.config.to_json_file(path / "config.json")
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    return model, path


def padded_ids(vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, vocab, (3, 9), generator=g)
    ids[:, 0] = 0
    ids[0, 6:] = 1
    ids[0, 5] = 2
    ids[1, 3:] = 1
    ids[1, 2] = 2
    ids[2, -1] = 2
    return ids


@pytest.mark.parametrize("shape", SHAPES)
def test_encoder_hidden_states_match_transformers(tmp_path, shape):
    hf, path = make_xlmr(tmp_path, *shape)
    result = from_xlmr(path, dropout=0.0)
    model = result.model.eval()
    ids = padded_ids(shape[0])
    real = ids.ne(1)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=real.long()).last_hidden_state
        ours = model.encode(ids)
    assert (ref - ours)[real].abs().max() < 1e-5
    assert result.new_token_rows == range(shape[0], model.config.padded_vocab_size)


def test_pytorch_bin_and_every_parameter_source(tmp_path):
    hf, path = make_xlmr(tmp_path, *SHAPES[1], safetensors=False)
    result = from_xlmr(
        path, decoder_blocks=1, vocab_size=45
    )  # 5 sentinel-like rows beyond the checkpoint's 40
    model = result.model
    hf_state = hf.state_dict()
    params = dict(model.named_parameters())
    assert set(result.sources) == set(params)
    # the documented mapping (docs/model.md), spelled out: decoder block 0 <- layers 0 and 1
    doc = {
        "decoder.layers.0.self_attn.q_proj.weight": "encoder.layer.0.attention.self.query.weight",
        "decoder.layers.0.self_attn.out_proj.bias": "encoder.layer.0.attention.output.dense.bias",
        "decoder.layers.0.self_attn_layer_norm.weight": "encoder.layer.0.attention.output.LayerNorm.weight",
        "decoder.layers.0.ffn_1.fc1.weight": "encoder.layer.0.intermediate.dense.weight",
        "decoder.layers.0.ffn_1.fc2.bias": "encoder.layer.0.output.dense.bias",
        "decoder.layers.0.ffn_layer_norm.bias": "encoder.layer.0.output.LayerNorm.bias",
        "decoder.layers.0.encoder_attn.k_proj.weight": "encoder.layer.1.attention.self.key.weight",
        "decoder.layers.0.encoder_attn.v_proj.bias": "encoder.layer.1.attention.self.value.bias",
        "decoder.layers.0.encoder_attn_layer_norm.weight": "encoder.layer.1.attention.output.LayerNorm.weight",
        "decoder.layers.0.ffn_2.fc1.bias": "encoder.layer.1.intermediate.dense.bias",
        "decoder.layers.0.ffn_2.fc2.weight": "encoder.layer.1.output.dense.weight",
        "decoder.layers.0.final_layer_norm.weight": "encoder.layer.1.output.LayerNorm.weight",
        "encoder.layers.3.ffn.fc2.weight": "encoder.layer.3.output.dense.weight",
    }
    for ours, theirs in doc.items():
        assert result.sources[ours] == theirs
    # every decoder tensor equals its documented source (and no decoder tensor is left random)
    for name, param in params.items():
        if name.startswith(("decoder.", "encoder.", "embedding.emb_layer_norm")):
            assert torch.equal(param, hf_state[result.sources[name]]), name
    vocab = SHAPES[1][0]
    assert torch.equal(
        params["embedding.embed_tokens.weight"][:vocab], hf_state["embeddings.word_embeddings.weight"]
    )
    folded = (
        hf_state["embeddings.position_embeddings.weight"]
        + hf_state["embeddings.token_type_embeddings.weight"][0]
    )
    assert torch.equal(params["embedding.embed_positions.weight"], folded)
    new = params["embedding.embed_tokens.weight"][vocab:]
    assert new.shape[0] == 8 and new.abs().min() > 0 and new.std() < 0.05  # fresh N(0, 0.02), listed
    assert result.new_token_rows == range(40, 48)
    assert "new" in result.sources["embedding.embed_tokens.weight"]
    assert "decoder.layers.0.ffn_2.fc1.weight" in result.table()


def test_mapping_covers_model_exactly():
    from tests.model.helpers import tiny_config

    config = tiny_config(encoder_layers=3, decoder_blocks=1)
    with torch.device("meta"):
        names = {n for n, _ in DeltaLM(config).named_parameters()}
    assert set(parameter_sources(3, 1)) == names


def test_refusals(tmp_path):
    _, path = make_xlmr(tmp_path, *SHAPES[0])  # 2 layers
    with pytest.raises(CheckpointError, match="2 decoder blocks need 4 layers"):
        from_xlmr(path, decoder_blocks=2)
    cfg = json.loads((path / "config.json").read_text())
    cfg["model_type"] = "bert"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not XLM-R"):
        from_xlmr(path)
    cfg["model_type"] = "xlm-roberta"
    cfg["num_hidden_layers"] = 3
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="odd"):
        from_xlmr(path)
    with pytest.raises(CheckpointError, match="lacks tensor encoder.layer.2"):
        from_xlmr(path, decoder_blocks=1)  # config says 3 layers, weights have 2
    with pytest.raises(CheckpointError, match="not found"):
        from_xlmr(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        from_xlmr(tmp_path / "empty")


def test_classmethod_and_export_round_trip(tmp_path):
    hf, path = make_xlmr(tmp_path, *SHAPES[0])
    model = DeltaLM.from_xlmr(path).eval()
    out = export_encoder_as_xlmr(model, tmp_path / "export")
    back = transformers.XLMRobertaModel.from_pretrained(out).eval()
    ids = padded_ids(SHAPES[0][0])
    real = ids.ne(1)
    with torch.no_grad():
        a = back(input_ids=ids, attention_mask=real.long()).last_hidden_state
        b = model.encode(ids)
        c = hf(input_ids=ids, attention_mask=real.long()).last_hidden_state
    assert (a - b)[real].abs().max() < 1e-5
    assert (a - c)[real].abs().max() < 1e-5
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


def test_separate_decoder_positions_start_as_the_xlmr_tables(tmp_path):
    hf, path = make_xlmr(tmp_path, *SHAPES[1])
    result = from_xlmr(path, decoder_blocks=1, separate_decoder_positions=True)
    model = result.model
    assert set(result.sources) == {n for n, _ in model.named_parameters()}
    assert result.sources["decoder_embedding.embed_positions.weight"].startswith(
        "embeddings.position_embeddings"
    )
    assert torch.equal(model.decoder_embedding.embed_positions.weight, model.embedding.embed_positions.weight)
    norm, side = model.embedding.emb_layer_norm, model.decoder_embedding.emb_layer_norm
    assert torch.equal(side.weight, norm.weight) and torch.equal(side.bias, norm.bias)
    assert torch.equal(norm.weight, hf.state_dict()["embeddings.LayerNorm.weight"])
