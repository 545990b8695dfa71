"""Two CPU ranks with a stop and resume reproduce the one-rank run step for step (slow: multi-process)."""

from __future__ import annotations

import json

import pytest

from finetune.config import load_finetune_config
from finetune.trainer import run as train_run
from tests.deltalm.engine import ranks
from tests.finetune.conftest import read_pairs
from tests.finetune.test_end_to_end import REPO, _config, _write_jsonl


def _launch(world: int, args: list[str]) -> list[tuple[int, str]]:
    """``world`` CPU ranks of finetune/train.py, started the way the deepspeed launcher does."""
    return [
        (code, err)
        for code, _, err in ranks.run(world, args, timeout=300, script=REPO / "finetune" / "train.py")
    ]


@pytest.mark.slow
def test_two_ranks_with_resume_match_one_rank(tmp_path, spm_model):
    path = tmp_path / "train.en-de.jsonl.gz"
    _write_jsonl(path, read_pairs("train.en-de.jsonl.gz", 48))
    task = {
        "name": "translation",
        "train": [{"path": str(path), "src_lang": "en", "tgt_lang": "de"}],
        "valid": [{"path": str(path), "src_lang": "en", "tgt_lang": "de"}],
        "valid_max_examples": 5,
        "temperature_rise_steps": 4,
        "max_len_a": 0.0,
        "max_len_b": 5,
    }
    one = tmp_path / "one"
    one.mkdir()
    config = _config(one, spm_model, task)
    train_run(load_finetune_config(config, ["model.dropout=0.1"]))
    two = tmp_path / "two"
    two.mkdir()
    config2 = _config(two, spm_model, task)
    for steps in (2, 4):  # stop after step 2, then resume to 4
        results = _launch(
            2, ["--config", config2, "--set", f"run.max_steps={steps}", "--set", "model.dropout=0.1"]
        )
        assert all(rc == 0 for rc, _ in results), results[0][1][-3000:]
    assert "resumed from" in results[0][1]

    def losses(run_dir):
        return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    assert losses(one / "run") == pytest.approx(losses(two / "run"), rel=1e-4)
    valid_one = [json.loads(x) for x in (one / "run" / "valid.jsonl").read_text().splitlines()]
    valid_two = [json.loads(x) for x in (two / "run" / "valid.jsonl").read_text().splitlines()]
    assert [v["step"] for v in valid_two] == [2, 4]
    assert [v["loss"] for v in valid_one] == pytest.approx([v["loss"] for v in valid_two], rel=1e-4)
    assert (two / "run" / "averaged" / "model.safetensors").is_file()
