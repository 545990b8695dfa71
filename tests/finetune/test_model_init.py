"""Starting models: vocabulary growth for language tags, official-checkpoint init, mismatch refusal."""

from __future__ import annotations

import pytest
import torch

from deltalm.checkpoints.model_init import build_model
from deltalm.checkpoints.official import save_official
from deltalm.checkpoints.pretrained import save_pretrained
from deltalm.config_tree import ConfigError
from deltalm.engine.config import InitConfig
from deltalm.model.config import DeltaLMConfig
from deltalm.model.embedding_growth import grow_vocabulary
from deltalm.model.model import DeltaLM


def _tiny(vocab_size: int) -> DeltaLMConfig:
    return DeltaLMConfig.preset(
        "tiny", vocab_size=vocab_size, d_model=32, heads=2, ffn=64, encoder_layers=2, decoder_blocks=1
    )


def test_grow_vocabulary_keeps_rows_and_adds_mean_rows():
    torch.manual_seed(0)
    model = DeltaLM(_tiny(101))
    grown = grow_vocabulary(model, 104)
    old, new = model.output_weight.detach(), grown.output_weight.detach()
    assert grown.config.vocab_size == 104 and new.shape[0] == grown.config.padded_vocab_size == 104
    assert torch.equal(new[:101], old[:101])
    keep = torch.ones(101, dtype=torch.bool)
    keep[1] = False  # <pad>
    expected = old[:101][keep].double().mean(0).float()
    assert all(torch.equal(new[i], expected) for i in (101, 102, 103))
    others = {k: v for k, v in model.state_dict().items() if "embed_tokens" not in k}
    assert all(torch.equal(v, grown.state_dict()[k]) for k, v in others.items())
    x = torch.tensor([[5, 6, 2]])
    y = torch.tensor([[2, 7]])
    model.eval(), grown.eval()
    torch.testing.assert_close(grown(x, y)[..., :101], model(x, y)[..., :101])  # old logits unchanged
    assert grow_vocabulary(model, 101) is model
    with pytest.raises(ValueError, match="shrink"):
        grow_vocabulary(model, 99)


def test_finetuning_init_from_official_and_pretrained_grows_the_vocabulary(tmp_path, vocab):
    tagged = vocab.with_lang_tags(["de", "fr"])
    torch.manual_seed(1)
    source = DeltaLM(_tiny(vocab.pretrain_size))
    save_official(source, tmp_path / "deltalm-tiny.pt")
    model = build_model(
        _tiny(8), InitConfig("official", str(tmp_path / "deltalm-tiny.pt")), seed=0, vocab=tagged
    )
    assert model.config.vocab_size == tagged.size and model.config.heads == 2
    rows = vocab.pretrain_size
    assert torch.equal(model.output_weight.detach()[:rows], source.output_weight.detach()[:rows])
    save_pretrained(source, tmp_path / "pre")
    model2 = build_model(
        _tiny(8).replace(dropout=0.3), InitConfig("pretrained", str(tmp_path / "pre")), seed=0, vocab=tagged
    )
    assert model2.config.dropout == 0.3 and model2.config.vocab_size == tagged.size
    wrong = DeltaLM(_tiny(vocab.pretrain_size + 40))
    save_pretrained(wrong, tmp_path / "wrong")
    with pytest.raises(ConfigError, match="use the SentencePiece model"):
        build_model(_tiny(8), InitConfig("pretrained", str(tmp_path / "wrong")), seed=0, vocab=tagged)
    fresh = build_model(_tiny(8), InitConfig("random", ""), seed=0, vocab=tagged)
    assert fresh.config.vocab_size == tagged.size
