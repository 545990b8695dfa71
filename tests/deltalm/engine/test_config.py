"""Config sections, ds_config building, schedules, FLOPs: pure functions, no processes."""

from __future__ import annotations

import json

import pytest

from deltalm.config_tree import ConfigError
from deltalm.engine.config import TrainingConfig, build_config
from deltalm.engine.ds_config import build_ds_config
from deltalm.engine.flops import device_peak_tflops, mfu, training_flops_per_sample
from deltalm.engine.schedule import LRSchedule
from deltalm.model.config import DeltaLMConfig


def cfg(*overrides: str, path=None) -> TrainingConfig:
    return build_config(TrainingConfig, {}, path, list(overrides))


def test_model_preset_with_overrides():
    c = cfg("model.preset=tiny", "model.d_model=64", "model.heads=2")
    assert (c.model.d_model, c.model.heads, c.model.ffn) == (64, 2, DeltaLMConfig.preset("tiny").ffn)
    assert cfg().model.d_model == 768  # no preset: base defaults


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("batch.nope=1", "unknown config key batch.nope"),
        ("checkpoint.keep_last=1", "checkpoint.keep_last must be >= 2"),
        ("deepspeed.zero_stage=4", "deepspeed.zero_stage must be 0, 1, 2 or 3"),
        ("model.preset=huge", "unknown model preset 'huge'"),
        ("deepspeed.config=nowhere.json", "template not found: nowhere.json"),
        ("schedule.kind=cosine", "schedule.kind: 'cosine' is not one of"),
        ("init.kind=xlmr", "init.path is required"),
    ],
)
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as info:
        cfg(override)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_batch_sizes_computed_and_indivisible_refused():
    c = cfg("batch.global_batch_size=2048", "batch.micro_batch_size=8")
    ds = build_ds_config(c, 32)
    assert (
        ds["train_batch_size"],
        ds["gradient_accumulation_steps"],
        ds["train_micro_batch_size_per_gpu"],
    ) == (
        2048,
        8,
        8,
    )
    with pytest.raises(
        ConfigError, match=r"not divisible by batch.micro_batch_size \(8\) x world size \(3\)"
    ):
        build_ds_config(c, 3)


def test_stage_precision_offload_come_from_the_config_and_clipping_placement():
    c = cfg("deepspeed.config=ds_configs/gpu.json", "deepspeed.zero_stage=2", "deepspeed.precision=bf16")
    ds = build_ds_config(c, 1)
    assert ds["zero_optimization"]["stage"] == 2 and ds["bf16"]["enabled"] and ds["gradient_clipping"] == 1.0
    assert ds["zero_optimization"]["reduce_bucket_size"] == 500_000_000 and "fp16" not in ds
    assert not any(k.startswith("stage3_") for k in ds["zero_optimization"])
    ds = build_ds_config(cfg("deepspeed.config=ds_configs/gpu.json", "deepspeed.precision=fp16"), 1)
    assert ds["fp16"] == {
        "enabled": True,
        "loss_scale": 0,
        "initial_scale_power": 16,
        "loss_scale_window": 1000,
        "hysteresis": 2,
        "min_loss_scale": 1,
    }
    z3 = build_ds_config(cfg("deepspeed.config=ds_configs/gpu.json", "deepspeed.zero_stage=3"), 1)
    assert z3["zero_optimization"]["stage3_prefetch_bucket_size"] == 50_000_000
    assert "allgather_bucket_size" not in z3["zero_optimization"]
    c = cfg("deepspeed.config=ds_configs/gpu.json")
    ds = build_ds_config(c, 1)
    assert "bf16" not in ds and "fp16" not in ds and ds["zero_optimization"] == {"stage": 0}
    assert ds["gradient_clipping"] == 0.0  # ZeRO-0 fp32: the guard clips (it must see the raw norm)
    ds = build_ds_config(cfg("deepspeed.zero_stage=3", "deepspeed.offload=true"), 1)
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    with pytest.raises(ConfigError, match="offload needs"):
        build_ds_config(cfg("deepspeed.zero_stage=0", "deepspeed.offload=true"), 1)


def test_template_stating_training_knobs_is_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train_batch_size": 8}))
    with pytest.raises(ConfigError, match="states 'train_batch_size'; it belongs to the training config"):
        build_ds_config(cfg(f"deepspeed.config={bad}"), 1)
    for owned, name in (
        ({"zero_optimization": {"stage": 2}}, "zero_optimization.stage"),
        ({"bf16": {"enabled": True}}, "bf16.enabled"),
        (
            {"zero_optimization": {"offload_optimizer": {"device": "cpu"}}},
            "zero_optimization.offload_optimizer",
        ),
    ):
        bad.write_text(json.dumps(owned))
        with pytest.raises(ConfigError, match=f"states '{name}'; it belongs to the training config"):
            build_ds_config(cfg(f"deepspeed.config={bad}"), 1)


def test_every_shipped_template_builds():
    from deltalm.engine.config import REPO_ROOT

    for template in sorted((REPO_ROOT / "ds_configs").glob("*.json")):
        ds = build_ds_config(cfg(f"deepspeed.config={template}"), 2)
        assert ds["train_batch_size"] == 2048, template


def test_linear_schedule_golden():
    s = LRSchedule("linear", 1e-4, 10_000, 600_000)
    assert s.lr_at(0) == 0.0
    assert s.lr_at(1) == pytest.approx(1e-8)
    assert s.lr_at(10_000) == pytest.approx(1e-4)
    assert s.lr_at(305_000) == pytest.approx(0.5e-4)
    assert s.lr_at(600_000) == 0.0 and s.lr_at(700_000) == 0.0


def test_inverse_sqrt_schedule_golden():
    s = LRSchedule("inverse_sqrt", 3e-4, 4000, 0)
    assert s.lr_at(2000) == pytest.approx(1.5e-4)
    assert s.lr_at(4000) == pytest.approx(3e-4)
    assert s.lr_at(16_000) == pytest.approx(1.5e-4)


def test_flops_of_the_paper_base_shape():
    # the paper's figure: ~500 GFLOP of training per 512/114 sample for the base model
    assert training_flops_per_sample(DeltaLMConfig.preset("base"), 512, 114) == pytest.approx(
        500.236e9, rel=1e-5
    )
    assert device_peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.0
    assert device_peak_tflops("Tesla V100-SXM2-32GB", "fp16") == 125.0
    assert device_peak_tflops("cpu", "fp32") == 0.0
    assert mfu(1e12, 1.0, 0.0, 1) is None
    assert mfu(500e12, 1.0, 1000.0, 1) == pytest.approx(0.5)
