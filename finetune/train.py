"""Fine-tuning entry point on the shared DeepSpeed engine.

Examples::

    deepspeed --num_gpus 2 finetune/train.py --task translation --config configs/finetune_mt.yaml
    DS_ACCELERATOR=cpu python finetune/train.py --task summarization --config cfg.yaml --set run.max_steps=100

The config is :class:`finetune.config.FinetuneConfig` (the engine's sections + ``task``). The run directory
gets, besides the engine's committed checkpoints and metrics: ``weights/step_*.safetensors`` (model weights
at every checkpoint, the newest ``task.average_last`` kept, for ``python -m finetune.average``),
``valid.jsonl`` (one line per validation), ``best/`` (a ``save_pretrained`` directory of the best validation
score by ``task.best_metric``), ``final/`` and ``averaged/`` (the mean of the kept weights) at the end (not
when stopped by a signal: that run is checkpointed, not finished), and
``data_report.json`` (lines read and skipped by reason).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (``deepspeed finetune/train.py``): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from deltalm.adapters.checkpoint_io import CheckpointError as AdapterCheckpointError  # noqa: E402
from deltalm.config_tree import ConfigError  # noqa: E402
from deltalm.engine.checkpoint import CheckpointError, tag_for  # noqa: E402
from deltalm.engine.cli import stopped  # noqa: E402
from deltalm.engine.distributed import LaunchError, discover, init_process_group, shutdown  # noqa: E402
from deltalm.engine.ds_config import build_ds_config, zero_stage_of  # noqa: E402
from deltalm.engine.preemption import Preempted, install_for_setup  # noqa: E402
from deltalm.engine.trainer import NonfiniteAbort, Trainer  # noqa: E402
from deltalm.text_lines import split_lines  # noqa: E402
from deltalm.vocabulary import Vocabulary  # noqa: E402
from finetune.averaging import AveragingError, average_state_dicts  # noqa: E402
from finetune.config import FinetuneConfig, load_finetune_config  # noqa: E402
from finetune.criterion import make_criterion  # noqa: E402
from finetune.data import FinetuneBatches, load_split, print_report, task_vocabulary  # noqa: E402
from finetune.decoding import gather_texts, generate, validation_loss  # noqa: E402
from finetune.metrics import score_all  # noqa: E402
from finetune.model_init import init_lang_tags, initial_model  # noqa: E402
from finetune.readers import DataError  # noqa: E402
from finetune.tasks import Example, TaskError  # noqa: E402

USER_ERRORS = (
    ConfigError,
    DataError,
    TaskError,
    CheckpointError,
    AdapterCheckpointError,
    LaunchError,
    AveragingError,
    NonfiniteAbort,
)


def _all_reduce(values: list[float]) -> list[float]:
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor.tolist()


class FinetuneTrainer(Trainer):
    """The engine's trainer plus validation, best-checkpoint export and per-checkpoint weights."""

    def __init__(
        self, config: FinetuneConfig, model, batches, rank, *, vocab: Vocabulary, valid: dict
    ) -> None:
        super().__init__(config, model, batches, rank, loss_fn=make_criterion(config.task.label_smoothing))
        self.task = config.task
        self.vocab = vocab
        self.valid: dict[str, list[Example]] = valid
        self.best: dict | None = None
        best_file = self.run_dir / "best" / "best.json"
        if best_file.is_file():
            self.best = json.loads(best_file.read_text(encoding="utf-8"))

    # ------------------------------------------------------------------ hooks
    def setup(self) -> None:
        super().setup()
        log = self.run_dir / "valid.jsonl"
        if self.resumed_from and self.rank.is_main and log.is_file():  # drop validations of a lost future
            lines = split_lines(log.read_text(encoding="utf-8"))
            kept = [x for x in lines if json.loads(x)["step"] <= self.state.step]
            log.write_text("".join(x + "\n" for x in kept), encoding="utf-8")

    def train_step(self) -> bool:
        stop = super().train_step()
        step = self.state.step
        every = self.task.validate_every
        if self.valid and ((every and step % every == 0) or step == self.config.run.max_steps):
            self.validate()
        return stop

    def save_checkpoint(self) -> None:
        saved_before = self._last_saved_step
        super().save_checkpoint()
        if self._last_saved_step != saved_before and self.rank.is_main:
            self._write_weights()

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict:
        """Validation loss (and generation metrics unless ranking by loss); exports ``best/`` on improvement."""
        step = self.state.step
        record: dict = {"step": step, "pairs": {}}
        loss = nll = tokens = 0.0
        for name, examples in sorted(self.valid.items()):
            l_sum, n_sum, n_tok = validation_loss(
                self.model,
                examples,
                self.task.eval_batch_size,
                self.task.label_smoothing,
                self.rank.rank,
                self.rank.world_size,
            )
            l_sum, n_sum, n_tok = _all_reduce([l_sum, n_sum, float(n_tok)])
            loss, nll, tokens = loss + l_sum, nll + n_sum, tokens + n_tok
            pair = {"loss": l_sum / max(n_tok, 1), "nll": n_sum / max(n_tok, 1)}
            if self.task.resolved_best_metric != "loss":
                local = generate(
                    self.model, examples, self.vocab, self.task, None, self.rank.rank, self.rank.world_size
                )
                hyps = gather_texts(local, len(examples))
                result = score_all(
                    hyps,
                    [e.reference for e in examples],
                    metrics=self.task.metrics,
                    lang=examples[0].tgt_lang or "en",
                    bleu_tokenize=self.task.bleu_tokenize,
                )
                pair.update(result.scores)
            record["pairs"][name] = pair
        record["loss"] = loss / max(tokens, 1)
        record["nll"] = nll / max(tokens, 1)
        metric = self.task.resolved_best_metric
        if metric == "loss":
            value = record["loss"]
        else:
            values = [p[metric] for p in record["pairs"].values() if metric in p]
            value = sum(values) / len(values) if values else float("nan")
        record[metric] = value
        improved = math.isfinite(value) and (
            self.best is None
            or (value < self.best["value"] if metric == "loss" else value > self.best["value"])
        )
        record["best"] = bool(improved)
        if self.rank.is_main:
            with open(self.run_dir / "valid.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            self._say(
                f"validation step {step}: loss {record['loss']:.4f} {metric} {value:.3f}{' (best)' if improved else ''}"
            )
        if improved:
            self.best = {"step": step, "metric": metric, "value": value}
            if self.rank.is_main:
                self._export(self.run_dir / "best", extra={"best.json": self.best})
        return record

    # ------------------------------------------------------------------ weights
    def _state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu").contiguous() for k, v in self.model.state_dict().items()}

    def _write_weights(self) -> None:
        from safetensors.torch import save_file

        folder = self.run_dir / "weights"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{tag_for(self.state.step)}.safetensors"  # the checkpoint's own tag: one name width
        tmp = path.with_name(path.name + ".tmp")
        save_file(self._state(), str(tmp), metadata={"format": "pt", "step": str(self.state.step)})
        tmp.replace(path)
        from finetune.average import weights_files

        for old in weights_files(self.run_dir)[: -self.task.average_last]:
            old.unlink(missing_ok=True)

    def _export(
        self, directory: Path, state: dict[str, torch.Tensor] | None = None, extra: dict | None = None
    ) -> None:
        from deltalm.adapters.pretrained import save_pretrained
        from deltalm.model import DeltaLM

        model = self.model
        if state is not None:
            model = DeltaLM(self.model.config)
            model.load_state_dict(state)
        save_pretrained(model, directory, self.vocab)
        for name, obj in (extra or {}).items():
            (directory / name).write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")

    def finish(self) -> dict:
        """Export ``final/`` and ``averaged/`` (rank 0); returns a summary."""
        summary: dict = {"step": self.state.step, "best": self.best}
        if not self.rank.is_main:
            return summary
        self._export(self.run_dir / "final")
        summary["final"] = str(self.run_dir / "final")
        from safetensors.torch import load_file

        from finetune.average import weights_files

        files = weights_files(self.run_dir)[-self.task.average_last :]
        if files:
            averaged = average_state_dicts([load_file(str(p)) for p in files], [str(p) for p in files])
            self._export(
                self.run_dir / "averaged",
                state=averaged,
                extra={"averaged_from.json": [p.name for p in files]},
            )
            summary["averaged"] = {"dir": str(self.run_dir / "averaged"), "from": [p.name for p in files]}
        return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="finetune/train.py", description="Fine-tune DeltaLM on a task.")
    parser.add_argument(
        "--task", choices=["translation", "summarization", "question_generation", "data_to_text"]
    )
    parser.add_argument("--config", help="YAML config (FinetuneConfig)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    return parser.parse_args(argv)


def check_length_limits(task, model_config) -> None:
    """Refuse task limits the loaded model's position table cannot hold (one line, before training)."""
    task.check_lengths(model_config.max_source_length, f"max_positions={model_config.max_positions}")


def run(config: FinetuneConfig) -> dict:
    """Train per ``config`` in this process (one rank); returns the summary written to ``summary.json``."""
    rank = discover()
    config.batch.accumulation(rank.world_size)  # an indivisible global batch is refused before any work
    vocab = task_vocabulary(config.task, saved_tags=init_lang_tags(config.init))
    config.task.lang_tags = list(vocab.lang_tags)  # the resolved tag order goes into config.yaml
    train, train_report = load_split(config.task, config.task.train, vocab, training=True)
    valid, valid_report = ({}, None)
    if config.task.valid:
        valid, valid_report = load_split(
            config.task, config.task.valid, vocab, training=False, limit=config.task.valid_max_examples
        )
    if rank.is_main:
        print_report("train data", train_report)
        if valid_report is not None:
            print_report("valid data", valid_report)
    torch.manual_seed(config.run.seed)
    model = initial_model(config.init, config.model, vocab)
    config.model = model.config  # the resolved architecture (tagged vocabulary) goes into config.yaml
    check_length_limits(config.task, model.config)
    init_process_group(rank, timeout_s=config.deepspeed.timeout_s, cpu_shm_comm=config.deepspeed.cpu_shm_comm)
    if zero_stage_of(build_ds_config(config, rank.world_size)) == 3:
        raise ConfigError(f"{config.deepspeed.config}: ZeRO-3 is not supported for fine-tuning; use ZeRO 0-2")
    accumulation = config.batch.accumulation(rank.world_size)
    rise = (config.task.temperature_rise_steps or config.run.max_steps) * accumulation
    batches = FinetuneBatches(
        config.task,
        train,
        vocab,
        config.batch.micro_batch_size,
        config.run.seed,
        rank.rank,
        rank.world_size,
        rise,
    )
    trainer = FinetuneTrainer(config, model, batches, rank, vocab=vocab, valid=valid)
    result = trainer.fit()
    summary = {"stopped_by": result.stopped_by, "resumed_from": result.resumed_from}
    if result.stopped_by == "signal":  # preempted: checkpointed, not finished (no final/ or averaged/)
        summary.update(step=result.step, best=trainer.best)
    else:
        summary.update(trainer.finish())
    if rank.is_main:
        reports = {"train": train_report.to_dict(), "valid": valid_report.to_dict() if valid_report else None}
        if batches.mono_report is not None:
            reports["zero_shot_mono"] = batches.mono_report.to_dict()
        (trainer.run_dir / "data_report.json").write_text(
            json.dumps(reports, indent=1) + "\n", encoding="utf-8"
        )
        (trainer.run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    import torch.distributed as dist

    preemption = install_for_setup()  # first: a stop signal from here until the first step ends the run
    args = parse_args(argv)
    started_here = not (dist.is_available() and dist.is_initialized())
    try:
        config = load_finetune_config(args.config, args.set, args.task)
        summary = run(config)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Preempted as exc:
        return stopped(exc)
    finally:
        preemption.uninstall()
        if started_here:  # tear down only the process group this call started
            shutdown()
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
