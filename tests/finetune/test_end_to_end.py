"""Each task on a tiny model end to end: train a few steps on the real engine, validate, evaluate, files."""

from __future__ import annotations

import gzip
import json

import pytest
import torch
import yaml

from finetune.config import load_finetune_config
from finetune.evaluate import main as evaluate_main
from finetune.train import main as train_main
from finetune.train import run as train_run
from tests.finetune.conftest import read_pairs

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]

TINY_MODEL = {
    "preset": "tiny",
    "d_model": 32,
    "heads": 2,
    "ffn": 64,
    "encoder_layers": 2,
    "decoder_blocks": 1,
    "max_positions": 600,
}


def _write_jsonl(path, rows):
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _config(tmp_path, spm_model, task: dict, steps: int = 4) -> str:
    cfg = {
        "run": {"run_dir": str(tmp_path / "run"), "max_steps": steps, "seed": 3},
        "model": TINY_MODEL,
        "optimizer": {"lr": 1e-3},
        "schedule": {"warmup_steps": 2},
        "batch": {"global_batch_size": 8, "micro_batch_size": 4},
        "checkpoint": {"every": 2, "keep_last": 2},
        "logging": {"tensorboard": False},
        "task": {
            "spm_model": str(spm_model),
            "num_sentinels": 16,
            "validate_every": 2,
            "eval_batch_size": 8,
            "beam_size": 2,
            "average_last": 2,
            **task,
        },
    }
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return str(path)


def _check_run(run, expect_metric: str):
    assert (run / "best" / "model.safetensors").is_file() and (run / "best" / "best.json").is_file()
    assert (run / "final" / "model.safetensors").is_file()
    assert json.loads((run / "averaged" / "averaged_from.json").read_text()) == [
        "step_000000002.safetensors",
        "step_000000004.safetensors",
    ]
    # weights/ and checkpoints/ name a step the same way
    from deltalm.engine.checkpoint import TAG_RE

    names = [p.stem for p in (run / "weights").glob("*.safetensors")]
    names += [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step_")]
    assert names and all(TAG_RE.match(name) for name in names), names
    valid = [json.loads(line) for line in (run / "valid.jsonl").read_text().splitlines()]
    assert [v["step"] for v in valid] == [2, 4] and all(expect_metric in v for v in valid)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 4 and all(m["loss"] > 0 for m in metrics)


def test_translation_two_pairs_train_evaluate(tmp_path, spm_model, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for lang in ("de", "fr"):
        _write_jsonl(data / f"train.en-{lang}.jsonl.gz", read_pairs(f"train.en-{lang}.jsonl.gz", 40))
        _write_jsonl(data / f"valid.en-{lang}.jsonl.gz", read_pairs(f"valid.en-{lang}.jsonl.gz", 6))
    task = {
        "name": "translation",
        "train": [
            {"path": str(data / f"train.en-{x}.jsonl.gz"), "src_lang": "en", "tgt_lang": x}
            for x in ("de", "fr")
        ],
        "valid": [
            {"path": str(data / f"valid.en-{x}.jsonl.gz"), "src_lang": "en", "tgt_lang": x}
            for x in ("de", "fr")
        ],
        "test": [
            {"path": str(data / f"valid.en-{x}.jsonl.gz"), "src_lang": "en", "tgt_lang": x}
            for x in ("de", "fr")
        ],
        "max_len_a": 0.0,
        "max_len_b": 8,
    }
    config = _config(tmp_path, spm_model, task)
    # in-process run() (main() tears the process group down; the script itself runs in test_ranks_resume)
    train_run(load_finetune_config(config, ["task.validate_every=2"], task="translation"))
    run = tmp_path / "run"
    _check_run(run, "bleu")
    assert json.loads((run / "best" / "config.json").read_text())["vocabulary"]["lang_tags"] == ["de", "fr"]
    out = tmp_path / "eval"
    assert (
        evaluate_main(["--model", str(run / "averaged"), "--config", config, "--output-dir", str(out)]) == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert [r["pair"] for r in results["results"]] == ["en-de", "en-fr"]
    assert "tok:13a" in results["results"][0]["signatures"]["bleu"]
    assert len((out / "hypotheses.en-de.txt").read_text(encoding="utf-8").splitlines()) == 6
    printed = capsys.readouterr().out
    assert "| en-de | 6 |" in printed and "signature" in printed


@pytest.mark.parametrize("task_name", ["summarization", "question_generation", "data_to_text"])
def test_generation_tasks(tmp_path, spm_model, task_name):
    pairs = read_pairs("train.en-de.jsonl.gz", 40)
    if task_name == "summarization":
        rows = [{"document": p["en"] + " " + p["en"], "summary": p["en"]} for p in pairs]
    elif task_name == "question_generation":
        rows = [{"passage": p["en"], "answer": p["en"].split()[0], "question": p["en"] + "?"} for p in pairs]
    else:
        rows = [{"triples": [["File", "hasLabel", p["en"]]], "text": p["en"]} for p in pairs]
    rows.append({"unexpected": "line"})  # counted, not fatal
    path = tmp_path / "train.jsonl.gz"
    _write_jsonl(path, rows)
    task = {
        "name": task_name,
        "train": [{"path": str(path)}],
        "valid": [{"path": str(path)}],
        "valid_max_examples": 4,
        "max_len_b": 6,
        "max_len_a": 0.0,
    }
    if task_name == "question_generation":  # zero-shot mixing: half of the micro-batches are span corruption
        mono = tmp_path / "en.txt"
        mono.write_text("\n\n".join(p["en"] * 4 for p in pairs), encoding="utf-8")
        task.update(
            zero_shot_ratio=0.5, zero_shot_mono=[{"path": str(mono), "lang": "en"}], zero_shot_input_length=32
        )
    config = _config(tmp_path, spm_model, task)
    train_run(load_finetune_config(config, []))  # in-process (the engine keeps its process group)
    run = tmp_path / "run"
    _check_run(run, "rougeL" if task_name == "summarization" else "bleu")
    report = json.loads((run / "data_report.json").read_text())
    assert report["train"]["counts"]["missing_field"] == 1
    if task_name == "question_generation":
        assert report["zero_shot_mono"]["read"] == 40
    out = tmp_path / "eval"
    assert (
        evaluate_main(
            ["--model", str(run / "best"), "--config", config, "--data", str(path), "--output-dir", str(out)]
        )
        == 0
    )
    scores = json.loads((out / "results.json").read_text())["results"][0]["scores"]
    assert {"bleu", "rouge1", "rouge2", "rougeL"} <= set(scores)
    if task_name == "summarization":  # init from the committed checkpoint of a run directory
        cfg = load_finetune_config(config, ["init.kind=pretrained", f"init.path={run}", "checkpoint.every=0"])
        from deltalm.adapters.pretrained import from_pretrained
        from finetune.data import task_vocabulary
        from finetune.model_init import initial_model

        started = initial_model(cfg.init, cfg.model, task_vocabulary(cfg.task))
        final = from_pretrained(run / "final")
        assert all(
            torch.equal(a, b)
            for a, b in zip(started.state_dict().values(), final.state_dict().values(), strict=True)
        )


def test_bad_config_is_one_line_error(tmp_path, spm_model, capsys):
    config = _config(
        tmp_path,
        spm_model,
        {"name": "translation", "train": [{"path": str(tmp_path / "nope.jsonl")}], "bogus": 1},
    )
    assert train_main(["--config", config]) == 2
    err = capsys.readouterr().err
    assert "unknown config key task.bogus" in err and "Traceback" not in err
    config = _config(
        tmp_path,
        spm_model,
        {"name": "translation", "train": [{"path": str(tmp_path / "nope.jsonl"), "tgt_lang": "de"}]},
    )
    assert train_main(["--config", config]) == 2
    assert "data file not found" in capsys.readouterr().err
    assert train_main(["--config", config, "--set", "deepspeed.zero_stage=3"]) == 2
    assert "ZeRO" in capsys.readouterr().err


def test_finetune_from_a_tagged_export_keeps_its_tag_ids(tmp_path, spm_model):
    """An export saved with tags (fr, de), a task listing de before fr: the run keeps (fr, de), records the order
    as task.lang_tags, and its exports (and a run-directory init) agree."""
    import deltalm
    from deltalm.vocabulary import Vocabulary
    from finetune.data import task_vocabulary
    from finetune.model_init import init_lang_tags

    saved = Vocabulary.from_spm(spm_model, num_sentinels=16).with_lang_tags(["fr", "de"])
    fields = {k: v for k, v in TINY_MODEL.items() if k != "preset"}
    config = deltalm.DeltaLMConfig.preset("tiny", **fields, vocab_size=saved.size)
    torch.manual_seed(5)
    deltalm.save_pretrained(deltalm.DeltaLM(config), tmp_path / "tagged", saved)
    data = tmp_path / "data"
    data.mkdir()
    task = {"name": "translation", "best_metric": "loss", "train": []}
    for lang in ("de", "fr"):
        _write_jsonl(data / f"train.en-{lang}.jsonl.gz", read_pairs(f"train.en-{lang}.jsonl.gz", 16))
        task["train"].append(
            {"path": str(data / f"train.en-{lang}.jsonl.gz"), "src_lang": "en", "tgt_lang": lang}
        )
    path = _config(tmp_path, spm_model, task, steps=2)
    overrides = ["init.kind=pretrained", f"init.path={tmp_path / 'tagged'}", "task.validate_every=0"]
    train_run(load_finetune_config(path, overrides))
    run = tmp_path / "run"
    assert yaml.safe_load((run / "config.yaml").read_text())["task"]["lang_tags"] == ["fr", "de"]
    assert json.loads((run / "final" / "config.json").read_text())["vocabulary"]["lang_tags"] == ["fr", "de"]
    cfg = load_finetune_config(path, ["init.kind=pretrained", f"init.path={run}"])
    assert init_lang_tags(cfg.init) == ("fr", "de")  # a run directory as the next init
    assert task_vocabulary(cfg.task, saved_tags=init_lang_tags(cfg.init)).lang_tags == ("fr", "de")
