"""The demo's control run: the same fine-tuning from random initialization, and how the two compare.

:func:`baseline_config` writes the demo's fine-tuning YAML with one change, ``init.kind: random`` (the model
section gets the pre-trained export's architecture, so the two models have the same shape, vocabulary, data,
steps, schedule and seed). :func:`compare` scores both runs' test hypotheses with sacreBLEU's paired
bootstrap (:mod:`finetune.significance`), the pre-trained run as the baseline of the test.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import yaml

from finetune.significance import paired_bootstrap, significant

RUNTIME_KEYS = (
    "dropout",
    "attention_dropout",
    "activation_dropout",
)  # the fine-tuning config's, not the export's


def baseline_config(finetune_yaml: Path, model_dir: Path, run_dir: Path, out: Path) -> Path:
    """``finetune_yaml`` with ``init.kind: random``, the architecture of ``model_dir``, ``run.run_dir`` = ``run_dir``."""
    config = yaml.safe_load(finetune_yaml.read_text(encoding="utf-8"))
    exported = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["model"]
    config["model"] = {k: v for k, v in exported.items() if k not in RUNTIME_KEYS}
    config["init"] = {"kind": "random", "path": ""}
    config["run"] = {**config["run"], "run_dir": str(run_dir)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return out


def _references(config: dict, pair: str) -> list[str]:
    for entry in config["task"]["test"]:
        if f"{entry['src_lang']}-{entry['tgt_lang']}" == pair:
            path = Path(entry["path"])
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt", encoding="utf-8") as handle:
                return [json.loads(line)[entry["tgt_lang"]] for line in handle if line.strip()]
    raise ValueError(f"no test file for {pair} in the fine-tuning config")


def _hypotheses(eval_dir: Path, pair: str) -> list[str]:
    return (eval_dir / f"hypotheses.{pair}.txt").read_text(encoding="utf-8").split("\n")[:-1]


def compare(finetune_yaml: Path, pretrained_eval: Path, random_eval: Path, samples: int = 1000) -> list[dict]:
    """Per test pair: both BLEU scores, the difference (pre-trained − random) and the paired-bootstrap p-value."""
    config = yaml.safe_load(finetune_yaml.read_text(encoding="utf-8"))
    rows = []
    results = json.loads((pretrained_eval / "results.json").read_text(encoding="utf-8"))
    for row in results["results"]:
        pair = row["pair"]
        refs = _references(config, pair)
        out = paired_bootstrap(
            refs,
            ("pretrained", _hypotheses(pretrained_eval, pair)),
            [("random", _hypotheses(random_eval, pair))],
            samples=samples,
        )
        pre, rnd = out["pretrained"]["bleu"], out["random"]["bleu"]
        p = out["random"]["p_value"]
        rows.append(
            {
                "pair": pair,
                "n": len(refs),
                "pretrained": pre,
                "random": rnd,
                "difference": round(pre - rnd, 2),
                "p_value": p,
                "significant": significant(p),
            }
        )
    return rows
