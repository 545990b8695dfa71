"""``python -m finetune.evaluate``: generate with beam search, score, write hypotheses, JSON and a table.

Examples::

    python -m finetune.evaluate --model runs/ft/averaged --config ft.yaml --output-dir runs/ft/eval
    python -m finetune.evaluate --model runs/ft/best --task translation \\
        --data test.en-de.jsonl.gz --src-lang en --tgt-lang de --output-dir eval/ --set task.beam_size=4

The model is a ``save_pretrained`` directory (a run's ``best/``, ``final/`` or ``averaged/``); its saved
vocabulary (language tags included) is used. The task section comes from ``--config`` (only ``task`` is
read) and ``--set task.key=value`` overrides; ``--data`` replaces the config's ``task.test`` files. Per
language pair it writes ``hypotheses.<pair>.txt`` (one line per input, input order), then ``results.json``
(scores, sacreBLEU signature, notes such as a missing METEOR) and ``results.md`` (the printed table).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from deltalm.adapters.checkpoint_io import CheckpointError
from deltalm.config_tree import ConfigError, apply_overrides, from_dict, load_yaml, validate_tree
from deltalm.engine.metrics import format_duration
from finetune.config import DataFileConfig, TaskConfig
from finetune.data import load_split, print_report, task_vocabulary
from finetune.decoding import generate
from finetune.metrics import score_all
from finetune.readers import DataError
from finetune.tasks import TaskError


def load_task_config(path: str | None, overrides: list[str], task: str | None) -> TaskConfig:
    data = load_yaml(path) if path else {}
    section = data.get("task", {}) if isinstance(data.get("task", {}), dict) else {}
    tree = apply_overrides({"task": dict(section)}, ([f"task.name={task}"] if task else []) + overrides)
    unknown = sorted(set(tree) - {"task"})
    if unknown:
        raise ConfigError(f"--set {unknown[0]}: evaluate reads only the task section")
    config = from_dict(TaskConfig, tree["task"], prefix="task")
    validate_tree(config)
    return config


def format_table(rows: list[dict], metrics: list[str]) -> str:
    header = ["pair", "n", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["pair"], str(row["n"])] + [
            f"{row['scores'][m]:.2f}" if m in row["scores"] else "n/a" for m in metrics
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _progress_line(pair: str, total: int, started: float, every_s: float = 30.0) -> Callable[[int], None]:
    """A callback printing ``[evaluate] PAIR: N/TOTAL sentences | eta M:SS`` at least every ``every_s``
    seconds and at the end."""
    last = [started]

    def report(done: int) -> None:
        now = time.perf_counter()
        if done < total and now - last[0] < every_s:
            return
        last[0] = now
        eta = (now - started) / max(done, 1) * (total - done)
        print(f"[evaluate] {pair}: {done}/{total} sentences | eta {format_duration(eta)}", flush=True)

    return report


def evaluate(model_dir: str, task: TaskConfig, output_dir: str, device: str = "cpu") -> dict:
    from deltalm.adapters.pretrained import from_pretrained, pretrained_vocabulary

    vocab = pretrained_vocabulary(model_dir)
    if vocab is None:
        if not task.spm_model:
            raise ConfigError(f"{model_dir} has no saved vocabulary; set task.spm_model")
        vocab = task_vocabulary(task)
    missing = [lang for lang in task.languages() if lang not in vocab.lang_tags]
    if missing:
        raise ConfigError(
            f"{model_dir}: the model has no language tag for {missing[0]!r} (has {list(vocab.lang_tags)})"
        )
    model = from_pretrained(model_dir, device=device)
    if model.config.vocab_size != vocab.size:
        raise CheckpointError(
            f"{model_dir}: model vocabulary {model.config.vocab_size} != saved vocabulary {vocab.size}"
        )
    model.eval()
    data, report = load_split(task, task.test, vocab, training=False)
    print_report("test data", report)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for pair, examples in sorted(data.items()):
        started = time.perf_counter()
        local = generate(model, examples, vocab, task, progress=_progress_line(pair, len(examples), started))
        hyps = [local[i] for i in range(len(examples))]
        (out / f"hypotheses.{pair}.txt").write_text(
            "".join(h.replace("\n", " ") + "\n" for h in hyps), encoding="utf-8"
        )
        result = score_all(
            hyps,
            [e.reference for e in examples],
            metrics=task.metrics,
            lang=examples[0].tgt_lang or "en",
            bleu_tokenize=task.bleu_tokenize,
        )
        rows.append(
            {
                "pair": pair,
                "n": len(examples),
                **result.to_dict(),
                "hypotheses": f"hypotheses.{pair}.txt",
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
    metric_names = [
        m for m in ("bleu", "rouge1", "rouge2", "rougeL", "meteor") if any(m in r["scores"] for r in rows)
    ]
    table = format_table(rows, metric_names)
    results = {
        "model": str(model_dir),
        "task": task.name,
        "beam_size": task.beam_size,
        "length_rule": list(task.length_rule),
        "length_penalty": task.length_penalty,
        "data_report": report.to_dict(),
        "results": rows,
    }
    (out / "results.json").write_text(
        json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out / "results.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    for row in rows:
        for name, signature in row["signatures"].items():
            print(f"{row['pair']} {name} signature: {signature}")
        for note in row["notes"]:
            print(f"{row['pair']} note: {note}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="save_pretrained directory (best/, final/, averaged/)")
    parser.add_argument("--config", help="YAML with a task section")
    parser.add_argument(
        "--task", choices=["translation", "summarization", "question_generation", "data_to_text"]
    )
    parser.add_argument(
        "--data", action="append", default=[], help="test file (replaces task.test; repeatable)"
    )
    parser.add_argument("--src-lang", default="")
    parser.add_argument("--tgt-lang", default="")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="task.KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        task = load_task_config(args.config, args.set, args.task)
        if args.data:
            task.test = [
                DataFileConfig(path=p, src_lang=args.src_lang, tgt_lang=args.tgt_lang) for p in args.data
            ]
        if not task.test:
            raise ConfigError("nothing to evaluate: give --data or task.test in the config")
        with torch.no_grad():
            evaluate(args.model, task, args.output_dir, device=args.device)
    except (ConfigError, DataError, TaskError, CheckpointError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
