"""The demo's report: ``report.md`` (what ran, losses, BLEU, timings) and ``report.png`` (loss curves + BLEU bars),
built only from files the stages wrote (metrics.jsonl, valid.jsonl, results.json, DONE markers)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from deltalm.text_lines import is_blank, split_lines


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in split_lines(path.read_text(encoding="utf-8")) if not is_blank(line)]


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


def ema(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average, debiased at the start (TensorBoard's smoothing): ``weight`` of the past."""
    out, mean = [], 0.0
    for n, value in enumerate(values, 1):
        mean = weight * mean + (1 - weight) * value
        out.append(mean / (1 - weight**n))
    return out


def smoothing_weight(points: int) -> float:
    """Heavier smoothing for longer curves (about 2 % of the points in the average), 0 for a handful."""
    return 0.0 if points < 10 else min(0.98, 1 - 1 / max(2.0, points / 50))


def validation_series(valid: list[dict], key: str) -> dict[str, tuple[list[int], list[float]]]:
    """Per pair: the validation steps and ``key`` (``loss``, ``bleu``, ...) from ``valid.jsonl`` records."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for record in valid:
        for pair, scores in sorted(record.get("pairs", {}).items()):
            value = scores.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                steps, values = series.setdefault(pair, ([], []))
                steps.append(int(record["step"]))
                values.append(float(value))
    return series


def _loss_panel(axis, title: str, steps: list[int], values: list[float], color: str, ylabel: str) -> None:
    if steps:
        weight = smoothing_weight(len(values))
        axis.plot(steps, values, color=color, alpha=0.25, linewidth=0.8, label="per step")
        axis.plot(steps, ema(values, weight), color=color, linewidth=2, label=f"EMA {weight:.2f}")
    else:
        axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
    axis.set_title(title)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)


def plot(
    run_dir: Path,
    curves: dict[str, tuple[list[int], list[float]]],
    valid: list[dict],
    results: list[dict],
    beam_size: int,
    valid_note: str,
    control: tuple[list[int], list[float]] = ([], []),
    control_bleu: dict[str, float] | None = None,
) -> Path:
    """``report.png``: one panel per objective (raw faint, EMA bold), the validation loss on the fine-tuning
    panel, validation BLEU over steps, and the test BLEU per pair labelled with its sentence count and beam."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(15, 8.5))
    grid = fig.add_gridspec(2, 3)
    colors = ("tab:purple", "tab:blue", "tab:orange")
    for column, (label, (steps, values)) in enumerate(curves.items()):
        ylabel = "loss (nats per masked token)" if column == 0 else "loss (nats per target token)"
        axis = fig.add_subplot(grid[0, column])
        _loss_panel(axis, label, steps, values, colors[column % len(colors)], ylabel)
    finetune_axis = fig.axes[-1]
    valid_colors = ("tab:red", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan")
    for index, (pair, (steps, values)) in enumerate(validation_series(valid, "loss").items()):
        color = valid_colors[index % len(valid_colors)]
        finetune_axis.plot(steps, values, marker="o", linestyle="--", color=color, label=f"validation {pair}")
    if control[0]:  # the random-init control's training loss (EMA) on the same panel
        weight = smoothing_weight(len(control[1]))
        finetune_axis.plot(control[0], ema(control[1], weight), color="black", linewidth=1.5,
                           label=f"random init (control), EMA {weight:.2f}")  # fmt: skip
    finetune_axis.legend(fontsize=8)
    fig.axes[0].legend(fontsize=8)
    fig.axes[1].legend(fontsize=8)

    bleu_steps = fig.add_subplot(grid[1, :2])
    series = validation_series(valid, "bleu")
    for pair, (steps, values) in series.items():
        bleu_steps.plot(steps, values, marker="o", label=pair)
    bleu_steps.set_title(f"validation sacreBLEU during fine-tuning ({valid_note})")
    bleu_steps.set_xlabel("optimizer step")
    bleu_steps.set_ylabel("sacreBLEU")
    bleu_steps.grid(alpha=0.3)
    if series:
        bleu_steps.legend(fontsize=8)
    else:
        bleu_steps.text(
            0.5, 0.5, "no validation BLEU", ha="center", va="center", transform=bleu_steps.transAxes
        )

    bars = fig.add_subplot(grid[1, 2])
    rows = [r for r in results if "bleu" in r.get("scores", {})]
    labels = [f"{r['pair']}\n{r['n']} sentences" for r in rows]
    values = [float(r["scores"]["bleu"]) for r in rows]
    control_values = [float((control_bleu or {}).get(r["pair"], float("nan"))) for r in rows]
    width = 0.4 if control_bleu else 0.8
    positions = list(range(len(rows)))
    bars.bar([x - width / 2 if control_bleu else x for x in positions], values, width, color="tab:green",
             label="pre-trained")  # fmt: skip
    for i, value in enumerate(values):
        bars.text(i - width / 2 if control_bleu else i, value, f"{value:.2f}", ha="center", va="bottom")
    if control_bleu:
        bars.bar(
            [x + width / 2 for x in positions], control_values, width, color="tab:gray", label="random init"
        )
        for i, value in enumerate(control_values):
            bars.text(i + width / 2, value, f"{value:.2f}", ha="center", va="bottom")
        bars.legend(fontsize=8)
    bars.set_xticks(positions, labels)
    bars.set_ylim(0, max([1.0, *values, *[v for v in control_values if v == v]]) * 1.2)
    bars.set_ylabel("sacreBLEU (13a, detokenized)")
    bars.set_title(f"held-out test, beam {beam_size}")
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


def best_validation(valid: list[dict]) -> str:
    """``; best validation BLEU 3.10 at step 2000`` (the mean over pairs), or nothing without BLEU."""
    scored = [(r["bleu"], r["step"]) for r in valid if isinstance(r.get("bleu"), (int, float))]
    if not scored:
        return ""
    value, step = max(scored)
    return f"; best validation BLEU {value:.2f} (mean over pairs) at step {step}"


def model_shape(preset: str) -> str:
    """``"d 128, 4 + 2 layers"``: the width and encoder + decoder layers of a model preset."""
    from deltalm.model.config import DeltaLMConfig

    config = DeltaLMConfig.preset(preset)
    return f"d {config.d_model}, {config.encoder_layers} + {config.decoder_blocks} layers"


def bleu_verdict(bleu: dict[str, float], budget: dict) -> str:
    """One sentence that says what the measured test BLEU means, true to the numbers."""
    if not bleu:
        return "No test BLEU was measured."
    measured = ", ".join(f"{pair} {value:.2f}" for pair, value in bleu.items())
    scale = (
        f"a model of {model_shape(budget['model'])} trained for "
        f"{budget['pretrain_steps']} + {budget['finetune_steps']} steps from a home-made encoder"
    )
    if max(bleu.values()) < 1.0:
        return f"Test BLEU {measured}: near zero, as expected of {scale} (a pipeline check)."
    return (
        f"Test BLEU {measured}: above zero, so the pipeline learns, but far below a real translation system, "
        f"as expected of {scale}; the `full` budget trains longer."
    )


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
        "encoder masked-LM (the XLM-R stand-in)": (
            list(range(1, len(encoder.get("losses", [])) + 1)),
            encoder.get("losses", []),
        ),
        "DeltaLM pre-training\n(span corruption + translation span corruption)": _series(pretrain),
        "fine-tuning En→X\n(training per step; validation dashed)": _series(finetune),
    }
    valid_note = f"first {budget['valid_examples']} validation sentences per pair, beam {budget['beam_size']}"
    control_bleu = {row["pair"]: row["random"] for row in comparison}
    png = plot(run_dir, curves, valid, results["results"], budget["beam_size"], valid_note, _series(finetune_random),
               control_bleu)  # fmt: skip

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
        "Per-step curves are drawn faint with an exponential moving average on top (weight in the legend).",
        "TensorBoard events of both training runs: "
        f"`tensorboard --logdir {run_dir}` (`pretrain/tensorboard/`, `finetune/run/tensorboard/`).",
        "",
        "## What ran",
        "",
        f"- SentencePiece: {budget['spm_vocab']} pieces on mono {', '.join(budget['mono_langs'])}.",
        f"- Encoder: an XLM-R of the `{budget['model']}` preset ({model_shape(budget['model'])}) trained with masked-LM for {budget['encoder_steps']} steps "
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
        + f": loss {first_last(finetune)}; {len(valid)} validations ({valid_note}){best_validation(valid)}. "
        "The control, the same fine-tuning from random init (`init.kind=random`, same shape, data, steps, schedule "
        f"and seed): loss {first_last(finetune_random)}.",
        f"- Evaluation: sacreBLEU (13a, detokenized, case-sensitive) on the held-out test split, beam {budget['beam_size']}"
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
        bleu_verdict(bleu, budget),
        "The numbers are real outputs of the run, nothing is filled in.",
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
