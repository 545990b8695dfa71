"""Learning check: does the DeltaLM recipe beat random init on low-resource translation? (bundled data only)

Data: ``data_prep/sample_corpus/`` only. Monolingual text: one document in 20 of every language is held out
(held-out masked-LM and span-corruption losses); the rest trains the SentencePiece model, the stand-in
encoder and DeltaLM pre-training. Parallel: pre-training reads every ``train.en-XX`` pair (the valid and test
splits are separate files and never seen before evaluation); fine-tuning En→X uses ``--ft-pairs`` of those
training pairs per direction (a fixed-seed sample), validates on ``valid.en-XX`` and is scored on
``test.en-XX``.

Four fine-tunings of the same architecture, budget and seed, differing only in the starting weights:

- ``random``: random initialization;
- ``encoder``: the stand-in encoder's embeddings and encoder layers, a randomly initialized decoder;
- ``interleaved``: the encoder and the interleaved decoder both from the encoder (no DeltaLM pre-training);
- ``deltalm``: interleaved init + DeltaLM pre-training (span corruption + translation span corruption),
  exported with ``python -m deltalm.export`` — the recipe.

Each starts from a ``save_pretrained`` directory through the same ``init.kind=pretrained`` path. Along the
way it measures each link of the chain: the encoder's held-out masked-LM loss/accuracy next to a unigram
baseline; held-out span-corruption and translation-span-corruption losses at the start and end of
pre-training, for interleaved init and for random init of the same model (``pretrain_random``); the export
reloaded against the last checkpoint; first-step and final fine-tuning losses; sacreBLEU on the test split and
sacreBLEU's paired bootstrap of ``deltalm`` against each other start.

Every stage writes ``<work>/<stage>/DONE``; a rerun skips finished stages, so partial results stay usable.
``results.json``, ``results.md`` and ``learning.png`` are rewritten after every stage.

Example (the recorded run; ``--jobs 2`` runs the pre-training chain beside the other fine-tunings)::

    OMP_NUM_THREADS=1 DS_ACCELERATOR=cpu .venv/bin/python -m benchmarks.learning_check --work runs/learning --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import learning_probes as probes

REPO = Path(__file__).resolve().parent.parent

CORPUS = REPO / "data_prep" / "sample_corpus"
MONO = ("en", "de", "fr", "es", "zh", "hi")
PAIRS = ("de", "fr")
INITS = ("random", "encoder", "interleaved", "deltalm")
HELDOUT_EVERY = 20  # one document in 20 is held out


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work).resolve()
        self.python = sys.executable
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }
        self.lock = threading.Lock()
        self.results_file = self.work / "results.json"
        self.results: dict = {}
        if self.results_file.is_file():
            self.results = json.loads(self.results_file.read_text(encoding="utf-8"))
        settings = {k: v for k, v in vars(args).items() if k not in ("work", "jobs", "report_only")}
        if self.results.get("settings", settings) != settings:
            raise SystemExit(f"error: {self.work} holds a run with other settings; use another --work")
        self.results["settings"] = settings
        self.results.setdefault("stages", {})

    # ------------------------------------------------------------------ bookkeeping
    def d(self, *parts: str) -> Path:
        return self.work.joinpath(*parts)

    def say(self, text: str) -> None:
        print(f"[learning {time.strftime('%H:%M:%S')}] {text}", flush=True)

    def stage(self, name: str, fn) -> dict:
        marker = self.d(name, "DONE")
        if marker.is_file():
            return json.loads(marker.read_text(encoding="utf-8"))
        self.say(f"{name}: start")
        started = time.perf_counter()
        info = fn() or {}
        info["seconds"] = round(time.perf_counter() - started, 1)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        self.say(f"{name}: done in {info['seconds']} s")
        with self.lock:
            self.results["stages"][name] = info
            self.save()
        return info

    def save(self) -> None:
        tmp = self.results_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(self.results_file)

    def run(self, cmd: list, log: str) -> None:
        path = self.d("logs", f"{log}.log")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("$ " + " ".join(map(str, cmd)) + "\n")
            handle.flush()
            proc = subprocess.run(
                [str(c) for c in cmd], cwd=REPO, env=self.env, stdout=handle, stderr=subprocess.STDOUT
            )
        if proc.returncode:
            tail = path.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
            raise RuntimeError(f"{log} failed (exit {proc.returncode}), see {path}:\n" + "\n".join(tail))

    @property
    def spm(self) -> Path:
        return self.d("spm", "spm.model")

    def vocab(self):
        from deltalm.vocabulary import Vocabulary

        return Vocabulary.from_spm(self.spm)

    def heldout_lines(self) -> dict[str, list[str]]:
        return {
            lang: [
                line
                for doc in probes.read_documents(self.d("corpus", "heldout", f"{lang}.txt.gz"))
                for line in doc
            ]
            for lang in MONO
        }

    # ------------------------------------------------------------------ stages
    def corpus(self) -> dict:
        out = self.d("corpus")
        for sub in ("mono", "heldout", "finetune"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        info: dict = {"mono": {}, "finetune": {}}
        for lang in MONO:
            docs = probes.read_documents(CORPUS / "mono" / f"{lang}.txt.gz")
            held = [doc for i, doc in enumerate(docs) if i % HELDOUT_EVERY == 0]
            kept = [doc for i, doc in enumerate(docs) if i % HELDOUT_EVERY != 0]
            probes.write_documents(out / "mono" / f"{lang}.txt.gz", kept)
            probes.write_documents(out / "heldout" / f"{lang}.txt.gz", held)
            info["mono"][lang] = {"train_docs": len(kept), "heldout_docs": len(held)}
        import gzip

        for tgt in PAIRS:
            with gzip.open(
                CORPUS / "parallel" / f"train.en-{tgt}.jsonl.gz", "rt", encoding="utf-8"
            ) as handle:
                rows = [line for line in handle if line.strip()]
            random.Random(f"finetune-{tgt}").shuffle(rows)
            with gzip.open(out / "finetune" / f"train.en-{tgt}.jsonl.gz", "wt", encoding="utf-8") as handle:
                handle.writelines(rows[: self.args.ft_pairs])
            info["finetune"][tgt] = {"train": min(len(rows), self.args.ft_pairs), "pretrain_pairs": len(rows)}
        return info

    def spm_stage(self) -> dict:
        inputs = [self.d("corpus", "mono", f"{lang}.txt.gz") for lang in MONO]
        cmd = [self.python, "-m", "data_prep", "train-spm", "--vocab-size", self.args.spm_vocab]
        cmd += ["--input-sentence-size", 100000, "--character-coverage", "0.9995", "--num-threads", 1]
        run_dir = self.d("spm")
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run([*cmd, "--output", run_dir / "spm", *inputs], "spm")
        return {"vocab": self.args.spm_vocab}

    def shards(self) -> dict:
        ds = self.d("shards", "ds")
        common = ["--spm", self.spm, "--output", ds, "--workers", 1, "--no-progress"]
        for lang in MONO:
            mono = self.d("corpus", "mono", f"{lang}.txt.gz")
            self.run([self.python, "-m", "data_prep", "mono", "--lang", lang, *common, mono], "shards")
        for tgt in PAIRS:
            cmd = [self.python, "-m", "data_prep", "parallel", "--src-lang", "en", "--tgt-lang", tgt, *common]
            self.run([*cmd, CORPUS / "parallel" / f"train.en-{tgt}.jsonl.gz"], "shards")
        self.run([self.python, "-m", "data_prep", "verify", ds], "shards")
        return {"dataset": str(ds)}

    def encoder(self) -> dict:
        a = self.args
        out = self.d("encoder", "xlmr")
        cmd = [
            self.python,
            "-m",
            "demo.encoder",
            "--spm",
            self.spm,
            "--out",
            out,
            "--steps",
            a.encoder_steps,
        ]
        cmd += ["--model", a.model]
        self.run([*cmd, *[self.d("corpus", "mono", f"{lang}.txt.gz") for lang in MONO]], "encoder")
        training = json.loads((out / "mlm_training.json").read_text(encoding="utf-8"))
        train_lines = [
            line
            for lang in MONO
            for doc in probes.read_documents(self.d("corpus", "mono", f"{lang}.txt.gz"))
            for line in doc
        ]
        held = [line for lines in self.heldout_lines().values() for line in lines]
        heldout = probes.mlm_heldout(out, self.vocab(), train_lines, held)
        return {"steps": training["steps"], "train_first_loss": training["first_loss"],
                "train_last_loss": training["last_loss"], "losses": training["losses"][:: max(1, a.encoder_steps // 100)],
                **heldout}  # fmt: skip

    def starts(self) -> dict:
        """save_pretrained directories of the three starts that need no pre-training."""
        import torch

        from deltalm.checkpoints.pretrained import save_pretrained
        from deltalm.checkpoints.xlmr import from_xlmr
        from deltalm.model.model import DeltaLM

        vocab = self.vocab()
        interleaved = from_xlmr(
            self.d("encoder", "xlmr"), vocab_size=vocab.pretrain_size, seed=self.args.seed
        ).model
        torch.manual_seed(self.args.seed)
        random_model = DeltaLM(interleaved.config)
        encoder_only = from_xlmr(
            self.d("encoder", "xlmr"), vocab_size=vocab.pretrain_size, seed=self.args.seed
        ).model
        encoder_only.decoder.load_state_dict(random_model.decoder.state_dict())  # random init's own decoder
        for name, model in (
            ("random", random_model),
            ("encoder", encoder_only),
            ("interleaved", interleaved),
        ):
            save_pretrained(model, self.d("starts", name), vocab)
        return {"config": interleaved.config.to_dict()}

    def pretrain_sets(self, run_dir: Path, init: str) -> list:
        from demo.encoder import MAX_POSITIONS

        a = self.args
        sets = {
            "run.run_dir": run_dir,
            "run.max_steps": a.pretrain_steps,
            "run.log_every": max(1, a.pretrain_steps // 20),
            "run.seed": a.seed,
            "model.vocab_size": self.vocab().pretrain_size,
            "model.preset": a.model,
            "model.max_positions": MAX_POSITIONS,  # the encoder's table (128 tokens)
            "data.data_dirs": f"[{self.d('shards', 'ds')}]",
            "data.spm_model": self.spm,
            "optimizer.lr": a.pretrain_lr,
            "schedule.warmup_steps": max(1, a.pretrain_steps // 10),
            "batch.global_batch_size": a.pretrain_batch,
            "batch.micro_batch_size": a.pretrain_batch,
            "checkpoint.every": max(2, a.pretrain_steps // 2),
            "logging.tensorboard": "false",
        }
        if init == "xlmr":
            sets.update({"init.kind": "xlmr", "init.path": self.d("encoder", "xlmr")})
        cmd = [self.python, "pretrain/train.py", "--preset", "tiny"]
        for key, value in sets.items():
            cmd += ["--set", f"{key}={value}"]
        return cmd

    def pretrain(self, name: str, init: str) -> dict:
        run_dir = self.d(name, "run")
        self.run(self.pretrain_sets(run_dir, init), name)
        metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return {
            "steps": len(metrics),
            "train_loss": [[m["step"], round(m["loss"], 4)] for m in metrics[:: max(1, len(metrics) // 100)]],
        }

    def export(self) -> dict:
        out = self.d("export", "model")
        self.run([self.python, "-m", "deltalm.export", "--run-dir", self.d("pretrain", "run"), "--out", out,
                  "--spm", self.spm, "--verify"], "export")  # fmt: skip
        return {"model": str(out)}

    def finetune_config(self, name: str, init_dir: Path) -> Path:
        import yaml

        a = self.args
        files = lambda split, root: [  # noqa: E731
            {"path": str(root / f"{split}.en-{t}.jsonl.gz"), "src_lang": "en", "tgt_lang": t} for t in PAIRS
        ]
        config = {
            "run": {"run_dir": str(self.d(f"ft_{name}", "run")), "max_steps": a.ft_steps, "seed": a.seed,
                    "log_every": max(1, a.ft_steps // 10)},
            "init": {"kind": "pretrained", "path": str(init_dir)},
            "optimizer": {"lr": a.ft_lr},
            "schedule": {"kind": "inverse_sqrt", "warmup_steps": a.ft_warmup},
            "batch": {"global_batch_size": a.ft_batch, "micro_batch_size": a.ft_batch},
            "checkpoint": {"every": a.ft_steps, "keep_last": 2, "resume": "never"},
            "logging": {"tensorboard": False},
            "task": {
                "name": "translation", "spm_model": str(self.spm),
                "train": files("train", self.d("corpus", "finetune")),
                "valid": files("valid", CORPUS / "parallel"), "test": files("test", CORPUS / "parallel"),
                "max_source_length": 128, "max_target_length": 128,
                "validate_every": max(1, a.ft_steps // 10), "best_metric": "loss",
                "beam_size": a.beam, "eval_batch_size": 32, "average_last": 1,
            },
        }  # fmt: skip
        path = self.d(f"ft_{name}", "finetune.yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return path

    def finetune(self, name: str) -> dict:
        start = self.d("export", "model") if name == "deltalm" else self.d("starts", name)
        config = self.finetune_config(name, start)
        run_dir = self.d(f"ft_{name}", "run")
        self.run([self.python, "finetune/train.py", "--config", config], f"ft_{name}")
        self.run([self.python, "-m", "finetune.evaluate", "--model", run_dir / "final", "--config", config,
                  "--output-dir", self.d(f"ft_{name}", "eval")], f"ft_{name}")  # fmt: skip
        metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        valid = [json.loads(x) for x in (run_dir / "valid.jsonl").read_text().splitlines()]
        evaluation = json.loads(self.d(f"ft_{name}", "eval", "results.json").read_text(encoding="utf-8"))
        return {
            "first_step_loss": round(metrics[0]["loss"], 4),
            "lr_first_last": [metrics[0]["lr"], metrics[-1]["lr"]],
            "train_loss": [[m["step"], round(m["loss"], 4)] for m in metrics[:: max(1, len(metrics) // 100)]],
            "final_train_loss": round(sum(m["loss"] for m in metrics[-20:]) / len(metrics[-20:]), 4),
            "valid_loss": [[v["step"], round(v["loss"], 4)] for v in valid],
            "bleu": {r["pair"]: round(r["scores"]["bleu"], 2) for r in evaluation["results"]},
            "signature": evaluation["results"][0]["signatures"]["bleu"],
        }

    # ------------------------------------------------------------------ chain measurements (cheap, in-process)
    def chain(self) -> dict:
        from deltalm.checkpoints.engine_checkpoint import open_checkpoint
        from deltalm.checkpoints.pretrained import from_pretrained
        from deltalm.export.exporter import consolidated_model

        vocab, a = self.vocab(), self.args
        mono = probes.span_corruption_batches(vocab, self.heldout_lines(), 64, a.heldout_windows)
        pairs = {t: probes.read_pairs(CORPUS / "parallel" / f"valid.en-{t}.jsonl.gz", t) for t in PAIRS}
        trans = probes.translation_span_batches(vocab, pairs, 64, a.heldout_windows)

        def score(model) -> dict:
            return {
                "span": round(probes.heldout_loss(model, mono), 4),
                "translation_span": round(probes.heldout_loss(model, trans), 4),
            }

        out: dict = {"heldout_rows": {"span": sum(len(b["encoder_input_tokens"]) for b in mono),
                                      "translation_span": sum(len(b["encoder_input_tokens"]) for b in trans)}}  # fmt: skip
        for name in ("random", "interleaved"):
            if self.d("starts", name).is_dir():
                out[f"start_{name}"] = score(from_pretrained(self.d("starts", name)))
        for name, run in (("pretrain", "interleaved"), ("pretrain_random", "random")):
            if self.d(name, "DONE").is_file():
                out[f"end_{run}"] = score(consolidated_model(open_checkpoint(str(self.d(name, "run")))))
        if self.d("export", "DONE").is_file():
            out["export_reloaded"] = score(from_pretrained(self.d("export", "model")))
        return out

    # ------------------------------------------------------------------ the whole run
    def main(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        if self.args.report_only:  # whatever stages have finished, e.g. of a run still going or cut short
            self.report()
            return
        self.results["machine"] = (
            f"{platform.machine()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={self.env['OMP_NUM_THREADS']}"
        )
        self.stage("corpus", self.corpus)
        self.stage("spm", self.spm_stage)
        self.stage("shards", self.shards)
        self.stage("encoder", self.encoder)
        self.stage("starts", self.starts)
        recipe = [
            ("pretrain", lambda: self.pretrain("pretrain", "xlmr")),
            ("export", self.export),
            ("ft_deltalm", lambda: self.finetune("deltalm")),
            ("pretrain_random", lambda: self.pretrain("pretrain_random", "random")),
        ]
        others = [(f"ft_{n}", lambda n=n: self.finetune(n)) for n in ("random", "interleaved", "encoder")]
        lanes = [recipe, others] if self.args.jobs > 1 else [recipe[:3] + others + recipe[3:]]
        run_lane = lambda lane: [self.stage(name, fn) for name, fn in lane]  # noqa: E731
        with ThreadPoolExecutor(len(lanes)) as pool:
            for future in [pool.submit(run_lane, lane) for lane in lanes]:
                future.result()
        self.report()

    def report(self) -> None:
        from benchmarks.learning_report import write_report

        self.results["chain"] = self.chain()
        self.save()
        write_report(self.work, self.results)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from deltalm.model.config import MODEL_PRESETS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/learning")
    p.add_argument(
        "--jobs", type=int, default=1, help="2: pre-training chain and other fine-tunings side by side"
    )
    p.add_argument("--report-only", action="store_true", help="report the finished stages, run nothing")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--spm-vocab", type=int, default=2000)
    p.add_argument("--model", choices=list(MODEL_PRESETS), default="small", help="model preset (the demo's)")
    p.add_argument("--encoder-steps", type=int, default=2000)
    p.add_argument("--pretrain-steps", type=int, default=3000)
    p.add_argument("--pretrain-batch", type=int, default=16)
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--ft-pairs", type=int, default=2000, help="fine-tuning training pairs per direction")
    p.add_argument("--ft-steps", type=int, default=1000)
    p.add_argument("--ft-batch", type=int, default=32)
    p.add_argument("--ft-lr", type=float, default=5e-4)
    p.add_argument("--ft-warmup", type=int, default=100)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--heldout-windows", type=int, default=64, help="held-out rows per language and objective")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    Check(parse_args(argv)).main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
