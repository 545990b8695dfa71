"""``python -m demo`` (what ``bash launch.sh`` runs): the whole DeltaLM pipeline on the bundled corpus.

Examples::

    python -m demo                                # runs/demo, the ~10-minute CPU budget
    python -m demo --run-dir runs/demo2 --budget full
    python -m demo --budget smoke --run-dir /tmp/d   # seconds-scale steps (tests)

Stages (each prints what it does, each runs the project's real command line in a subprocess, each writes
``<run-dir>/<stage>/DONE`` when finished, so a second call skips finished stages; ``--redo STAGE`` forgets a stage
and everything after it):

1. ``spm``: SentencePiece model on the monolingual sample (``python -m data_prep train-spm``);
2. ``data``: ``python -m data_prep mono`` per language and ``parallel`` per pair into one dataset directory;
3. ``encoder``: an XLM-R-shaped encoder of the budget's model preset (``tiny`` for smoke, ``small`` otherwise)
   made by a short masked-LM pre-training of ``transformers.XLMRobertaForMaskedLM`` on the same monolingual
   text (:mod:`demo.encoder`), saved as an HF directory — the stand-in for InfoXLM;
4. ``pretrain``: ``pretrain/train.py --preset tiny --set model.preset=<the budget's>`` (the CPU-sized run
   settings) initialized from it (``init.kind=xlmr``), both objectives (span corruption and translation span
   corruption);
5. ``export``: ``python -m deltalm.export --verify`` of the newest committed checkpoint (safetensors);
6. ``finetune``: ``finetune/train.py`` on En→De and En→Fr (``init.kind=pretrained`` from the export) and, side by
   side, the control: the same command with ``init.kind=random`` (random init, same shape, data, steps and seed;
   :mod:`demo.baseline`);
7. ``evaluate``: ``python -m finetune.evaluate`` with sacreBLEU on the held-out test split, both runs, and
   sacreBLEU's paired bootstrap of the difference;
8. ``report``: ``report.md`` and ``report.png`` (loss curves + BLEU bars) in the run directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from demo.console import StageFailed, StageInterrupted, child_environment, run_stage_command

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "data_prep" / "sample_corpus"
STAGES = ("spm", "data", "encoder", "pretrain", "export", "finetune", "evaluate", "report")
DONE = "DONE"


class DemoError(RuntimeError):
    """A stage failed (``exit_code`` 1) or was stopped by a signal (128 + signal number); the message names
    the stage's log file."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Budget:
    """How much work each stage does (steps are optimizer steps)."""

    name: str
    mono_langs: tuple[str, ...]
    pairs: tuple[str, ...]
    spm_vocab: int
    spm_sentences: int
    encoder_steps: int
    pretrain_steps: int
    finetune_steps: int
    validate_every: int
    test_lines: int  # 0 = the whole held-out test split
    beam_size: int
    valid_examples: int  # validation sentences generated per pair during fine-tuning
    finetune_pairs: int = 0  # training pairs per direction for fine-tuning (0 = the whole train split)
    model: str = "tiny"  # the model preset (deltalm/model/config.py) of the encoder and so of DeltaLM


ALL_MONO = ("en", "de", "fr", "es", "zh", "hi")
BUDGETS = {
    "smoke": Budget(
        "smoke", mono_langs=("en", "de"), pairs=("de",), spm_vocab=600, spm_sentences=4000, encoder_steps=4,
        pretrain_steps=4, finetune_steps=4, validate_every=4, test_lines=8, beam_size=2, valid_examples=8,
    ),
    "small": Budget(
        "small", mono_langs=ALL_MONO, pairs=("de", "fr"), spm_vocab=2000, spm_sentences=20000, encoder_steps=1000,
        pretrain_steps=2000, finetune_steps=1000, validate_every=250, test_lines=0, beam_size=5, valid_examples=100,
        finetune_pairs=2000, model="small",
    ),
    "full": Budget(
        "full", mono_langs=ALL_MONO, pairs=("de", "fr"), spm_vocab=4000, spm_sentences=100000, encoder_steps=1500,
        pretrain_steps=2000, finetune_steps=3000, validate_every=500, test_lines=0, beam_size=5, valid_examples=300,
        model="small",
    ),
}  # fmt: skip


def _children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


_LOGS_SHOWN: set[Path] = set()  # a stage's log is named on the console with its first command


def run_command(cmd: list[str], log: Path, env: dict | None = None) -> None:
    """Run one stage command: its output goes to ``log``, its progress lines to the screen
    (:mod:`demo.console`); on failure the log's last lines are shown."""
    first = log not in _LOGS_SHOWN
    _LOGS_SHOWN.add(log)
    try:
        run_stage_command(cmd, log, cwd=REPO, env=child_environment(REPO, env), say=say, show_log=first)
    except StageFailed as exc:
        raise DemoError(str(exc)) from None
    except StageInterrupted as exc:
        raise DemoError(str(exc), exc.exit_code) from None


class Demo:
    def __init__(self, run_dir: Path, budget: Budget) -> None:
        self.run_dir = run_dir
        self.budget = budget
        self.python = sys.executable
        accelerator = os.environ.get("DS_ACCELERATOR", "") or self._accelerator()
        self.env = {"DS_ACCELERATOR": accelerator}
        if accelerator == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            # a model this small gains nothing from a second thread, and on a busy machine OpenMP's spin-waiting
            # burns the CPU time (measured: 40 pre-training steps 65 CPU-s with 2 threads, 0.7 CPU-s with 1)
            self.env["OMP_NUM_THREADS"] = "1"

    @staticmethod
    def _accelerator() -> str:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    # ------------------------------------------------------------------ paths
    def stage_dir(self, stage: str) -> Path:
        return self.run_dir / stage

    @property
    def spm_model(self) -> Path:
        return self.stage_dir("spm") / "spm.model"

    @property
    def dataset(self) -> Path:
        return self.stage_dir("data") / "ds"

    def log(self, stage: str) -> Path:
        return self.run_dir / "logs" / f"{stage}.log"

    # ------------------------------------------------------------------ bookkeeping
    def settings(self) -> dict:
        """The budget as it reads back from JSON (tuples become lists)."""
        return json.loads(json.dumps(asdict(self.budget)))

    def done(self, stage: str) -> dict | None:
        marker = self.stage_dir(stage) / DONE
        if not marker.is_file():
            return None
        try:
            info = json.loads(marker.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None  # not a marker this demo wrote whole: the stage runs again
        # a stage done under other budget numbers is not reused (changing a step count re-runs from there)
        return info if info.get("budget_settings") == self.settings() else None

    def mark_done(self, stage: str, seconds: float, **info) -> None:
        marker = self.stage_dir(stage) / DONE
        marker.parent.mkdir(parents=True, exist_ok=True)
        data = {
            **info,
            "budget": self.budget.name,
            "budget_settings": self.settings(),
            "seconds": round(seconds, 1),
        }
        tmp = marker.with_name(DONE + ".tmp")  # whole or absent: a kill mid-write leaves no marker
        tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        tmp.replace(marker)

    def forget(self, stage: str) -> None:
        for later in STAGES[STAGES.index(stage) :]:
            (self.stage_dir(later) / DONE).unlink(missing_ok=True)

    def run(self, redo: str | None = None) -> dict:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "budget.json").write_text(json.dumps(asdict(self.budget), indent=1) + "\n")
        if redo:
            self.forget(redo)
        say(f"run directory {self.run_dir}, budget {self.budget.name}, device {self.env['DS_ACCELERATOR']}")
        timings = {}
        for number, stage in enumerate(STAGES, 1):
            previous = self.done(stage)
            if previous is not None:
                say(f"{number}/{len(STAGES)} {stage}: done before ({previous['seconds']} s), reused")
                timings[stage] = previous["seconds"]
                continue
            if self.stage_dir(stage).exists() and stage not in ("report",):
                shutil.rmtree(self.stage_dir(stage))  # a half-finished earlier attempt
            self.log(stage).unlink(missing_ok=True)
            started, cpu_before = time.perf_counter(), _children_cpu_seconds()
            info = getattr(self, f"stage_{stage}")(number) or {}
            seconds = time.perf_counter() - started
            # CPU time of the stage's processes: on a shared machine wall time overstates the work
            info["cpu_seconds"] = round(_children_cpu_seconds() - cpu_before, 1)
            self.mark_done(stage, seconds, **info)
            timings[stage] = round(seconds, 1)
            say(f"{number}/{len(STAGES)} {stage}: finished in {seconds:.1f} s")
        return timings

    def _title(self, number: int, text: str) -> None:
        say(f"{number}/{len(STAGES)} {text}")

    # ------------------------------------------------------------------ stages
    def stage_spm(self, number: int) -> dict:
        b = self.budget
        self._title(number, f"SentencePiece model ({b.spm_vocab} pieces) on mono {' '.join(b.mono_langs)}")
        inputs = [str(CORPUS / "mono" / f"{lang}.txt.gz") for lang in b.mono_langs]
        cmd = [self.python, "-m", "data_prep", "train-spm", "--vocab-size", str(b.spm_vocab)]
        # coverage < 1: the zh/hi sample has ~1,400 distinct characters, rare ones become <unk>
        cmd += [
            "--input-sentence-size",
            str(b.spm_sentences),
            "--character-coverage",
            "0.9995",
            "--num-threads",
            "1",
        ]
        cmd += ["--output", str(self.stage_dir("spm") / "spm"), *inputs]
        run_command(cmd, self.log("spm"))
        return {"spm_model": str(self.spm_model)}

    def stage_data(self, number: int) -> dict:
        b = self.budget
        self._title(
            number, f"shards: mono {' '.join(b.mono_langs)}, parallel {' '.join('en-' + p for p in b.pairs)}"
        )
        for lang in b.mono_langs:
            cmd = [self.python, "-m", "data_prep", "mono", "--lang", lang, "--spm", str(self.spm_model)]
            cmd += [
                "--output",
                str(self.dataset),
                "--workers",
                "1",
                "--no-progress",
                str(CORPUS / "mono" / f"{lang}.txt.gz"),
            ]
            run_command(cmd, self.log("data"))
        for tgt in b.pairs:
            cmd = [self.python, "-m", "data_prep", "parallel", "--src-lang", "en", "--tgt-lang", tgt]
            cmd += [
                "--spm",
                str(self.spm_model),
                "--output",
                str(self.dataset),
                "--workers",
                "1",
                "--no-progress",
            ]
            cmd += [str(CORPUS / "parallel" / f"train.en-{tgt}.jsonl.gz")]
            run_command(cmd, self.log("data"))
        run_command([self.python, "-m", "data_prep", "verify", str(self.dataset)], self.log("data"))
        return {"dataset": str(self.dataset)}

    def stage_encoder(self, number: int) -> dict:
        b = self.budget
        self._title(
            number,
            f"XLM-R encoder ({b.model} preset): masked-LM pre-training, {b.encoder_steps} steps (stand-in for InfoXLM)",
        )
        out = self.stage_dir("encoder") / "xlmr"
        cmd = [self.python, "-m", "demo.encoder", "--spm", str(self.spm_model), "--out", str(out)]
        cmd += ["--steps", str(b.encoder_steps), "--model", b.model]
        cmd += [str(CORPUS / "mono" / f"{lang}.txt.gz") for lang in b.mono_langs]
        run_command(cmd, self.log("encoder"))
        return json.loads((out / "mlm_training.json").read_text(encoding="utf-8"))

    def stage_pretrain(self, number: int) -> dict:
        from deltalm.vocabulary import Vocabulary
        from demo.encoder import MAX_POSITIONS

        b = self.budget
        self._title(
            number,
            f"DeltaLM pre-training, {b.pretrain_steps} steps, span corruption + translation span corruption",
        )
        vocab = Vocabulary.from_spm(self.spm_model)
        every = max(2, b.pretrain_steps // 3)
        sets = {
            "run.run_dir": self.stage_dir("pretrain"),
            "run.max_steps": b.pretrain_steps,
            "run.log_every": max(1, b.pretrain_steps // 10),
            "model.vocab_size": vocab.pretrain_size,
            "model.preset": b.model,
            "model.max_positions": MAX_POSITIONS,  # the encoder's table (128 tokens)
            "init.kind": "xlmr",
            "init.path": self.stage_dir("encoder") / "xlmr",
            "data.data_dirs": f"[{self.dataset}]",
            "data.spm_model": str(self.spm_model),
            "schedule.warmup_steps": max(1, b.pretrain_steps // 10),
            "checkpoint.every": every,
            "logging.tensorboard": "true",  # events in pretrain/tensorboard/ (the report links them)
        }
        cmd = [self.python, "pretrain/train.py", "--preset", "tiny"]
        for key, value in sets.items():
            cmd += ["--set", f"{key}={value}"]
        run_command(cmd, self.log("pretrain"), self.env)
        return {"steps": b.pretrain_steps}

    def stage_export(self, number: int) -> dict:
        self._title(number, "export the newest committed checkpoint to safetensors (+ verify logits)")
        out = self.stage_dir("export") / "model"
        cmd = [
            self.python,
            "-m",
            "deltalm.export",
            "--run-dir",
            str(self.stage_dir("pretrain")),
            "--out",
            str(out),
        ]
        cmd += ["--spm", str(self.spm_model), "--verify"]
        run_command(cmd, self.log("export"), self.env)
        return {"model": str(out)}

    def _task_files(self) -> dict:
        b = self.budget
        files: dict[str, list] = {"train": [], "valid": [], "test": []}
        for tgt in b.pairs:
            for split in files:
                path = CORPUS / "parallel" / f"{split}.en-{tgt}.jsonl.gz"
                if split == "test" and b.test_lines:
                    path = self._head(path, b.test_lines)
                if split == "train" and b.finetune_pairs:
                    path = self._head(path, b.finetune_pairs)
                files[split].append({"path": str(path), "src_lang": "en", "tgt_lang": tgt})
        return files

    def _head(self, path: Path, lines: int) -> Path:
        import gzip

        out = self.stage_dir("finetune") / f"head{lines}.{path.name.removesuffix('.gz')}"
        out.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            out.write_text(
                "".join(line for _, line in zip(range(lines), handle, strict=False)), encoding="utf-8"
            )
        return out

    def finetune_config(self) -> Path:
        import yaml

        b = self.budget
        config = {
            "run": {
                "run_dir": str(self.stage_dir("finetune") / "run"),
                "max_steps": b.finetune_steps,
                "log_every": max(1, b.finetune_steps // 10),
            },
            "init": {"kind": "pretrained", "path": str(self.stage_dir("export") / "model")},
            "optimizer": {"lr": 1e-3},
            "batch": {"global_batch_size": 32, "micro_batch_size": 16},
            "schedule": {"kind": "inverse_sqrt", "warmup_steps": max(1, b.finetune_steps // 4)},
            "checkpoint": {"every": max(2, b.finetune_steps // 5), "keep_last": 2},
            "logging": {"tensorboard": True},  # events in finetune/run/tensorboard/
            "task": {
                "name": "translation",
                "spm_model": str(self.spm_model),
                **self._task_files(),
                # the demo's position table holds 128 tokens (finetune's defaults are 256)
                "max_source_length": 128,
                "max_target_length": 128,
                "validate_every": b.validate_every,
                "valid_max_examples": b.valid_examples,
                "average_last": 3,
                "beam_size": b.beam_size,
            },
        }
        path = self.stage_dir("finetune") / "finetune.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return path

    def stage_finetune(self, number: int) -> dict:
        from demo.baseline import baseline_config

        b = self.budget
        pairs = ", ".join(f"En→{p.capitalize()}" for p in b.pairs)
        self._title(
            number,
            f"fine-tuning {pairs}, {b.finetune_steps} steps, from the export and (the control, side by side) "
            "from random init",
        )
        config = self.finetune_config()
        control = baseline_config(
            config,
            self.stage_dir("export") / "model",
            self.random_run,
            self.stage_dir("finetune") / "random.yaml",
        )
        # the control runs in the background on the second core while the pre-trained run is the stage's
        # foreground command (signals reach it through run_command, and the control is stopped with it)
        log = self.log("finetune_random")
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [self.python, "finetune/train.py", "--config", str(control)]
        say(f"  $ {' '.join(cmd)}  (control, in the background; log: {log})")
        with open(log, "w", encoding="utf-8") as handle:
            # no MASTER_PORT: a one-process run then picks a free port, so the two runs' rendezvous never collide
            env = {k: v for k, v in child_environment(REPO, self.env).items() if k != "MASTER_PORT"}
            background = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
            try:
                run_command(
                    [self.python, "finetune/train.py", "--config", str(config)],
                    self.log("finetune"),
                    self.env,
                )
            except BaseException:
                background.terminate()
                background.wait()
                raise
            code = background.wait()
        if code != 0:
            tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
            raise DemoError(
                f"the random-init control failed (exit {code}); see {log}:\n  " + "\n  ".join(tail)
            )
        return {"config": str(config), "random_init_config": str(control)}

    @property
    def random_run(self) -> Path:
        return self.stage_dir("finetune") / "random_run"

    def stage_evaluate(self, number: int) -> dict:
        from demo.baseline import compare

        self._title(
            number,
            f"sacreBLEU on the held-out test split (beam {self.budget.beam_size}), pre-trained and random init",
        )
        config = self.stage_dir("finetune") / "finetune.yaml"
        models = {}
        for run, out in (
            (self.stage_dir("finetune") / "run", self.stage_dir("evaluate")),
            (self.random_run, self.stage_dir("evaluate") / "random_init"),
        ):
            model = run / "averaged" if (run / "averaged").is_dir() else run / "final"
            cmd = [self.python, "-m", "finetune.evaluate", "--model", str(model)]
            cmd += ["--config", str(config), "--output-dir", str(out)]
            run_command(cmd, self.log("evaluate"), self.env)
            models[str(out)] = str(model)
        comparison = compare(config, self.stage_dir("evaluate"), self.stage_dir("evaluate") / "random_init")
        for row in comparison:
            verdict = "significant" if row["significant"] else "not significant"
            say(
                f"  {row['pair']}: pre-trained {row['pretrained']:.2f} vs random init {row['random']:.2f} BLEU "
                f"({row['difference']:+.2f}, paired bootstrap p = {row['p_value']}, {verdict})"
            )
        return {"models": models, "comparison": comparison}

    def stage_report(self, number: int) -> dict:
        from demo.report import write_report

        self._title(number, "report.md + report.png")
        paths = write_report(self.run_dir)
        return {k: str(v) for k, v in paths.items()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description="The DeltaLM pipeline, end to end.")
    parser.add_argument("--run-dir", default="runs/demo")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--redo", choices=STAGES, default=None, help="re-run this stage and every later one")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_dir = Path(args.run_dir)
    if not run_dir.is_absolute():
        run_dir = Path.cwd() / run_dir
    started = time.perf_counter()
    try:
        Demo(run_dir, BUDGETS[args.budget]).run(redo=args.redo)
    except DemoError as exc:
        print(f"{'error' if exc.exit_code == 1 else 'stopped'}: {exc}", file=sys.stderr)
        return exc.exit_code
    say(f"all stages done in {time.perf_counter() - started:.0f} s; report: {run_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
