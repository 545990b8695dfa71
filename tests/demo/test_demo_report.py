"""The demo report from a run directory written here (no training): smoothing, validation series, the
BLEU sentence true to the numbers, the TensorBoard pointer, the plot."""

from __future__ import annotations

import json
import math

import pytest

from deltalm.demo import BUDGETS
from deltalm.demo_report import bleu_verdict, ema, validation_series, write_report


def test_ema_is_debiased_and_smooths():
    assert ema([5.0, 5.0, 5.0], 0.9) == pytest.approx([5.0, 5.0, 5.0])
    noisy = [1.0 if i % 2 else -1.0 for i in range(200)]
    assert max(abs(v) for v in ema(noisy, 0.95)[50:]) < 0.1


def write_run(root, test_bleu: dict[str, float]):
    budget = {**json.loads(json.dumps(BUDGETS["small"].__dict__)), "pairs": ["de", "fr"]}
    (root / "budget.json").write_text(json.dumps(budget))
    (root / "pretrain").mkdir()
    (root / "pretrain" / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 5 + math.sin(s)}) + "\n" for s in range(1, 101))
        + json.dumps({"step": 101, "loss": "nan"})
        + "\n"
    )
    run = root / "finetune" / "run"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 4.0}) + "\n" for s in range(1, 41))
    )
    (run / "valid.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "step": s,
                    "pairs": {"en-de": {"loss": 3.0, "bleu": s / 10}, "en-fr": {"loss": 2.9, "bleu": s / 8}},
                    "loss": 2.95,
                    "bleu": s / 9,
                    "best": True,
                }
            )
            + "\n"
            for s in (20, 40)
        )
    )
    (root / "encoder").mkdir()
    (root / "encoder" / "DONE").write_text(
        json.dumps({"losses": [7.0, 6.0, 5.5], "last_loss": 5.5, "first_loss": 7.0})
    )
    (root / "evaluate").mkdir()
    rows = [{"pair": p, "n": 500, "scores": {"bleu": b}} for p, b in test_bleu.items()]
    (root / "evaluate" / "results.json").write_text(json.dumps({"results": rows}))


def test_report_text_is_true_to_the_numbers_and_points_to_tensorboard(tmp_path):
    write_run(tmp_path, {"en-de": 2.75, "en-fr": 3.37})
    paths = write_report(tmp_path)
    text = paths["report"].read_text()
    assert "near zero" not in text and "en-fr 3.37: above zero" in text
    assert "| en-fr | 500 | 3.37 |" in text
    assert "best validation BLEU 4.44 (mean over pairs) at step 40" in text
    assert f"tensorboard --logdir {tmp_path}" in text
    png = paths["plot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_validation_series_and_near_zero_verdict():
    valid = [
        {"step": 5, "pairs": {"en-de": {"loss": 3.0, "bleu": 0.1}}},
        {"step": 9, "pairs": {"en-de": {"loss": "nan"}}},
    ]
    assert validation_series(valid, "bleu") == {"en-de": ([5], [0.1])}
    assert validation_series(valid, "loss") == {"en-de": ([5], [3.0])}
    verdict = bleu_verdict({"en-de": 0.4}, json.loads(json.dumps(BUDGETS["smoke"].__dict__)))
    assert verdict.startswith("Test BLEU en-de 0.40: near zero")
