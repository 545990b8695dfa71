"""Fine-tuning config checks that need the model's architecture."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from deltalm.config_tree import ConfigError
from deltalm.model.config import DeltaLMConfig
from finetune.trainer import check_length_limits


def test_length_limits_beyond_the_position_table_are_refused():
    small = DeltaLMConfig.preset("tiny", max_positions=130)  # 128 tokens
    ok = SimpleNamespace(name="translation", max_source_length=128, max_target_length=128)
    check_length_limits(ok, small)
    too_long = SimpleNamespace(
        name="translation", max_source_length=None, max_target_length=128
    )  # default 256
    with pytest.raises(ConfigError, match=r"task.max_source_length=256 exceeds .* \(128 tokens\)"):
        check_length_limits(too_long, small)
