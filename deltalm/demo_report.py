"""The demo's report: ``report.md`` (what ran, losses, BLEU, timings) and ``report.png`` (loss curves + BLEU bars),
built only from files the stages wrote (metrics.jsonl, valid.jsonl, results.json, DONE markers)."""

from __future__ import annotations

import json
import math
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _series(records: list[dict], key: str = "loss") -> tuple[list[int], list[float]]:
    steps, values = [], []
    for r in records:
        value = r.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            steps.append(int(r["step"]))
            values.append(float(value))
    return steps, values


def _done(run_dir: Path, stage: str) -> dict:
    path = run_dir / stage / "DONE"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def plot(run_dir: Path, curves: dict[str, tuple[list[int], list[float]]], bleu: dict[str, float]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [2, 1]})
    for label, (steps, values) in curves.items():
        if steps:
            left.plot(steps, values, label=label)
    left.set_xlabel("step")
    left.set_ylabel("loss (per target token)")
    left.set_title("training loss")
    left.legend()
    left.grid(alpha=0.3)
    names = list(bleu)
    right.bar(names, [bleu[n] for n in names], color="tab:green")
    for i, name in enumerate(names):
        right.text(i, bleu[name], f"{bleu[name]:.2f}", ha="center", va="bottom")
    right.set_ylim(0, max([1.0, *bleu.values()]) * 1.2)
    right.set_ylabel("sacreBLEU")
    right.set_title("held-out test")
    fig.tight_layout()
    path = run_dir / "report.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def comparison_lines(comparison: list[dict]) -> list[str]:
    """The pre-trained vs random-init table and one sentence per pair saying what the difference is."""
    if not comparison:
        return []
    lines = [
        "",
        "## Pre-trained vs random init (same fine-tuning budget)",
        "",
        "| pair | sentences | pre-trained | random init | difference | paired bootstrap p | significant (p < 0.05) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in comparison:
        p = "n/a (equal)" if row["p_value"] is None else f"{row['p_value']:.3f}"
        lines.append(
            f"| {row['pair']} | {row['n']} | {row['pretrained']:.2f} | {row['random']:.2f} | "
            f"{row['difference']:+.2f} | {p} | {'yes' if row['significant'] else 'no'} |"
        )
    lines.append("")
    for row in comparison:
        better = "higher" if row["difference"] > 0 else "lower" if row["difference"] < 0 else "the same"
        verdict = "significant" if row["significant"] else "not significant"
        lines.append(
            f"- {row['pair']}: the pre-trained model's BLEU is {better} than random init's by "
            f"{abs(row['difference']):.2f}; the difference is {verdict} (sacreBLEU paired bootstrap, 1,000 "
            f"resamples, p = {'n/a' if row['p_value'] is None else row['p_value']})."
        )
    return lines


def write_report(run_dir: str | Path) -> dict[str, Path]:
    run_dir = Path(run_dir)
    budget = json.loads((run_dir / "budget.json").read_text(encoding="utf-8"))
    pretrain = read_jsonl(run_dir / "pretrain" / "metrics.jsonl")
    finetune = read_jsonl(run_dir / "finetune" / "run" / "metrics.jsonl")
    finetune_random = read_jsonl(run_dir / "finetune" / "random_run" / "metrics.jsonl")
    comparison = _done(run_dir, "evaluate").get("comparison", [])
    valid = read_jsonl(run_dir / "finetune" / "run" / "valid.jsonl")
    encoder = _done(run_dir, "encoder")
    results_file = run_dir / "evaluate" / "results.json"
    results = (
        json.loads(results_file.read_text(encoding="utf-8")) if results_file.is_file() else {"results": []}
    )
    bleu = {
        row["pair"]: float(row["scores"]["bleu"]) for row in results["results"] if "bleu" in row["scores"]
    }
    curves = {
        "encoder MLM (XLM-R stand-in)": (
            list(range(1, len(encoder.get("losses", [])) + 1)),
            encoder.get("losses", []),
        ),
        "DeltaLM pre-training": _series(pretrain),
        "fine-tuning En→X": _series(finetune),
        "fine-tuning En→X, random init (control)": _series(finetune_random),
    }
    png = plot(run_dir, curves, bleu)

    def first_last(records: list[dict]) -> str:
        _, values = _series(records)
        return f"{values[0]:.3f} → {values[-1]:.3f}" if values else "n/a"

    lines = [
        "# DeltaLM demo report",
        "",
        f"Budget **{budget['name']}** on the bundled gettext sample corpus (`data_prep/sample_corpus/`).",
        "",
        "![loss curves and BLEU](report.png)",
        "",
        "## What ran",
        "",
        f"- SentencePiece: {budget['spm_vocab']} pieces on mono {', '.join(budget['mono_langs'])}.",
        f"- Encoder: a tiny XLM-R (d {budget.get('d_model', 64)}, {budget.get('layers', 2)} layers) trained with masked-LM for {budget['encoder_steps']} steps "
        f"on the same text (MLM loss {encoder.get('first_loss', 'n/a')} → "
        f"{encoder['last_loss']:.3f}). This stands in for InfoXLM, which cannot be downloaded here."
        if encoder.get("last_loss") is not None
        else "- Encoder: n/a",
        f"- DeltaLM pre-training from that encoder (`init.kind=xlmr`), span corruption + translation span "
        f"corruption, {budget['pretrain_steps']} steps: loss {first_last(pretrain)}.",
        "- Export of the newest committed checkpoint to safetensors, verified (tensors bit-equal, logits equal).",
        f"- Fine-tuning En→{'/'.join(p.capitalize() for p in budget['pairs'])} from the export, "
        f"{budget['finetune_steps']} steps"
        + (
            f" on {budget['finetune_pairs']:,} training pairs per direction"
            if budget.get("finetune_pairs")
            else ""
        )
        + f": loss {first_last(finetune)}; {len(valid)} validations. The control, the same fine-tuning from "
        f"random init (`init.kind=none`, same shape, data, steps, schedule and seed): loss {first_last(finetune_random)}.",
        f"- Evaluation: sacreBLEU (13a, detokenized, case-sensitive) on the held-out test split, beam {budget['beam']}"
        + (f", first {budget['test_lines']} lines per pair." if budget["test_lines"] else "."),
        "",
        "## BLEU",
        "",
        "| pair | sentences | BLEU |",
        "|---|---|---|",
    ]
    for row in results["results"]:
        lines.append(f"| {row['pair']} | {row['n']} | {row['scores'].get('bleu', float('nan')):.2f} |")
    lines += comparison_lines(comparison)
    lines += [
        "",
        "A tiny model trained for minutes from a home-made encoder is a pipeline check, not a translation",
        "system: expect BLEU near zero (the `full` budget trains longer). The numbers are real outputs of the run,",
        "nothing is filled in.",
        "",
        "## Stage timings",
        "",
        "Wall seconds, and CPU seconds of the stage's processes (on a shared machine wall time overstates the work).",
        "",
        "| stage | wall s | CPU s |",
        "|---|---|---|",
    ]
    for stage in ("spm", "data", "encoder", "pretrain", "export", "finetune", "evaluate"):
        info = _done(run_dir, stage)
        lines.append(f"| {stage} | {info.get('seconds', 'n/a')} | {info.get('cpu_seconds', 'n/a')} |")
    md = run_dir / "report.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"report": md, "plot": png}
