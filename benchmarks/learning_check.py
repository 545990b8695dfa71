"""Learning check: a tiny DeltaLM fine-tuned En→X on real human translations, per-language sacreBLEU.

Data: ``--corpus DIR`` holding ``train.en-XX.jsonl.gz`` (Debian gettext catalogs; default: the bundled
``data_prep/sample_corpus/parallel``, En-De and En-Fr; the full corpus has 14 languages). A held-out test split
is made per language by hashing the English source (sha1 of the text, so identical sources never straddle
the split): ``--test-per-lang`` pairs go to test, the rest (capped at ``--train-per-lang``) to training.
The same budget (``--steps`` optimizer steps of ``--batch`` pairs) is spent once from random init and once
from a pre-trained checkpoint (``--pretrained``: a ``save_pretrained`` directory, e.g. the demo pipeline's
export); its SentencePiece model is used for both runs so the comparison is fair. Without ``--pretrained``
a SentencePiece model is trained on the training split (or taken from ``--spm``) and only the random-init run
is made. Results: ``<work>/results.json`` and a markdown table on stdout.

Example::

    DS_ACCELERATOR=cpu .venv/bin/python benchmarks/learning_check.py --langs de fr zh hi --steps 600 \\
        --pretrained runs/demo/export --work runs/learning_check
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import yaml  # noqa: E402

CORPUS = Path(__file__).resolve().parent.parent / "data_prep" / "sample_corpus" / "parallel"


def split_language(lang: str, corpus: Path, out: Path, test_n: int, train_cap: int) -> dict:
    """Write train/test JSONL for en→lang; test = the pairs with the smallest source hashes."""
    pairs = []
    with gzip.open(corpus / f"train.en-{lang}.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("en"), str) and isinstance(row.get(lang), str):
                pairs.append(row)
    keyed = sorted(pairs, key=lambda r: hashlib.sha1(r["en"].encode("utf-8")).hexdigest())
    test_sources = {r["en"] for r in keyed[:test_n]}
    test = [r for r in keyed if r["en"] in test_sources][:test_n]
    train = [r for r in keyed if r["en"] not in test_sources][:train_cap]
    for name, rows in (("train", train), ("test", test)):
        with gzip.open(out / f"{name}.en-{lang}.jsonl.gz", "wt", encoding="utf-8") as handle:
            for r in rows:
                handle.write(json.dumps({"en": r["en"], lang: r[lang]}, ensure_ascii=False) + "\n")
    return {"train": len(train), "test": len(test), "available": len(pairs)}


def train_spm(out: Path, langs: list[str], vocab_size: int) -> Path:
    import sentencepiece as spm

    text = out / "spm_input.txt"
    with open(text, "w", encoding="utf-8") as sink:
        for lang in langs:
            with gzip.open(out / f"train.en-{lang}.jsonl.gz", "rt", encoding="utf-8") as handle:
                for line in handle:
                    row = json.loads(line)
                    sink.write(row["en"].replace("\n", " ") + "\n" + row[lang].replace("\n", " ") + "\n")
    spm.SentencePieceTrainer.Train(
        input=str(text),
        model_prefix=str(out / "spm"),
        vocab_size=vocab_size,
        character_coverage=0.9995,
        input_sentence_size=400000,
        shuffle_input_sentence=True,
        num_threads=2,
        minloglevel=2,
    )
    return out / "spm.model"


def pretrained_architecture(path: str) -> dict:
    """The model section of a pretrained directory (config.json) or run directory (config.yaml)."""
    directory = Path(path)
    if (directory / "config.json").is_file():
        model = json.loads((directory / "config.json").read_text(encoding="utf-8"))["model"]
    else:
        model = yaml.safe_load((directory / "config.yaml").read_text(encoding="utf-8"))["model"]
    return {k: v for k, v in model.items() if k not in ("dropout", "attention_dropout", "activation_dropout")}


def config_for(args, work: Path, spm: Path, init: dict, name: str, model: dict) -> dict:
    files = lambda split: [  # noqa: E731
        {"path": str(work / "data" / f"{split}.en-{x}.jsonl.gz"), "src_lang": "en", "tgt_lang": x}
        for x in args.langs
    ]
    return {
        "run": {"run_dir": str(work / name), "max_steps": args.steps, "seed": 1, "log_every": 50},
        "model": model,
        "init": init,
        "optimizer": {"lr": args.lr},
        "schedule": {"kind": "inverse_sqrt", "warmup_steps": args.warmup},
        "batch": {"global_batch_size": args.batch, "micro_batch_size": args.batch},
        "checkpoint": {"every": max(args.steps // 5, 1), "keep_last": 2, "resume": "never"},
        "logging": {"tensorboard": False},
        "task": {
            "name": "translation",
            "spm_model": str(spm),
            "train": files("train"),
            "test": files("test"),
            "max_source_length": 128,
            "max_target_length": 128,
            "validate_every": 0,
            "beam_size": args.beam_size,
            "eval_batch_size": 32,
            "average_last": 5,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--langs", nargs="+", default=["de", "fr"])
    parser.add_argument(
        "--corpus",
        default=str(CORPUS),
        help="directory of train.en-XX.jsonl.gz files (Debian gettext layout)",
    )
    parser.add_argument("--work", default="runs/learning_check")
    parser.add_argument(
        "--pretrained",
        default="",
        help="save_pretrained directory or pre-training run directory to start from",
    )
    parser.add_argument(
        "--spm", default="", help="SentencePiece model (default: the pretrained dir's, else trained)"
    )
    parser.add_argument(
        "--spm-vocab", type=int, default=8000, help="pieces of the SentencePiece model trained here"
    )
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--test-per-lang", type=int, default=200)
    parser.add_argument("--train-per-lang", type=int, default=20000)
    args = parser.parse_args(argv)

    import deepspeed
    import torch

    from finetune.config import load_finetune_config
    from finetune.evaluate import evaluate
    from finetune.trainer import run

    work = Path(args.work)
    (work / "data").mkdir(parents=True, exist_ok=True)
    splits = {
        x: split_language(x, Path(args.corpus), work / "data", args.test_per_lang, args.train_per_lang)
        for x in args.langs
    }
    if args.spm:
        spm = Path(args.spm)
    elif args.pretrained:
        spm = Path(args.pretrained) / "sentencepiece.model"
    else:
        spm = train_spm(work / "data", args.langs, args.spm_vocab)
    if not spm.is_file():
        print(f"error: SentencePiece model not found: {spm} (give --spm)", file=sys.stderr)
        return 2
    # the same architecture for both runs: the pre-trained model's, else the tiny preset
    model = pretrained_architecture(args.pretrained) if args.pretrained else {"preset": "tiny"}
    inits = {"random": {"kind": "random", "path": ""}}
    if args.pretrained:
        inits["pretrained"] = {"kind": "pretrained", "path": args.pretrained}
    results: dict = {
        "splits": splits,
        "steps": args.steps,
        "batch": args.batch,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "deepspeed": deepspeed.__version__,
        "model": model,
        "runs": {},
    }
    for name, init in inits.items():
        cfg_path = work / f"{name}.yaml"
        cfg_path.write_text(yaml.safe_dump(config_for(args, work, spm, init, name, model)), encoding="utf-8")
        config = load_finetune_config(str(cfg_path), [])
        started = time.perf_counter()
        run(config)
        train_s = time.perf_counter() - started
        metrics = [json.loads(line) for line in (work / name / "metrics.jsonl").read_text().splitlines()]
        started = time.perf_counter()
        evaluation = evaluate(str(work / name / "averaged"), config.task, str(work / name / "eval"))
        results["runs"][name] = {
            "train_seconds": round(train_s, 1),
            "eval_seconds": round(time.perf_counter() - started, 1),
            "final_train_loss": sum(m["loss"] for m in metrics[-20:]) / len(metrics[-20:]),
            "bleu": {r["pair"]: round(r["scores"]["bleu"], 2) for r in evaluation["results"]},
            "signature": evaluation["results"][0]["signatures"]["bleu"],
        }
    (work / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    pairs = [f"en-{x}" for x in args.langs]
    print("| init | " + " | ".join(pairs) + " | train s | final train loss |")
    print("|" + "---|" * (len(pairs) + 3))
    for name, r in results["runs"].items():
        cells = [f"{r['bleu'].get(p, float('nan')):.2f}" for p in pairs]
        print(f"| {name} | " + " | ".join(cells) + f" | {r['train_seconds']} | {r['final_train_loss']:.3f} |")
    print(json.dumps(results["splits"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
