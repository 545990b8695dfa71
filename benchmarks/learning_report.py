"""The learning check's report: significance, ``results.md`` and ``learning.png`` from ``results.json``.

Significance is sacreBLEU's paired bootstrap (1,000 resamples) of each start against the recipe
(``deltalm``), per direction and on both test sets together (the concatenation, one corpus BLEU).
Whatever stages have finished are reported; missing ones are named, never filled in.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from finetune.significance import paired_bootstrap

INITS = ("random", "encoder", "interleaved", "deltalm")
LABELS = {
    "random": "(a) random init",
    "encoder": "(b) encoder + random decoder",
    "interleaved": "(c) interleaved init, no pre-training",
    "deltalm": "(d) interleaved init + pre-training",
}
CORPUS = Path(__file__).resolve().parent.parent / "data_prep" / "sample_corpus"


def _references(pair: str) -> list[str]:
    tgt = pair.split("-")[1]
    with gzip.open(CORPUS / "parallel" / f"test.{pair}.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line)[tgt] for line in handle if line.strip()]


def _hypotheses(work: Path, init: str, pair: str) -> list[str] | None:
    path = work / f"ft_{init}" / "eval" / f"hypotheses.{pair}.txt"
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def significance(work: Path, pairs: list[str]) -> dict:
    """Paired bootstrap of every finished start against ``deltalm`` (the baseline slot of sacreBLEU's test)."""
    out: dict = {}
    recipe = {p: _hypotheses(work, "deltalm", p) for p in pairs}
    if any(h is None for h in recipe.values()):
        return out
    others = [i for i in INITS[:-1] if all(_hypotheses(work, i, p) is not None for p in pairs)]
    if not others:
        return out
    refs = {p: _references(p) for p in pairs}
    for p in pairs:
        systems = [(i, _hypotheses(work, i, p)) for i in others]
        out[p] = paired_bootstrap(refs[p], ("deltalm", recipe[p]), systems)
    joined_refs = [r for p in pairs for r in refs[p]]
    systems = [(i, [h for p in pairs for h in _hypotheses(work, i, p)]) for i in others]
    out["both"] = paired_bootstrap(joined_refs, ("deltalm", [h for p in pairs for h in recipe[p]]), systems)
    return out


def _table(results: dict, sig: dict, pairs: list[str]) -> list[str]:
    stages = results["stages"]
    lines = [
        "| start | "
        + " | ".join(f"BLEU {p}" for p in pairs)
        + " | mean | first-step loss | final train loss | "
        "final valid loss |",
        "|---|" + "---|" * (len(pairs) + 4),
    ]
    for init in INITS:
        r = stages.get(f"ft_{init}")
        if r is None:
            lines.append(f"| {LABELS[init]} | " + " | ".join("not run" for _ in range(len(pairs) + 4)) + " |")
            continue
        bleus = [r["bleu"].get(p, float("nan")) for p in pairs]
        cells = []
        for p, b in zip(pairs, bleus, strict=True):
            s = sig.get(p, {}).get(init)
            cells.append(f"{b:.2f}" + (f" (p={s['p_value']})" if s and s["p_value"] is not None else ""))
        mean = sum(bleus) / len(bleus)
        lines.append(
            f"| {LABELS[init]} | " + " | ".join(cells) + f" | {mean:.2f} | {r['first_step_loss']:.3f} | "
            f"{r['final_train_loss']:.3f} | {r['valid_loss'][-1][1]:.3f} |"
        )
    return lines


def _chain(results: dict) -> list[str]:
    stages, chain = results["stages"], results.get("chain", {})
    lines = []
    enc = stages.get("encoder")
    if enc:
        lines += [
            f"- Stand-in encoder ({enc['steps']} masked-LM steps): held-out masked-LM loss {enc['mlm_loss']:.3f} "
            f"nats, accuracy {enc['mlm_accuracy']:.3f}; unigram baseline on the same {enc['heldout_masked_tokens']} "
            f"masked tokens: {enc['unigram_loss']:.3f} nats, accuracy {enc['unigram_accuracy']:.3f}."
        ]
    rows = [
        ("start_random", "random init, before pre-training"),
        ("start_interleaved", "interleaved init, before pre-training"),
        ("end_random", "random init, after pre-training"),
        ("end_interleaved", "interleaved init, after pre-training (last checkpoint)"),
        ("export_reloaded", "the export, reloaded"),
    ]
    if any(k in chain for k, _ in rows):
        lines += [
            "",
            f"Held-out pre-training losses (nats/target token; {chain['heldout_rows']['span']} span-corruption rows "
            f"of held-out monolingual text, {chain['heldout_rows']['translation_span']} translation-span-corruption "
            "rows of the valid pairs):",
            "",
            "| model | span corruption | translation span corruption |",
            "|---|---|---|",
        ]
        lines += [
            f"| {label} | {chain[k]['span']:.3f} | {chain[k]['translation_span']:.3f} |"
            for k, label in rows
            if k in chain
        ]
    return lines


def _plot(work: Path, results: dict, pairs: list[str]) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = results["stages"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for init in INITS:
        r = stages.get(f"ft_{init}")
        if r is None:
            continue
        axes[0].plot(*zip(*r["train_loss"], strict=True), label=LABELS[init])
        axes[1].plot(*zip(*r["valid_loss"], strict=True), marker="o", label=LABELS[init])
    axes[0].set(title="fine-tuning: training loss", xlabel="step", ylabel="label-smoothed CE")
    axes[1].set(title="fine-tuning: validation loss", xlabel="step", ylabel="label-smoothed CE")
    for name, label in (("pretrain", "interleaved init"), ("pretrain_random", "random init")):
        r = stages.get(name)
        if r:
            axes[2].plot(*zip(*r["train_loss"], strict=True), label=label)
    axes[2].set(title="DeltaLM pre-training: training loss", xlabel="step", ylabel="CE")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = work / "learning.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(work: Path, results: dict) -> dict:
    pairs = [f"en-{t}" for t in ("de", "fr")]
    sig = significance(work, pairs)
    results["significance"] = sig
    (work / "results.json").write_text(
        json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    lines = ["## Fine-tuning En→X from four starts (sacreBLEU on the test split)", ""]
    lines += _table(results, sig, pairs)
    if sig:
        lines += ["", "Paired bootstrap against (d) (sacreBLEU, 1,000 resamples; p-values in the table):", ""]
        lines += [
            "| start | " + " | ".join(f"{p}: BLEU − (d)" for p in [*pairs, "both"]) + " |",
            "|---|" + "---|" * 3,
        ]
        for init in INITS[:-1]:
            if init in sig.get("both", {}):
                cells = [
                    f"{sig[p][init]['bleu'] - sig[p]['deltalm']['bleu']:+.2f} (p={sig[p][init]['p_value']})"
                    for p in [*pairs, "both"]
                ]
                lines.append(f"| {LABELS[init]} | " + " | ".join(cells) + " |")
    lines += ["", "## The chain, link by link", "", *_chain(results)]
    (work / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines), flush=True)
    plot = _plot(work, results, pairs)
    return {"markdown": work / "results.md", "plot": plot}
