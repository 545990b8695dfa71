"""MFU benchmark: the real DeltaLM training step (engine, DeepSpeed, optimizer, clipping) next to an HF mT5 peer.

    .venv/bin/python -m benchmarks.mfu --preset tiny --shapes 128/32 --steps 3      # CPU smoke run
    python -m benchmarks.mfu --preset base --precision bf16 --micro-batch 64 --compile   # one H100

Each model is trained by :class:`deltalm.engine.trainer.Trainer` on synthetic batches of fixed, fully used
shapes (``span``: span corruption 512/114, ``translation``: translation span corruption 512/512, ``mixed``:
micro-batches alternating between the two, or explicit ``S/T[,S/T...]``). After ``--warmup`` steps, ``--steps``
optimizer steps are timed (CUDA events on GPU, ``perf_counter`` on CPU). Reported per model: samples/s,
tokens/s (source + target), achieved TFLOP/s (the model FLOPs of :mod:`deltalm.engine.flops`: MFU, not HFU:
activation recomputation is not counted), MFU against the measured GEMM ceiling (a matmul probe at the
training precision) and against the datasheet peak, peak memory, and the fraction of step time spent waiting
for the batch source. The peer (:mod:`benchmarks.hf_peer`) has the same FLOPs per sample by construction.

``--find-max-micro-batch`` doubles the micro-batch (each trial a fresh subprocess running two steps, so an
out-of-memory error leaves nothing behind) and then bisects, for the largest micro-batch that fits.

Exit codes: 0 done, 2 bad arguments, 3 out of memory (one trial of --probe).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.device_probe import gemm_ceiling_tflops, nvidia_driver, peak_memory_gb

REPO = Path(__file__).resolve().parent.parent

SHAPE_SETS = {
    "span": [(512, 114)],
    "translation": [(512, 512)],
    "mixed": [(512, 114), (512, 512)],
}
OOM_EXIT = 3


class UsageError(ValueError):
    """A bad command-line value; reported as one line, exit code 2."""


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``span`` | ``translation`` | ``mixed`` | ``S/T[,S/T...]`` -> [(source_len, target_len), ...]."""
    if text in SHAPE_SETS:
        return list(SHAPE_SETS[text])
    shapes = []
    for part in text.split(","):
        pieces = part.strip().split("/")
        if len(pieces) != 2 or not all(p.strip().isdigit() for p in pieces):
            raise UsageError(
                f"--shapes: {part!r} is neither a shape set ({', '.join(SHAPE_SETS)}) nor SOURCE/TARGET"
            )
        s, t = int(pieces[0]), int(pieces[1])
        if s < 2 or t < 2:
            raise UsageError(f"--shapes: {part!r}: lengths must be >= 2")
        shapes.append((s, t))
    return shapes


# ---------------------------------------------------------------------------------------------- batches
class FixedShapeBatches:
    """Micro-batches with every position real (packed examples), cycling through ``shapes``; resumable.

    Source ``X </s>`` of ``S`` tokens, decoder input ``</s> Y[:-1]``, target ``Y`` of ``T`` tokens ending in
    ``</s>``. The time spent in :meth:`next_batch` is accumulated in ``wait_s`` (the trainer waits for it).
    """

    def __init__(
        self, shapes: list[tuple[int, int]], micro_batch: int, vocab_size: int, seed: int, pin: bool
    ) -> None:
        self.shapes = shapes
        self.micro_batch = micro_batch
        self.vocab_size = vocab_size
        self.seed = seed
        self.pin = pin
        self.consumed = 0
        self.wait_s = 0.0

    def next_batch(self) -> dict:
        import torch

        from deltalm.vocabulary import EOS_ID, NUM_SPECIALS

        started = time.perf_counter()
        s, t = self.shapes[self.consumed % len(self.shapes)]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.consumed)
        self.consumed += 1
        b = self.micro_batch
        src = torch.randint(NUM_SPECIALS, self.vocab_size, (b, s), generator=g)
        src[:, -1] = EOS_ID
        tgt = torch.randint(NUM_SPECIALS, self.vocab_size, (b, t), generator=g)
        tgt[:, -1] = EOS_ID
        dec_in = torch.cat([torch.full((b, 1), EOS_ID), tgt[:, :-1]], dim=1)
        batch = {
            "encoder_input_tokens": src,
            "encoder_padding_mask": torch.ones(b, s, dtype=torch.bool),
            "decoder_input_tokens": dec_in,
            "decoder_target_tokens": tgt,
            "decoder_loss_weights": torch.ones(b, t, dtype=torch.long),
        }
        if self.pin:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        self.wait_s += time.perf_counter() - started
        return batch

    def state_dict(self) -> dict:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.consumed = int(state["consumed"])


# ---------------------------------------------------------------------------------------------- results
@dataclass
class Result:
    model: str
    params_m: float
    flops_per_sample_g: float  # training GFLOP per sample, averaged over the shape cycle
    micro_batch: int
    accumulation: int
    steps: int
    step_ms: float
    samples_per_s: float
    tokens_per_s: float
    tflops: float
    mfu_ceiling: float | None
    mfu_datasheet: float | None
    peak_memory_gb: float
    memory_kind: str
    wait_fraction: float
    losses: list[float] = field(default_factory=list)


@dataclass
class Environment:
    device: str
    precision: str
    zero_stage: int
    torch: str
    deepspeed: str
    transformers: str
    ceiling_tflops: float
    datasheet_tflops: float
    shapes: str
    compile: bool
    activation_checkpointing: bool
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- one model
def training_config(args, model_config, run_dir: str, micro_batch: int):
    from deltalm.config_tree import validate_tree
    from deltalm.engine.config import (
        BatchConfig,
        CheckpointConfig,
        DeepSpeedSection,
        LoggingConfig,
        OptimizerConfig,
        RunConfig,
        ScheduleConfig,
        TrainingConfig,
    )

    template = REPO / "ds_configs" / ("cpu.json" if args.device == "cpu" else "gpu.json")
    config = TrainingConfig(
        run=RunConfig(run_dir=run_dir, seed=args.seed, max_steps=10**9, log_every=10**9),
        model=model_config,
        optimizer=OptimizerConfig(lr=1e-4, fused=args.optimizer),
        schedule=ScheduleConfig(kind="constant", warmup_steps=0),
        batch=BatchConfig(global_batch_size=micro_batch * args.accumulation, micro_batch_size=micro_batch),
        checkpoint=CheckpointConfig(every=0, resume="never", save_final=False),
        deepspeed=DeepSpeedSection(
            config=str(template), zero_stage=args.zero_stage, precision=args.precision
        ),
        logging=LoggingConfig(tensorboard=False),
    )
    validate_tree(config)
    return config


def compile_deltalm_layers(model, backend: str = "inductor") -> None:
    """``torch.compile`` every encoder layer and decoder block in place (static shapes; names unchanged)."""
    for layer in [*model.encoder.layers, *model.decoder.layers]:
        layer.compile(dynamic=False, backend=backend)


def run_model(
    name: str, model, flops_per_sample: list[float], micro_batch: int, args, rank, device, env: Environment
) -> Result:
    """Warm-up + timed optimizer steps of ``model`` on the shared engine."""
    import torch

    from deltalm.engine.trainer import Trainer

    vocab = args.model_config.vocab_size
    # memory held before this model (e.g. anything the previous model's engine left) is not its own
    resident = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    with tempfile.TemporaryDirectory(prefix="mfu-") as run_dir:
        config = training_config(args, args.model_config, run_dir, micro_batch)
        batches = FixedShapeBatches(args.shape_list, micro_batch, vocab, args.seed, device.type == "cuda")
        trainer = Trainer(config, model, batches, rank)
        trainer.setup()
        for _ in range(args.warmup):
            trainer.train_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        batches.wait_s = 0.0
        consumed_before = batches.consumed
        cuda = device.type == "cuda"
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        started = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        if cuda:
            end.record()
            torch.cuda.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            seconds = time.perf_counter() - started
        memory, memory_kind = peak_memory_gb(device, resident)
        losses = _timed_losses(Path(run_dir), args.steps)
        micro_batches = batches.consumed - consumed_before
        samples = micro_batches * micro_batch
        shapes = [args.shape_list[i % len(args.shape_list)] for i in range(consumed_before, batches.consumed)]
        tokens = sum((s + t) * micro_batch for s, t in shapes)
        flops = sum(
            flops_per_sample[i % len(args.shape_list)] * micro_batch
            for i in range(consumed_before, batches.consumed)
        )
        trainer.metrics.close()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        del trainer
    tflops = flops / seconds / 1e12
    result = Result(
        model=name,
        params_m=round(params, 2),
        flops_per_sample_g=sum(flops_per_sample) / len(flops_per_sample) / 1e9,
        micro_batch=micro_batch,
        accumulation=args.accumulation,
        steps=args.steps,
        step_ms=seconds / args.steps * 1000,
        samples_per_s=samples / seconds,
        tokens_per_s=tokens / seconds,
        tflops=tflops,
        mfu_ceiling=tflops / env.ceiling_tflops if env.ceiling_tflops > 0 else None,
        mfu_datasheet=tflops / env.datasheet_tflops if env.datasheet_tflops > 0 else None,
        peak_memory_gb=memory,
        memory_kind=memory_kind,
        wait_fraction=batches.wait_s / seconds,
        losses=losses,
    )
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _timed_losses(run_dir: Path, steps: int) -> list[float]:
    """The loss of each timed step, from the engine's metrics.jsonl (NaN for a skipped step)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    values = [json.loads(line).get("loss") for line in lines[-steps:]]
    return [float(v) if isinstance(v, (int, float)) else float("nan") for v in values]


# ---------------------------------------------------------------------------------------------- report
def format_table(env: Environment, results: list[Result]) -> str:
    def pct(x: float | None) -> str:
        return f"{x * 100:.1f}%" if x is not None else "n/a"

    lines = [
        f"device: {env.device} | precision {env.precision} | ZeRO-{env.zero_stage} | shapes {env.shapes} | "
        f"compile {env.compile} | activation checkpointing {env.activation_checkpointing}",
        f"torch {env.torch} | deepspeed {env.deepspeed} | transformers {env.transformers} | "
        f"GEMM ceiling {env.ceiling_tflops:.2f} TFLOP/s (measured) | datasheet "
        + (f"{env.datasheet_tflops:.0f} TFLOP/s" if env.datasheet_tflops else "n/a"),
        "",
        "| model | params (M) | GFLOP/sample | micro | ms/step | samples/s | tokens/s | TFLOP/s | "
        "MFU (ceiling) | MFU (datasheet) | peak mem (GB) | batch wait | loss first→last |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        loss = f"{r.losses[0]:.3f}→{r.losses[-1]:.3f}" if r.losses else "n/a"
        lines.append(
            f"| {r.model} | {r.params_m:.1f} | {r.flops_per_sample_g:.3f} | {r.micro_batch}x{r.accumulation} | "
            f"{r.step_ms:.1f} | {r.samples_per_s:.2f} | {r.tokens_per_s:.0f} | {r.tflops:.4f} | "
            f"{pct(r.mfu_ceiling)} | {pct(r.mfu_datasheet)} | {r.peak_memory_gb:.2f} ({r.memory_kind}) | "
            f"{r.wait_fraction * 100:.2f}% | {loss} |"
        )
    lines += [f"note: {n}" for n in env.notes]
    if len(results) == 2 and results[1].samples_per_s > 0:
        lines += [
            "",
            f"speed-up over the HF peer: {results[0].samples_per_s / results[1].samples_per_s:.2f}x",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- modes
def build_parser() -> argparse.ArgumentParser:
    from deltalm.model.config import MODEL_PRESETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="small", choices=list(MODEL_PRESETS), help="model preset")
    p.add_argument("--zero-stage", type=int, default=0, choices=[0, 1, 2, 3])
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--accumulation", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--compile", action="store_true", help="torch.compile each layer (both models)")
    p.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend (eager/aot_eager: check the wiring)",
    )
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first")
    p.add_argument("--shapes", default="span", help="span | translation | mixed | S/T[,S/T...]")
    p.add_argument("--peer", default="mt5", choices=["mt5", "none"])
    p.add_argument(
        "--peer-micro-batch", type=int, default=0, help="the peer's micro-batch (0 = --micro-batch)"
    )
    p.add_argument("--peak-tflops", type=float, default=0.0, help="datasheet peak override (TFLOP/s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", help="also write the results here")
    # fast-path switches (for before/after measurements); the defaults are the fast path
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "math"])
    p.add_argument("--no-fused-qkv", action="store_true")
    p.add_argument("--vocab-multiple", type=int, default=64, help="pad the vocabulary to this multiple")
    p.add_argument("--loss-chunk-size", type=int, default=0, help="0 = the preset's")
    p.add_argument(
        "--fused-loss", action="store_true", help="torch.compile the chunked loss's elementwise passes"
    )
    p.add_argument("--optimizer", default="auto", choices=["auto", "torch", "deepspeed", "none"])
    p.add_argument("--dropout", type=float, default=None, help="override the preset's dropout")
    # memory search
    p.add_argument("--find-max-micro-batch", action="store_true")
    p.add_argument("--max-micro-batch", type=int, default=1024, help="upper bound of the search")
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)  # one trial (subprocess)
    return p


def resolve(args) -> None:
    """Check the arguments and fill in derived values (raises UsageError)."""
    import torch

    from deltalm.config_tree import ConfigError
    from deltalm.model.config import DeltaLMConfig

    for name in ("micro_batch", "accumulation", "steps", "max_micro_batch", "vocab_multiple"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.peak_tflops < 0 or args.loss_chunk_size < 0 or args.peer_micro_batch < 0:
        raise UsageError("--warmup, --peak-tflops, --loss-chunk-size and --peer-micro-batch must be >= 0")
    args.shape_list = parse_shapes(args.shapes)
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.precision == "auto":
        args.precision = "bf16" if args.device == "cuda" else "fp32"
    if args.precision == "fp16" and args.device == "cpu":
        raise UsageError("--precision fp16 needs a CUDA GPU (DeepSpeed's CPU accelerator has no fp16)")
    overrides = dict(
        pad_vocab_to_multiple=args.vocab_multiple,
        attention_backend=args.attention,
        fused_qkv=not args.no_fused_qkv,
        activation_checkpointing=args.activation_checkpointing,
        loss_fused=args.fused_loss,
    )
    if args.loss_chunk_size:
        overrides["loss_chunk_size"] = args.loss_chunk_size
    if args.dropout is not None:
        overrides["dropout"] = args.dropout
    try:
        args.model_config = DeltaLMConfig.preset(args.preset, **overrides)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    longest = max(max(s, t) for s, t in args.shape_list)
    if longest > args.model_config.max_source_length:
        raise UsageError(
            f"--shapes: {longest} tokens exceed the position table ({args.model_config.max_source_length})"
        )


def is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def benchmark(args) -> tuple[Environment, list[Result]]:
    """Both models' results on this process's device (single rank).

    The process group is started once per process and left up: DeepSpeed caches its groups in module globals,
    so a second benchmark in the same process (tests) must reuse the first group, not a re-created one.
    """
    import torch.distributed as dist

    from deltalm.engine.distributed import discover, init_process_group

    rank = discover()
    if rank.world_size != 1:
        raise UsageError("benchmarks/mfu.py measures one device: start it as a single process")
    if not dist.is_initialized():
        init_process_group(rank, timeout_s=120)
    return _benchmark(args, rank)


def _benchmark(args, rank) -> tuple[Environment, list[Result]]:
    import deepspeed
    import torch
    import transformers

    from deltalm.engine.flops import device_peak_tflops, training_flops_per_sample
    from deltalm.model.model import DeltaLM

    device = torch.device("cuda", rank.local_rank) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        name = torch.cuda.get_device_name(device)
        device_text = f"{name} (CUDA runtime {torch.version.cuda}, driver {nvidia_driver()})"
    else:
        device_text = f"CPU x{torch.get_num_threads()} threads"
        name = "cpu"
    ceiling = gemm_ceiling_tflops(device, args.precision)
    datasheet = args.peak_tflops or (
        device_peak_tflops(name, args.precision) if device.type == "cuda" else 0.0
    )
    env = Environment(
        device=device_text,
        precision=args.precision,
        zero_stage=args.zero_stage,
        torch=torch.__version__,
        deepspeed=deepspeed.__version__,
        transformers=transformers.__version__,
        ceiling_tflops=ceiling,
        datasheet_tflops=datasheet,
        shapes=",".join(f"{s}/{t}" for s, t in args.shape_list),
        compile=args.compile,
        activation_checkpointing=args.activation_checkpointing,
    )
    config = args.model_config
    results = []
    torch.manual_seed(args.seed)
    model = DeltaLM(config)
    if args.compile:
        compile_deltalm_layers(model, args.compile_backend)
    ours = [training_flops_per_sample(config, s, t) for s, t in args.shape_list]
    results.append(
        run_model(f"deltalm-{args.preset}", model, ours, args.micro_batch, args, rank, device, env)
    )
    del model
    if args.peer == "mt5":
        from benchmarks.hf_peer import MT5Peer, matched_mt5_config, mt5_flops_of

        peer_config = matched_mt5_config(config, args.shape_list)  # equal mean FLOPs over the shape cycle
        torch.manual_seed(args.seed)
        peer = MT5Peer(peer_config)
        if args.compile:
            peer.compile_layers(args.compile_backend)
        if args.activation_checkpointing:
            peer.enable_activation_checkpointing()
        flops = [mt5_flops_of(peer_config, s, t) for s, t in args.shape_list]
        name = f"hf-mt5 (d_ff {peer_config.d_ff}, {peer.hf.config._attn_implementation})"
        micro = args.peer_micro_batch or args.micro_batch
        try:
            results.append(run_model(name, peer, flops, micro, args, rank, device, env))
        except RuntimeError as exc:
            if not is_oom(exc):
                raise
            # full [B, T, 250k] logits: the peer can run out of memory where DeltaLM fits
            env.notes.append(f"{name}: out of memory at micro-batch {micro} (try --peer-micro-batch)")
    return env, results


def probe_command(args, micro_batch: int) -> list[str]:
    command = [sys.executable, "-m", "benchmarks.mfu", "--probe", "--peer", "none"]
    command += ["--steps", "1", "--warmup", "1", "--micro-batch", str(micro_batch)]
    for flag in (
        "preset",
        "compile_backend",
        "zero_stage",
        "precision",
        "shapes",
        "attention",
        "vocab_multiple",
        "optimizer",
        "loss_chunk_size",
    ):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    for flag in ("compile", "activation_checkpointing", "fused_loss", "no_fused_qkv"):
        if getattr(args, flag):
            command.append(f"--{flag.replace('_', '-')}")
    return command


def find_max_micro_batch(args) -> int:
    """Largest micro-batch (<= --max-micro-batch) whose training step fits; each trial a fresh process."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }

    def fits(micro: int) -> bool:
        proc = subprocess.run(probe_command(args, micro), cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode not in (0, OOM_EXIT):
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"trial with micro-batch {micro} failed (exit {proc.returncode}): {tail}")
        memory = next((ln for ln in proc.stdout.splitlines() if ln.startswith("probe:")), "probe: ?")
        print(
            f"micro-batch {micro}: {'fits' if proc.returncode == 0 else 'out of memory'} ({memory})",
            flush=True,
        )
        return proc.returncode == 0

    good, bad = 0, None
    micro = 1
    while micro <= args.max_micro_batch:
        if fits(micro):
            good = micro
            micro *= 2
        else:
            bad = micro
            break
    if bad is None:
        bad = min(micro, args.max_micro_batch + 1)
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resolve(args)
        if args.find_max_micro_batch:
            best = find_max_micro_batch(args)
            cap = " (the search bound)" if best == args.max_micro_batch else ""
            print(
                f"largest micro-batch: {best}{cap} | preset {args.preset} | {args.precision} | "
                f"ZeRO-{args.zero_stage} | activation checkpointing {args.activation_checkpointing}"
            )
            return 0 if best else OOM_EXIT
        env, results = benchmark(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if is_oom(exc):
            print(f"error: out of memory at micro-batch {args.micro_batch}", file=sys.stderr)
            return OOM_EXIT
        if args.find_max_micro_batch:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
    if args.probe:
        r = results[0]
        print(f"probe: peak {r.peak_memory_gb:.2f} GB ({r.memory_kind}), {r.samples_per_s:.1f} samples/s")
        return 0
    print(format_table(env, results), flush=True)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"environment": asdict(env), "results": [asdict(r) for r in results]}, indent=2)
            + "\n",
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
