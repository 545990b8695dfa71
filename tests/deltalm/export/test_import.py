"""Import is the inverse of export: each exported format starts pre-training and fine-tuning through the engine's
``init`` section (the one dispatcher, deltalm/checkpoints/model_init.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deltalm.checkpoints.engine_checkpoint import open_checkpoint
from deltalm.checkpoints.model_init import build_model
from deltalm.config_tree import ConfigError
from deltalm.engine.config import InitConfig
from deltalm.export.exporter import export_run
from deltalm.vocabulary import Vocabulary

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exports(runs, spm, tmp_path_factory) -> dict[str, Path]:
    run = runs["w2_z2_fp32"]
    out = tmp_path_factory.mktemp("exports")
    return {
        "pretrained": export_run(run, out / "st", spm=str(spm)).path,
        "official": export_run(run, out / "deltalm.pt", format="official").path,
        "xlmr": export_run(run, out / "enc", format="xlmr-encoder", spm=str(spm)).path,
    }


def test_each_export_starts_pretraining(runs, exports):
    run = runs["w2_z2_fp32"]
    config = open_checkpoint(run).model_config
    ref = load_file(str(run / "reference_fp32.safetensors"))
    for kind, path in exports.items():
        # the XLM-R encoder export holds every (padded) embedding row: the model is built with that many
        target = config.replace(vocab_size=config.padded_vocab_size) if kind == "xlmr" else config
        model = build_model(target, InitConfig(kind=kind, path=str(path)), seed=0)
        state = model.state_dict()
        for name in ("encoder.layers.1.self_attn.q_proj.weight", "embedding.embed_positions.weight"):
            assert torch.equal(state[name], ref[name]), (kind, name)
        rows = config.vocab_size
        emb = state["embedding.embed_tokens.weight"][:rows]
        assert torch.equal(emb, ref["embedding.embed_tokens.weight"][:rows]), kind
        if kind != "xlmr":  # the decoder comes back too (xlmr re-initializes it from the encoder layers)
            key = "decoder.layers.0.encoder_attn.k_proj.weight"
            assert torch.equal(state[key], ref[key]), kind
    with pytest.raises(ConfigError, match="model.d_model is 32 there, 64 in the config"):
        build_model(
            config.replace(d_model=64), InitConfig(kind="pretrained", path=str(exports["pretrained"])), seed=0
        )


def test_each_export_starts_finetuning_with_grown_vocabulary(runs, spm, exports):
    run = runs["w2_z2_fp32"]
    config = open_checkpoint(run).model_config
    ref = load_file(str(run / "reference_fp32.safetensors"))
    vocab = Vocabulary.from_spm(spm).with_lang_tags(["de", "fr"])
    for kind in ("pretrained", "official"):
        model = build_model(config, InitConfig(kind=kind, path=str(exports[kind])), seed=0, vocab=vocab)
        assert model.config.vocab_size == vocab.size == config.vocab_size + 2
        emb = model.state_dict()["embedding.embed_tokens.weight"]
        assert torch.equal(
            emb[: config.vocab_size], ref["embedding.embed_tokens.weight"][: config.vocab_size]
        )
        key = "decoder.layers.0.ffn_2.fc1.weight"
        assert torch.equal(model.state_dict()[key], ref[key]), kind
