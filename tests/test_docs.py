"""Every default a page of docs/ states in a YAML block is the code's default, and every field is stated."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED = ("docs/pretrain_data.md", "docs/finetune.md", "docs/generation.md")


def section_defaults() -> dict[str, dict]:
    """Top-level YAML key -> the code's defaults for that section."""
    from deltalm.generation.options import GenerationOptions
    from finetune.config import TaskConfig
    from pretrain.data_config import PretrainDataConfig

    return {
        "data": dataclasses.asdict(PretrainDataConfig()),
        "task": dataclasses.asdict(TaskConfig()),
        "generation": dataclasses.asdict(GenerationOptions()),
    }


def yaml_blocks(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@pytest.mark.parametrize("page", DOCUMENTED)
def test_documented_defaults_equal_the_code(page: str):
    blocks = yaml_blocks(ROOT / page)
    assert blocks, f"{page} documents no defaults in a yaml block"
    defaults = section_defaults()
    for block in blocks:
        for section, documented in block.items():
            assert section in defaults, f"{page}: yaml block for unknown section {section!r}"
            code = defaults[section]
            assert set(documented) == set(code), (
                f"{page} {section}: documented but not in the code {sorted(set(documented) - set(code))}, "
                f"in the code but not documented {sorted(set(code) - set(documented))}"
            )
            for key, value in documented.items():
                assert _plain(code[key]) == value, (
                    f"{page}: {section}.{key} documented {value!r}, code {code[key]!r}"
                )
