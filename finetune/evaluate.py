"""``python -m finetune.evaluate``: generate with beam search, score, write hypotheses, JSON and a table.

Examples::

    python -m finetune.evaluate --model runs/ft/averaged --config ft.yaml --output-dir runs/ft/eval
    python -m finetune.evaluate --model runs/ft/best --task translation \\
        --data test.en-de.jsonl.gz --src-lang en --tgt-lang de --output-dir eval/ --set task.beam_size=4

The model is a ``save_pretrained`` directory (a run's ``best/``, ``final/`` or ``averaged/``); its saved
vocabulary (language tags included) is used. The task section comes from ``--config`` (only ``task`` is
read) and ``--set task.key=value`` overrides; ``--data`` replaces the config's ``task.test`` files. Per
language pair it writes ``hypotheses.<pair>.txt`` (one line per test line, input order: per ``.src`` line of an
aligned test set, per record of JSONL/TSV; a record whose reference is empty is translated but left out of
scoring, an empty source or an unreadable aligned line gets an empty line; all counted in ``unscored``), then ``results.json`` (scores over the ``n`` scored lines, sacreBLEU signature, notes such as a
missing METEOR) and ``results.md`` (the printed table).
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
from deltalm.text_lines import join_lines
from finetune.config import DataFileConfig, TaskConfig
from finetune.data import load_split, print_report, task_vocabulary
from finetune.decoding import generate
from finetune.metrics import score_all
from finetune.readers import DataError, aligned_paths, detect_format, line_count
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


UNSCORED = {
    "empty_reference": "with an empty reference: hypothesis written",
    "empty_source": "with an empty source: empty hypothesis written",
    "unreadable": "the reader could not use (see the data report): empty hypothesis written",
}


def pair_hypotheses(
    model, examples: list, vocab, task: TaskConfig, progress: Callable[[int], None] | None = None
) -> tuple[list[str], dict[str, int]]:
    """One hypothesis per example, in order (an empty-source line gets an empty one), and the count of unscored
    examples by reason (``empty_reference``, ``empty_source``); ``progress`` gets the sentences done so far."""
    todo = [i for i, e in enumerate(examples) if e.unscored != "empty_source"]
    local = generate(model, [examples[i] for i in todo], vocab, task, progress=progress) if todo else {}
    hyps = [""] * len(examples)
    for k, i in enumerate(todo):
        hyps[i] = local[k]
    unscored: dict[str, int] = {}
    for e in examples:
        if e.unscored:
            unscored[e.unscored] = unscored.get(e.unscored, 0) + 1
    return hyps, unscored


def hypothesis_lines(
    task: TaskConfig, pair: str, examples: list, hyps: list[str]
) -> tuple[list[str], dict[str, int]]:
    """The lines of ``hypotheses.<pair>.txt``: for an aligned test file one per line of its source file (a line
    the reader could not use, e.g. invalid UTF-8, gets an empty line: counted as ``unreadable``), otherwise one
    per example. Examples come file by file, in ``task.test`` order."""
    out: list[str] = []
    missing = 0
    k = 0
    for file in (f for f in task.test if f.pair == pair):
        fmt = detect_format(file.path) if file.format == "auto" else file.format
        path = aligned_paths(file.path)[0] if fmt == "aligned" else Path(file.path)
        prefix = f"{path}:"
        start = k
        while k < len(examples) and examples[k].origin.startswith(prefix):
            k += 1
        if fmt != "aligned":
            out += hyps[start:k]
            continue
        by_line = {int(examples[i].origin[len(prefix) :]): hyps[i] for i in range(start, k)}
        total = line_count(path)
        out += [by_line.get(n, "") for n in range(1, total + 1)]
        missing += total - len(by_line)
    out += hyps[k:]  # (no file matched: keep every hypothesis)
    return out, ({"unreadable": missing} if missing else {})


def evaluate(model_dir: str, task: TaskConfig, output_dir: str, device: str = "cpu") -> dict:
    from deltalm.adapters.pretrained import from_pretrained, pretrained_vocabulary

    task.check_bleu_tokenizers(task.test)
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
    data, report = load_split(task, task.test, vocab, training=False, keep_unscored=True)
    print_report("test data", report)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for pair, examples in sorted(data.items()):
        started = time.perf_counter()
        to_generate = sum(e.unscored != "empty_source" for e in examples)
        progress = _progress_line(pair, to_generate, started)
        hyps, unscored = pair_hypotheses(model, examples, vocab, task, progress)
        lines, unreadable = hypothesis_lines(task, pair, examples, hyps)
        unscored.update(unreadable)
        (out / f"hypotheses.{pair}.txt").write_text(join_lines(lines), encoding="utf-8")
        scored = [i for i, e in enumerate(examples) if not e.unscored]
        if not scored:
            raise DataError(f"{pair}: every test line has an empty source or reference; nothing to score")
        for reason, n in unscored.items():
            what = UNSCORED[reason]
            print(f"[evaluate] {pair}: {n} line(s) {what}, not scored")
        result = score_all(
            [hyps[i] for i in scored],
            [examples[i].reference for i in scored],
            metrics=task.metrics,
            lang=examples[0].tgt_lang or "en",
            bleu_tokenize=task.bleu_tokenize,
        )
        rows.append(
            {
                "pair": pair,
                "n": len(scored),
                "lines": len(lines),
                "unscored": unscored,
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
        task.check_bleu_tokenizers(task.test)
        with torch.no_grad():
            evaluate(args.model, task, args.output_dir, device=args.device)
    except (ConfigError, DataError, TaskError, CheckpointError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
