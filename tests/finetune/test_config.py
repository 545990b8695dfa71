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
