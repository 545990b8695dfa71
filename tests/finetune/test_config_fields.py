"""Every field of the pre-training and fine-tuning config trees, given an invalid value, is refused by the entry
point in one line (exit 2, no traceback) before any process group or DeepSpeed engine starts.

Each field gets a value of the wrong type and, where the field has a range or a cross-field limit, a value of
the right type out of that range. The entry points' ``main`` runs in process with the step that would start
the process group replaced by a failure, so an accepted bad value fails the test. A few cases also run as
real commands.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml

from finetune.config import FinetuneConfig
from pretrain.config import PretrainConfig
from tests.finetune.conftest import PARALLEL

REPO = Path(__file__).resolve().parents[2]


def tree_fields(cls: type, prefix: str = "") -> dict[str, typing.Any]:
    """``{dotted key: type}`` of every leaf field of a config dataclass tree."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(tree_fields(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = hints[f.name]
    return out


def wrong_type(tp) -> str:
    """A ``--set`` value (YAML) of the wrong type for ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, type(int | None)):
        tp = next(a for a in args if a is not type(None))
        origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "not-a-choice"
    if origin in (list, tuple):
        return "5"
    if tp is str:
        return "[1, 2]"
    if tp is bool:
        return "maybe"
    return "abc"  # int, float


# Values of the right type that are out of range or break a cross-field limit: (key, value, message part).
# The pre-training base is --preset tiny (position table 128 tokens); the fine-tuning base uses a tiny model
# with max_positions 130 and 100-token task limits.
ENGINE_RANGES = [
    ("run.run_dir", "", "run.run_dir must not be empty"),
    ("run.seed", "-1", "run.seed"),
    ("run.max_steps", "0", "run.max_steps"),
    ("run.log_every", "0", "run.log_every"),
    ("model.vocab_size", "0", "model.vocab_size"),
    ("model.pad_vocab_to_multiple", "0", "model.pad_vocab_to_multiple"),
    ("model.d_model", "31", "model.d_model"),
    ("model.heads", "0", "model.heads"),
    ("model.ffn", "0", "model.ffn"),
    ("model.encoder_layers", "0", "model.encoder_layers"),
    ("model.decoder_blocks", "0", "model.decoder_blocks"),
    ("model.max_positions", "2", "model.max_positions"),
    ("model.max_positions", "60", "exceeds the model's position table"),
    ("model.dropout", "1.0", "model.dropout"),
    ("model.attention_dropout", "-0.1", "model.attention_dropout"),
    ("model.activation_dropout", "1.5", "model.activation_dropout"),
    ("model.layer_norm_eps", "0", "model.layer_norm_eps"),
    ("model.pad_id", "0", "model.pad_id"),
    ("model.eos_id", "5", "model.eos_id"),
    ("model.loss_chunk_size", "0", "model.loss_chunk_size"),
    ("init.kind", "official", "init.path is required"),
    ("init.path", "/x", "init.path is set but init.kind is 'none'"),
    ("optimizer.lr", "0", "optimizer.lr"),
    ("optimizer.betas", "[0.9, 1.0]", "optimizer.betas"),
    ("optimizer.eps", "0", "optimizer.eps"),
    ("optimizer.weight_decay", "-1", "optimizer.weight_decay"),
    ("optimizer.grad_clip", "-1", "optimizer.grad_clip"),
    ("schedule.warmup_steps", "-1", "schedule.warmup_steps"),
    ("schedule.total_steps", "-1", "schedule.total_steps"),
    ("batch.global_batch_size", "0", "batch.global_batch_size"),
    ("batch.global_batch_size", "6", "batch.global_batch_size (6) is not divisible"),
    ("batch.micro_batch_size", "0", "batch.micro_batch_size"),
    ("checkpoint.every", "-1", "checkpoint.every"),
    ("checkpoint.keep_last", "1", "checkpoint.keep_last"),
    ("deepspeed.config", "/nonexistent.json", "deepspeed.config"),
    ("deepspeed.zero_stage", "5", "deepspeed.zero_stage"),
    ("deepspeed.timeout_s", "0", "deepspeed.timeout_s"),
    (
        "deepspeed.offload",
        "true",
        "deepspeed.offload needs deepspeed.zero_stage >= 1",
    ),  # the CPU template: ZeRO-0
    ("logging.progress_every_s", "-1", "logging.progress_every_s"),
    ("logging.peak_tflops", "-1", "logging.peak_tflops"),
    ("nonfinite.max_consecutive", "0", "nonfinite.max_consecutive"),
    ("nonfinite.inject_at_steps", "[0]", "nonfinite.inject_at_steps"),
]
PRETRAIN_RANGES = [
    ("data.data_dirs", "['']", "data.data_dirs"),
    ("data.data_dirs", "[/nonexistent]", "/nonexistent/manifest.json"),
    ("data.translation_ratio", "1.5", "data.translation_ratio"),
    ("data.temperature", "0", "data.temperature"),
    ("data.input_length", "3", "data.input_length"),
    ("data.input_length", "200", "data.input_length=200 exceeds the model's position table (128 tokens"),
    ("data.noise_density", "1.0", "data.noise_density"),
    ("data.noise_density", "0.9", "data.input_length=64 makes"),
    ("data.mean_span", "0.5", "data.mean_span"),
    ("data.translation_input_length", "3", "data.translation_input_length"),
    ("data.translation_input_length", "129", "data.translation_input_length=129 exceeds"),
    ("data.translation_noise_density", "0", "data.translation_noise_density"),
    ("data.translation_mean_span", "0", "data.translation_mean_span"),
    ("data.prefetch", "-1", "data.prefetch"),
    ("data.release_pages_every", "-1", "data.release_pages_every"),
    ("data.max_open_shards", "0", "data.max_open_shards"),
    ("data.spm_model", "/nonexistent.model", "data.spm_model"),
]
FINETUNE_RANGES = [
    ("task.spm_model", "''", "task.spm_model"),
    ("task.spm_model", "/nonexistent.model", "task.spm_model"),
    ("task.num_sentinels", "0", "task.num_sentinels"),
    ("task.train", "[]", "task.train"),
    ("task.train", "[{path: ''}]", "path must not be empty"),
    ("task.train", "[{path: /nonexistent.jsonl, tgt_lang: de}]", "/nonexistent.jsonl"),
    ("task.valid", "[{path: ''}]", "path must not be empty"),
    ("task.test", "[{path: ''}]", "path must not be empty"),
    ("task.test", "[{path: t.jsonl, tgt_lang: de, format: xml}]", "task.test[0].format"),
    ("task.max_source_length", "2", "task.max_source_length"),
    ("task.max_source_length", "129", "task.max_source_length=129 exceeds the model's position table"),
    ("task.max_target_length", "0", "task.max_target_length"),
    ("task.max_target_length", "129", "task.max_target_length=129 exceeds"),
    ("task.temperature_start", "0", "task.temperature_start"),
    ("task.temperature_end", "-1", "task.temperature_end"),
    ("task.temperature_rise_steps", "-1", "task.temperature_rise_steps"),
    ("task.zero_shot_ratio", "1.0", "task.zero_shot_ratio"),
    ("task.zero_shot_ratio", "0.5", "task.zero_shot_mono"),
    ("task.zero_shot_mono", "[{path: m.txt}]", "task.zero_shot_mono"),
    ("task.zero_shot_input_length", "4", "task.zero_shot_input_length"),
    ("task.zero_shot_noise_density", "1.0", "task.zero_shot_noise_density"),
    ("task.zero_shot_mean_span", "0", "task.zero_shot_mean_span"),
    ("task.label_smoothing", "1.0", "task.label_smoothing"),
    ("task.validate_every", "-1", "task.validate_every"),
    ("task.valid_max_examples", "-1", "valid_max_examples"),
    ("task.best_metric", "rouge9", "task.best_metric"),
    ("task.best_metric", "rougeL", "translation is scored with BLEU only"),
    ("task.beam_size", "0", "task.beam_size"),
    ("task.max_len_a", "-2", "task.max_len_a"),
    ("task.max_len_b", "5", "task.max_len_a and task.max_len_b"),
    ("task.min_len", "-1", "task.min_len"),
    ("task.length_penalty", ".nan", "task.length_penalty"),
    ("task.no_repeat_ngram_size", "-1", "task.no_repeat_ngram_size"),
    ("task.eval_batch_size", "0", "task.eval_batch_size"),
    ("task.bleu_tokenize", "nope", "task.bleu_tokenize"),
    ("task.average_last", "0", "task.average_last"),
    ("task.lang_tags", "[de, de]", "task.lang_tags"),
    ("task.lang_tags", "[fr]", "task.lang_tags"),
]
# Fields where every value of the right type is valid (only the wrong-type case applies).
ANY_VALUE = {
    "model.activation_checkpointing", "model.embedding_layer_norm", "model.fused_qkv", "model.loss_fused",
    "model.cpu_packed_linear", "model.separate_decoder_positions", "model.activation", "model.attention_backend", "optimizer.fused",
    "schedule.kind", "checkpoint.dir", "checkpoint.resume", "checkpoint.save_final", "deepspeed.precision",
    "deepspeed.cpu_shm_comm", "logging.tensorboard", "data.translation_directions",
    "data.drop_sentinels", "data.verify_sha256", "task.name", "task.tag_source",
}  # fmt: skip
PRETRAIN_FIELDS = tree_fields(PretrainConfig)
FINETUNE_FIELDS = tree_fields(FinetuneConfig)


def test_every_field_has_an_invalid_value_case():
    """A field added to either tree must be classified here (a range case, or valid for any value)."""
    covered = {key for key, _, _ in ENGINE_RANGES + PRETRAIN_RANGES + FINETUNE_RANGES} | ANY_VALUE
    assert set(PRETRAIN_FIELDS) - covered == set()
    assert set(FINETUNE_FIELDS) - covered == set()


class Accepted(Exception):
    """The entry point got past its checks: the bad value was accepted."""


def refuse_start(*args, **kwargs):
    raise Accepted


@pytest.fixture(scope="module")
def pretrain_base(tmp_path_factory) -> list[str]:
    from deltalm.vocabulary import Vocabulary
    from tests.pretrain.corpus import random_docs, write_dataset

    vocab = Vocabulary(spm_size=500)
    root = tmp_path_factory.mktemp("pretrain_fields")
    rng = np.random.default_rng(0)
    write_dataset(root / "data", vocab, mono={"de": random_docs(rng, 20, 30, 80, 4, 400)})
    return ["--preset", "tiny", "--set", f"data.data_dirs=[{root / 'data'}]", "--set",
            f"model.vocab_size={vocab.pretrain_size}", "--set", "data.translation_ratio=0",
            "--set", f"run.run_dir={root / 'run'}"]  # fmt: skip


@pytest.fixture(scope="module")
def finetune_base(tmp_path_factory, spm_model) -> list[str]:
    root = tmp_path_factory.mktemp("finetune_fields")
    config = {
        "run": {"run_dir": str(root / "run"), "max_steps": 2},
        "model": {"preset": "tiny", "d_model": 32, "heads": 2, "ffn": 64, "encoder_layers": 1,
                  "decoder_blocks": 1, "max_positions": 130},
        "batch": {"global_batch_size": 4, "micro_batch_size": 2},
        "logging": {"tensorboard": False},
        "task": {"spm_model": str(spm_model), "num_sentinels": 16, "max_source_length": 100,
                 "max_target_length": 100,
                 "train": [{"path": str(PARALLEL / "train.en-de.jsonl.gz"), "src_lang": "en", "tgt_lang": "de"}]},
    }  # fmt: skip
    path = root / "ft.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return ["--config", str(path)]


def run_pretrain(argv: list[str], monkeypatch) -> int:
    import pretrain.train

    monkeypatch.setattr(pretrain.train, "train", refuse_start)
    return pretrain.train.main(argv)


def run_finetune(argv: list[str], monkeypatch) -> int:
    import finetune.train

    monkeypatch.setattr(finetune.train, "init_process_group", refuse_start)
    return finetune.train.main(argv)


def check_refused(code: int, err: str, message: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_bases_are_accepted(pretrain_base, finetune_base, monkeypatch):
    with pytest.raises(Accepted):
        run_pretrain(pretrain_base, monkeypatch)
    with pytest.raises(Accepted):
        run_finetune(finetune_base, monkeypatch)


def _cases(fields: dict, ranges: list) -> list:
    return [pytest.param(key, wrong_type(tp), key, id=f"{key}=type") for key, tp in fields.items()] + [
        pytest.param(key, value, message, id=f"{key}={value}") for key, value, message in ranges
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"), _cases(PRETRAIN_FIELDS, ENGINE_RANGES + PRETRAIN_RANGES)
)
def test_pretrain_field_invalid_value_is_one_line(pretrain_base, monkeypatch, capsys, key, value, message):
    extra = ["--set", "data.translation_ratio=0.5"] if key.startswith("data.translation_") else []
    code = run_pretrain([*pretrain_base, *extra, "--set", f"{key}={value}"], monkeypatch)
    check_refused(code, capsys.readouterr().err, message)


@pytest.mark.parametrize(
    ("key", "value", "message"), _cases(FINETUNE_FIELDS, ENGINE_RANGES + FINETUNE_RANGES)
)
def test_finetune_field_invalid_value_is_one_line(finetune_base, monkeypatch, capsys, key, value, message):
    if key == "model.max_positions" and value == "60":
        message = "task.max_source_length=100 exceeds the model's position table (58 tokens"
    if f"{key}={value}" == "batch.global_batch_size=6":  # the fine-tuning base has micro-batches of 2
        value = "5"
        message = "batch.global_batch_size (5) is not divisible"
    code = run_finetune([*finetune_base, "--set", f"{key}={value}"], monkeypatch)
    check_refused(code, capsys.readouterr().err, message)


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("pretrain/train.py", ["--preset", "tiny", "--set", "data.input_length=200"],
         "error: data.input_length=200 exceeds the model's position table (128 tokens"),
        ("finetune/train.py", ["--set", "task.max_target_length=129"], "error: task.max_target_length=129 exceeds"),
    ],
)  # fmt: skip
def test_real_commands_refuse_before_any_work(tmp_path, finetune_base, script, args, message):
    argv = [*finetune_base, *args] if script.startswith("finetune") else args
    proc = subprocess.run(
        [sys.executable, script, *argv], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={"DS_ACCELERATOR": "cpu", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert proc.stdout == ""


def test_pretrain_refuses_more_noise_spans_than_the_dataset_has_sentinels(tmp_path, monkeypatch, capsys):
    from deltalm.vocabulary import Vocabulary
    from tests.pretrain.corpus import random_docs, write_dataset

    vocab = Vocabulary(spm_size=500, num_sentinels=4)
    write_dataset(
        tmp_path / "data", vocab, mono={"de": random_docs(np.random.default_rng(1), 20, 30, 80, 4, 400)}
    )
    base = ["--preset", "tiny", "--set", f"data.data_dirs=[{tmp_path / 'data'}]", "--set",
            f"model.vocab_size={vocab.pretrain_size}", "--set", "data.translation_ratio=0"]  # fmt: skip
    with pytest.raises(Accepted):  # 64 tokens: 4 spans
        run_pretrain(base, monkeypatch)
    code = run_pretrain([*base, "--set", "data.input_length=128"], monkeypatch)
    check_refused(code, capsys.readouterr().err, "data.input_length=128: 7 noise spans need more sentinels")
