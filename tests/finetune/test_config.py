"""Fine-tuning config checks that need the model's architecture."""

from __future__ import annotations

import pytest

from deltalm.config_tree import ConfigError
from deltalm.model_config import DeltaLMConfig
from finetune.config import DataFileConfig, MonoFileConfig, TaskConfig
from finetune.train import check_length_limits


def test_length_limits_beyond_the_position_table_are_refused():
    small = DeltaLMConfig.preset("tiny", max_positions=130)  # 128 tokens
    ok = TaskConfig(name="translation", max_source_length=128, max_target_length=128)
    check_length_limits(ok, small)
    too_long = TaskConfig(name="translation", max_target_length=128)  # source default 256
    with pytest.raises(
        ConfigError, match=r"task.max_source_length=256 exceeds .* \(128 tokens, max_positions=130\)"
    ):
        check_length_limits(too_long, small)
    target = TaskConfig(max_source_length=100, max_target_length=129)
    with pytest.raises(ConfigError, match=r"task.max_target_length=129 exceeds"):
        check_length_limits(target, small)
    # zero-shot span corruption: 150 raw tokens -> 136 inputs + the tag; 140 -> 127 (+1) fits
    mono = [MonoFileConfig(path="m.txt", lang="de")]
    zs = TaskConfig(
        max_source_length=100,
        max_target_length=100,
        zero_shot_ratio=0.5,
        zero_shot_mono=mono,
        zero_shot_input_length=150,
    )
    with pytest.raises(ConfigError, match=r"task.zero_shot_input_length=150 makes 137-token sequences"):
        check_length_limits(zs, small)
    zs.zero_shot_input_length = 140
    check_length_limits(zs, small)
    zs.zero_shot_input_length, zs.num_sentinels = 140, 5  # 7 spans
    with pytest.raises(ConfigError, match="7 noise spans need more sentinels than task.num_sentinels=5"):
        check_length_limits(zs, small)


def test_finetune_config_refuses_lengths_against_the_configured_model(tmp_path):
    from finetune.config import load_finetune_config

    train = [f"task.train=[{{path: {tmp_path / 't.jsonl'}, src_lang: en, tgt_lang: de}}]"]
    base = [*train, "task.spm_model=spm.model", "model.max_positions=130"]
    load_finetune_config(None, [*base, "task.max_source_length=128", "task.max_target_length=128"])
    with pytest.raises(ConfigError, match="task.max_source_length=256 exceeds the model's position table"):
        load_finetune_config(None, base)
    TaskConfig(test=[DataFileConfig(path="x", tgt_lang="de")]).validate()


def test_position_table_of_an_official_checkpoint_is_read_without_loading_it(tmp_path):
    import deltalm
    from deltalm.engine.config import InitConfig
    from deltalm.engine.model_init import init_max_positions, position_limit
    from finetune.config import load_finetune_config

    cfg = DeltaLMConfig.preset(
        "tiny", vocab_size=104, d_model=16, heads=2, ffn=32, encoder_layers=1, decoder_blocks=1
    )
    deltalm.save_official(deltalm.DeltaLM(cfg.replace(max_positions=66)), tmp_path / "small.pt")
    init = InitConfig("official", str(tmp_path / "small.pt"))
    assert init_max_positions(init) == 66
    assert position_limit(cfg, init) == (64, f"max_positions=66 of init.path {tmp_path / 'small.pt'}")
    train = [f"task.train=[{{path: {tmp_path / 't.jsonl'}, src_lang: en, tgt_lang: de}}]", "task.spm_model=s"]
    official = ["init.kind=official", f"init.path={tmp_path / 'small.pt'}", "task.max_target_length=64"]
    with pytest.raises(
        ConfigError, match=r"task.max_source_length=256 exceeds .* \(64 tokens, max_positions=66"
    ):
        load_finetune_config(None, [*train, *official])
    load_finetune_config(None, [*train, *official, "task.max_source_length=64"])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert (
        init_max_positions(InitConfig("official", str(tmp_path / "junk.pt"))) is None
    )  # the loader reports it
