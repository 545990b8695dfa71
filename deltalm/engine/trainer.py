"""The training loop on a DeepSpeed engine, shared by pre-training and fine-tuning.

One optimizer step (:meth:`Trainer.train_step`) reads as its named parts: fetch the micro-batches, all-reduce
the step's real-token count, forward/backward each micro-batch with its loss sum scaled by
``world / global_tokens`` (so DeepSpeed's gradient averaging yields the exact global token mean),
all-reduce the loss and the non-finite/stop flags, step (the guard skips a non-finite step at every ZeRO stage),
log. Randomness (dropout) is derived from ``(seed, global micro-batch slot)``, so a resumed run and a run with a
different rank layout draw the same masks and no RNG state has to be saved.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from deltalm.config_tree import ConfigError, dump_yaml, to_dict
from deltalm.engine.checkpoint import CheckpointError, CheckpointStore
from deltalm.engine.config import TrainingConfig
from deltalm.engine.distributed import RankInfo, collective_device
from deltalm.engine.ds_config import build_ds_config, precision_of, uses_basic_optimizer, zero_stage_of
from deltalm.engine.flops import device_peak_tflops, mfu, training_flops_per_sample
from deltalm.engine.metrics import MetricsLogger
from deltalm.engine.optimizer import build_optimizer
from deltalm.engine.preemption import PreemptionFlag
from deltalm.engine.schedule import LRSchedule


class BatchSource(Protocol):
    """What the trainer pulls micro-batches from (the pre-training loader, a fine-tuning reader, ...)."""

    def next_batch(self) -> dict[str, torch.Tensor]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


LossFn = Callable[[nn.Module, dict], object]  # (model, batch) -> LossOutput(loss_sum, nll_sum, num_tokens)


class NonfiniteAbort(RuntimeError):
    """Too many non-finite steps in a row."""


@dataclass
class TrainerState:
    step: int = 0
    skipped_steps: int = 0
    consecutive_nonfinite: int = 0
    tokens_seen: int = 0
    samples_seen: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            if not hasattr(self, key):
                raise CheckpointError(f"trainer state has an unknown key {key!r}")
            setattr(self, key, int(value))


@dataclass
class FitResult:
    step: int
    stopped_by: str  # max_steps | signal
    skipped_steps: int
    resumed_from: str | None


class TrainingModule(nn.Module):
    """What DeepSpeed wraps: ``forward(batch)`` runs the loss, so ZeRO-3 gathers every weight it touches
    (the tied output projection is used outside the embedding module's own forward)."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self._loss_fn = loss_fn

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self._loss_fn(self.model, batch)
        # A tuple of tensors (not the LossOutput dataclass): ZeRO-3 hooks tensor outputs to re-gather the
        # external (tied output) weight for the backward pass.
        return out.loss_sum, out.nll_sum, out.num_tokens


def default_loss(model: nn.Module, batch: dict) -> object:
    return model.loss(batch)


def derived_seed(seed: int, slot: int) -> int:
    """A 63-bit seed from (run seed, global micro-batch slot); independent of how slots map to ranks."""
    return int(np.random.SeedSequence([seed, slot]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor.cpu().tolist()


class Trainer:
    def __init__(
        self,
        config: TrainingConfig,
        model: nn.Module,
        batches: BatchSource,
        rank: RankInfo,
        *,
        loss_fn: LossFn = default_loss,
    ) -> None:
        self.config = config
        self.model = model
        self.batches = batches
        self.rank = rank
        self.loss_fn = loss_fn
        self.state = TrainerState()
        self.accumulation = config.batch.accumulation(rank.world_size)
        self.schedule = LRSchedule.from_config(config.schedule, config.optimizer.lr, config.run.max_steps)
        self.run_dir = Path(config.run.run_dir)
        self.store = CheckpointStore(
            config.checkpoint_dir,
            keep_last=config.checkpoint.keep_last,
            rank=rank.rank,
            world_size=rank.world_size,
        )
        self.metrics = MetricsLogger(
            self.run_dir,
            enabled=rank.is_main,
            tensorboard=config.logging.tensorboard,
            max_steps=config.run.max_steps,
        )
        self.preemption = PreemptionFlag.for_process()  # the entry point's, installed before set-up began
        self.engine = None
        self.resumed_from: str | None = None
        self._last_saved_step = -1

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        """Find the checkpoint to resume from, build the DeepSpeed engine, load, write the resolved config."""
        import deepspeed

        tag, manifest = self._find_resume_point()
        ds_config = build_ds_config(self.config, self.rank.world_size)
        universal = manifest is not None and (
            int(manifest["world_size"]) != self.rank.world_size
            or int(manifest["zero_stage"]) != zero_stage_of(ds_config)
        )
        if universal and 0 in (int(manifest["zero_stage"]), zero_stage_of(ds_config)):
            raise ConfigError(
                f"checkpoint {tag} was saved by {manifest['world_size']} ranks at ZeRO-{manifest['zero_stage']}, "
                f"this run has {self.rank.world_size} at ZeRO-{zero_stage_of(ds_config)}: changing ranks or "
                "ZeRO stage goes through a universal checkpoint, which needs ZeRO-1, 2 or 3 on both sides; resume "
                f"with deepspeed.zero_stage={manifest['zero_stage']} on {manifest['world_size']} ranks, or start "
                "a new run.run_dir"
            )
        if universal:
            self._say(
                f"resuming {tag} saved by {manifest['world_size']} ranks at ZeRO-{manifest['zero_stage']}: "
                "converting to a universal checkpoint"
            )
            self.store.convert_to_universal(tag)
            ds_config = build_ds_config(self.config, self.rank.world_size, load_universal=True)
        self.ds_config = ds_config
        self.zero_stage = zero_stage_of(ds_config)
        self.precision = precision_of(ds_config)
        from deepspeed.accelerator import get_accelerator

        device_type = get_accelerator().device_name()
        offload = "offload_optimizer" in ds_config.get("zero_optimization", {})
        self.optimizer = build_optimizer(
            self.model,
            self.config.optimizer,
            device_type=device_type,
            offload=offload,
            partitioned=self.zero_stage > 0,
            clip_here=uses_basic_optimizer(ds_config),
        )
        module = TrainingModule(self.model, self.loss_fn)
        if self.zero_stage == 3 and hasattr(self.model, "output_weight"):
            deepspeed.zero.register_external_parameter(module, self.model.output_weight)
        self.engine, _, _, _ = deepspeed.initialize(
            model=module, optimizer=self.optimizer, config=ds_config, dist_init_required=False
        )
        self.device = self.engine.device
        self.peak_tflops = self.config.logging.peak_tflops or (
            device_peak_tflops(get_accelerator().device_name(0), self.precision)
            if device_type == "cuda"
            else 0.0
        )
        if tag is not None:
            loaded = self.store.load(self.engine, tag, manifest, universal=universal)
            self.state.load_state_dict(loaded.client_state["trainer"])
            self.batches.load_state_dict(loaded.rank_state["loader"])
            self.resumed_from = tag
            self._last_saved_step = self.state.step
            self._say(f"resumed from {self.store.directory / tag} at step {self.state.step}")
        self.metrics.begin(self.state.step)  # logs read like one run, also after a kill before any checkpoint
        if self.rank.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            dump_yaml(self.config, self.run_dir / "config.yaml")
            board = self.metrics.tensorboard_dir
            self._say(f"logging: {self.metrics.path}" + (f", TensorBoard events in {board}" if board else ""))

    def _find_resume_point(self) -> tuple[str | None, dict | None]:
        """Tag + verified manifest to resume from (None when starting fresh); every rank agrees or all fail."""
        mode = self.config.checkpoint.resume
        if mode == "never":
            return None, None
        error = ""
        tag = manifest = None
        try:
            tag = self.store.resume_tag()
            if tag is not None:
                manifest = self.store.verify(tag)
        except CheckpointError as exc:
            error = str(exc)
        failed = _all_reduce([1.0 if error else 0.0], collective_device())[0]
        if failed:
            raise CheckpointError(error or "another rank found the checkpoint to resume from corrupted")
        if tag is None and mode == "require":
            raise CheckpointError(
                f"checkpoint.resume is 'require' but {self.store.directory} has no committed checkpoint"
            )
        return tag, manifest

    # ------------------------------------------------------------------ the loop
    def fit(self) -> FitResult:
        """Set up (a stop signal now ends the run at once: :class:`Preempted`), then train to ``max_steps``
        or to a stop signal (checkpoint at the step boundary every rank agrees on)."""
        owned = not self.preemption.installed
        if owned:
            self.preemption.install(stop_now=True)
        try:
            if self.engine is None:
                self.setup()
            self.preemption.training_started()
            stopped_by = "max_steps"
            while self.state.step < self.config.run.max_steps:
                stop = self.train_step()
                if stop:
                    self._say(
                        f"{self.preemption.signal_name or 'stop signal'}: checkpointing at step {self.state.step}"
                    )
                    self.save_checkpoint()
                    stopped_by = "signal"
                    break
                if self.config.checkpoint.every and self.state.step % self.config.checkpoint.every == 0:
                    self.save_checkpoint()
            if stopped_by == "max_steps" and self.config.checkpoint.save_final:
                self.save_checkpoint()
            return FitResult(self.state.step, stopped_by, self.state.skipped_steps, self.resumed_from)
        finally:
            if owned:
                self.preemption.uninstall()
            self.metrics.close()

    def train_step(self) -> bool:
        """One optimizer step; returns True when a stop signal reached any rank (checkpoint and exit)."""
        started = time.perf_counter()
        step = self.state.step + 1
        micro_batches = [self.batches.next_batch() for _ in range(self.accumulation)]
        global_tokens, global_samples, global_flops = self._count_global_work(micro_batches)
        lr = self._set_learning_rate(self.state.step - self.state.skipped_steps + 1)
        loss_sum, nll_sum, nonfinite = self._forward_backward(step, micro_batches, global_tokens)
        totals = _all_reduce([loss_sum, nll_sum, nonfinite, float(self.preemption.requested)], self.device)
        outcome, grad_norm = self._optimizer_step(force_skip=totals[2] > 0)
        self._update_state(step, outcome, global_tokens, global_samples)
        skipped = outcome != "applied"
        elapsed = time.perf_counter() - started
        record = {
            "step": step,
            "loss": totals[0] / global_tokens if totals[2] == 0 else float("nan"),
            "nll": totals[1] / global_tokens if totals[2] == 0 else float("nan"),
            "lr": lr,
            "grad_norm": grad_norm,
            "loss_scale": self._loss_scale(),
            "skipped": skipped,
            "overflow": outcome == "overflow",
            "skipped_total": self.state.skipped_steps,
            "tokens": int(global_tokens),
            "samples": int(global_samples),
            "tokens_per_s": global_tokens / elapsed,
            "samples_per_s": global_samples / elapsed,
            "step_time_s": elapsed,
            "mfu": mfu(global_flops, elapsed, self.peak_tflops, self.rank.world_size),
        }
        self.metrics.log(record)
        self.metrics.progress(
            record,
            force=step % self.config.run.log_every == 0 or skipped,
            every_s=self.config.logging.progress_every_s,
        )
        self._check_nonfinite_streak(step)
        return totals[3] > 0

    # ------------------------------------------------------------------ the step's parts
    def _count_global_work(self, micro_batches: list[dict]) -> tuple[float, float, float]:
        tokens = samples = flops = 0.0
        model_config = getattr(self.model, "config", None)
        for batch in micro_batches:
            tokens += float((batch["decoder_loss_weights"] > 0).sum())
            rows, source_len = batch["encoder_input_tokens"].shape
            samples += rows
            if model_config is not None:
                target_len = batch["decoder_input_tokens"].shape[1]
                flops += rows * training_flops_per_sample(model_config, source_len, target_len)
        global_tokens, global_samples, global_flops = _all_reduce([tokens, samples, flops], self.device)
        if global_tokens <= 0:
            raise RuntimeError(f"step {self.state.step + 1}: the global batch has no target tokens")
        return global_tokens, global_samples, global_flops

    def _set_learning_rate(self, schedule_step: int) -> float:
        """Set the LR of the ``schedule_step``-th applied update: skipped steps (non-finite, fp16 overflow) do not
        advance the schedule, as DeepSpeed (no ``lr_scheduler.step()`` on overflow) and Megatron (the scheduler
        moves only when the update succeeded) do; the count is the checkpointed trainer state."""
        lr = self.schedule.lr_at(schedule_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _forward_backward(
        self, step: int, micro_batches: list[dict], global_tokens: float
    ) -> tuple[float, float, float]:
        scale = self.rank.world_size / global_tokens
        loss_sum = nll_sum = 0.0
        nonfinite = 0.0
        inject = step in self.config.nonfinite.inject_at_steps and self.rank.is_main
        for index, batch in enumerate(micro_batches):
            slot = ((step - 1) * self.accumulation + index) * self.rank.world_size + self.rank.rank
            torch.manual_seed(derived_seed(self.config.run.seed, slot))
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            loss, nll, _ = self.engine(batch)
            loss = loss.float()
            if inject and index == 0:
                loss = loss * float("nan")
            self.engine.backward(loss * scale, scale_wrt_gas=False)
            if index < len(micro_batches) - 1:
                self.engine.step()  # not a boundary: DeepSpeed only advances its micro-step counter
            value = loss.item()
            nonfinite = max(nonfinite, 0.0 if math.isfinite(value) else 1.0)
            loss_sum += value if math.isfinite(value) else 0.0
            nll_sum += nll.float().item() if math.isfinite(value) else 0.0
        return loss_sum, nll_sum, nonfinite

    def _optimizer_step(self, *, force_skip: bool) -> tuple[str, float]:
        """Step; returns (outcome, grad norm): outcome is applied | nonfinite | overflow (fp16 loss scaling)."""
        guard = self.optimizer
        guard.force_skip = force_skip
        guard.last_skipped = False
        self.engine.step()
        guard.force_skip = False
        if force_skip or guard.last_skipped:
            return "nonfinite", float("nan")
        if not self.engine.was_step_applied():
            # fp16: the dynamic loss scale overflowed and was lowered (expected, not counted toward the abort)
            return ("overflow" if self.precision == "fp16" else "nonfinite"), float("nan")
        if uses_basic_optimizer(self.ds_config):
            return "applied", guard.last_norm
        norm = self.engine.get_global_grad_norm()
        return "applied", float(norm) if norm is not None else guard.last_norm

    def _update_state(self, step: int, outcome: str, tokens: float, samples: float) -> None:
        self.state.step = step
        self.state.tokens_seen += int(tokens)
        self.state.samples_seen += int(samples)
        if outcome != "applied":
            self.state.skipped_steps += 1
        if outcome == "nonfinite":
            self.state.consecutive_nonfinite += 1
        elif outcome == "applied":
            self.state.consecutive_nonfinite = 0

    def _check_nonfinite_streak(self, step: int) -> None:
        limit = self.config.nonfinite.max_consecutive
        if self.state.consecutive_nonfinite >= limit:
            raise NonfiniteAbort(
                f"step {step}: {self.state.consecutive_nonfinite} non-finite steps in a row "
                f"(nonfinite.max_consecutive={limit}); lower the learning rate or check the data"
            )

    def _loss_scale(self) -> float:
        scale = getattr(self.engine.optimizer, "cur_scale", None)
        if scale is None:
            scale = getattr(getattr(self.engine.optimizer, "loss_scaler", None), "cur_scale", 1.0)
        return float(scale)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        if self._last_saved_step == self.state.step:
            return
        client_state = {
            "trainer": self.state.state_dict(),
            "config": to_dict(self.config),
            "universal_checkpoint_info": {"universal_checkpoint_version": 0.4},
        }
        meta = {"zero_stage": self.zero_stage, "precision": self.precision}
        self.store.save(
            self.engine,
            self.state.step,
            client_state=client_state,
            rank_state={"loader": self.batches.state_dict()},
            meta=meta,
        )
        self._last_saved_step = self.state.step
        self._say(f"checkpoint step {self.state.step} committed ({self.store.last_save_seconds:.1f} s)")

    def _say(self, message: str) -> None:
        if self.rank.is_main:
            print(f"[engine] {message}", file=sys.stderr, flush=True)
