"""The init section: random, our pretrained directory; mismatched architecture or bad files are ConfigErrors."""

from __future__ import annotations

import pytest
import torch

from deltalm.checkpoints.model_init import build_model, check_init
from deltalm.config_tree import ConfigError
from deltalm.engine.config import InitConfig
from deltalm.model.config import DeltaLMConfig

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
    from deltalm.checkpoints.pretrained import save_pretrained

    source = build_model(TINY, InitConfig(), seed=5)
    save_pretrained(source, tmp_path / "p")
    init = InitConfig(kind="pretrained", path=str(tmp_path / "p"))
    check_init(init)
    loaded = build_model(TINY, init, seed=0)
    for key, value in source.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    with pytest.raises(ConfigError, match=r"model.d_model is 16 there, 32 in the config"):
        build_model(TINY.replace(d_model=32), init, seed=0)
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
    from deltalm.checkpoints.pretrained import save_pretrained

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


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_positions", 40),
        ("activation", "relu"),
        ("embedding_layer_norm", False),
        ("layer_norm_eps", 1e-6),
        ("ffn", 64),
    ],
)
def test_every_architecture_field_that_disagrees_is_refused_naming_both_values(tmp_path, field, value):
    from deltalm.checkpoints.pretrained import save_pretrained

    save_pretrained(build_model(TINY, InitConfig(), seed=5), tmp_path / "p")
    init = InitConfig(kind="pretrained", path=str(tmp_path / "p"))
    wanted = TINY.replace(**{field: value})
    with pytest.raises(
        ConfigError, match=rf"model.{field} is {getattr(TINY, field)} there, {value} in the config"
    ):
        build_model(wanted, init, seed=0)
    # a field the config does not state comes from the checkpoint
    loaded = build_model(wanted, init, seed=0, given={"dropout"})
    assert getattr(loaded.config, field) == getattr(TINY, field)


def test_unstated_shape_comes_from_the_checkpoint_and_fine_tuning_grows_tags(tmp_path):
    """Fine-tuning's config without a model section takes the checkpoint's shape (never a default base)."""
    from deltalm.checkpoints.pretrained import save_pretrained
    from deltalm.vocabulary import Vocabulary

    vocab = Vocabulary(spm_size=82, num_sentinels=10)
    assert vocab.pretrain_size == TINY.vocab_size
    save_pretrained(build_model(TINY, InitConfig(), seed=5), tmp_path / "p")
    tagged = vocab.with_lang_tags(["de"])
    default = DeltaLMConfig()  # the base shape: not stated, so not used
    model = build_model(
        default,
        InitConfig(kind="pretrained", path=str(tmp_path / "p")),
        seed=0,
        given=frozenset(),
        vocab=tagged,
    )
    assert model.config.d_model == TINY.d_model and model.config.vocab_size == tagged.size


def test_random_init_without_a_stated_shape_is_refused():
    with pytest.raises(ConfigError, match="init.kind=random .* states no model shape: set model.preset"):
        build_model(DeltaLMConfig(), InitConfig(kind="random"), seed=0, given=frozenset({"dropout"}))


def test_init_kind_names(tmp_path):
    from deltalm.engine.config import TrainingConfig, build_config

    with pytest.raises(ConfigError, match="'none' is not one of"):
        build_config(TrainingConfig, {}, None, ["init.kind=none"])
    with pytest.raises(ConfigError, match="init.kind is 'random', which reads no checkpoint"):
        build_config(TrainingConfig, {}, None, ["init.path=x"])
    config = build_config(TrainingConfig, {}, None, ["model.preset=tiny"])
    assert config.init.kind == "random" and "d_model" in config.model_fields_given
    assert build_config(TrainingConfig, {}, None, ["model.dropout=0.2"]).model_fields_given == {"dropout"}


def test_describe_names_shape_parameters_and_source():
    from deltalm.checkpoints.model_init import describe

    line = describe(build_model(TINY, InitConfig(), seed=0), InitConfig())
    assert line.startswith(
        "model: d_model 16, 2 heads, ffn 32, 1 encoder layers, 1 decoder blocks, 96 vocabulary"
    )
    assert line.endswith("M parameters (random init)")
