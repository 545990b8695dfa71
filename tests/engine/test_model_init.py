"""The init section: random, our pretrained directory; mismatched architecture or bad files are ConfigErrors."""

from __future__ import annotations

import pytest
import torch

from deltalm.config_tree import ConfigError
from deltalm.engine.config import InitConfig
from deltalm.engine.model_init import build_model, check_init
from deltalm.model_config import DeltaLMConfig

TINY = DeltaLMConfig.preset(
    "tiny", vocab_size=96, d_model=16, heads=2, ffn=32, encoder_layers=1, decoder_blocks=1
)


def test_random_init_is_seeded():
    a = build_model(TINY, InitConfig(), seed=3)
    b = build_model(TINY, InitConfig(), seed=3)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_pretrained_directory_round_trip_and_mismatch(tmp_path):
    from deltalm.adapters.pretrained import save_pretrained

    source = build_model(TINY, InitConfig(), seed=5)
    save_pretrained(source, tmp_path / "p")
    init = InitConfig(kind="pretrained", path=str(tmp_path / "p"))
    check_init(init)
    loaded = build_model(TINY, init, seed=0)
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    with pytest.raises(ConfigError, match=r"model.d_model is 16 there, 32 in the config"):
        build_model(TINY.replace(d_model=32), init, seed=0)
    with pytest.raises(
        ConfigError, match=r"model.separate_decoder_positions is False there, True in the config"
    ):
        build_model(TINY.replace(separate_decoder_positions=True), init, seed=0)
    with pytest.raises(
        ConfigError, match=rf"model.max_positions is {TINY.max_positions} there, 66 in the config"
    ):
        build_model(TINY.replace(max_positions=66), init, seed=0)
    (tmp_path / "p" / "config.json").write_text("{")
    with pytest.raises(ConfigError, match=r"^init.path: "):
        build_model(TINY, init, seed=0)


def test_missing_paths_refused_before_start(tmp_path):
    with pytest.raises(ConfigError, match="xlmr directory not found"):
        check_init(InitConfig(kind="xlmr", path=str(tmp_path / "none")))
    with pytest.raises(ConfigError, match="official checkpoint not found"):
        check_init(InitConfig(kind="official", path=str(tmp_path / "none.pt")))


def test_runtime_knobs_of_the_config_reach_a_loaded_model(tmp_path):
    """Dropout, speed paths and vocabulary padding come from the training config, not the checkpoint."""
    from deltalm.adapters.pretrained import save_pretrained

    source = build_model(TINY, InitConfig(), seed=5)  # 96 rows (multiple of 8)
    save_pretrained(source, tmp_path / "p")
    wanted = TINY.replace(pad_vocab_to_multiple=64, dropout=0.0, attention_backend="math", fused_qkv=False)
    loaded = build_model(wanted, InitConfig(kind="pretrained", path=str(tmp_path / "p")), seed=0)
    assert loaded.config.padded_vocab_size == 128 and loaded.config.dropout == 0.0
    assert loaded.config.attention_backend == "math" and not loaded.config.fused_qkv
    rows = loaded.embedding.embed_tokens.weight
    assert torch.equal(rows[:96], source.embedding.embed_tokens.weight[:96])
    assert torch.count_nonzero(rows[96:]) == 0
    tokens = torch.tensor([[5, 6, 7, 2]])
    source.eval(), loaded.eval()
    torch.testing.assert_close(loaded(tokens, tokens)[..., :96], source(tokens, tokens)[..., :96])
