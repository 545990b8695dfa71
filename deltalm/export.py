"""``python -m deltalm.export``: a committed pre-training or fine-tuning checkpoint → one shippable artifact.

Examples::

    python -m deltalm.export --run-dir runs/pretrain --out runs/pretrain/export            # newest committed tag
    python -m deltalm.export --run-dir runs/pretrain --tag step_000000300 --dtype bf16 --out export-bf16
    python -m deltalm.export --run-dir runs/pretrain --format official --out deltalm-tiny.pt --verify
    python -m deltalm.export --run-dir runs/pretrain --format xlmr-encoder --out encoder-hf

Formats:

- ``safetensors`` (default): a :func:`deltalm.adapters.pretrained.from_pretrained` directory — ``model.safetensors``
  (``--dtype fp32|bf16``), ``config.json``, ``sentencepiece.model`` and ``vocab.txt`` (``id<TAB>token`` for every
  logical id: specials, pieces, ``<mask>``, sentinels, language tags). Starts fine-tuning (``init.kind: pretrained``)
  or pre-training, and serves ``python -m deltalm.generate``.
- ``official``: the released ``deltalm-*.pt`` layout (``{"weights": ...}``, :func:`deltalm.save_official`).
- ``xlmr-encoder``: the encoder as a Hugging Face ``XLMRobertaModel`` directory (+ ``sentencepiece.bpe.model`` and
  a ``tokenizer.json`` with byte fallback: ``AutoTokenizer`` gives the project's ids, see
  :mod:`deltalm.adapters.hf_tokenizer`).

The checkpoint's manifest and ``COMMITTED`` marker are verified first (an uncommitted or torn tag is refused);
the fp32 master weights are consolidated tensor by tensor from the ZeRO shards of any stage and world size
(:mod:`deltalm.export_checkpoint`); the output is written to a temp directory/file and renamed into place; the
same checkpoint gives the same bytes. ``--verify`` reloads the export and compares it with the checkpoint's
weights (:mod:`deltalm.export_verify`). The SentencePiece model is found in the run's config (fine-tuning:
``task.spm_model``; pre-training: ``data.spm_model``) unless ``--spm`` names it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from deltalm.adapters.checkpoint_io import CheckpointError as AdapterError
from deltalm.adapters.checkpoint_io import atomic_directory
from deltalm.config_tree import ConfigError
from deltalm.engine.checkpoint import CheckpointError
from deltalm.export_checkpoint import EngineCheckpoint, open_checkpoint
from deltalm.export_safetensors import StreamingSafetensorsWriter
from deltalm.vocabulary import Vocabulary

FORMATS = ("safetensors", "official", "xlmr-encoder")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
VOCAB_FILE = "vocab.txt"


@dataclass
class ExportResult:
    path: Path
    format: str
    tag: str
    step: int
    parameters: int
    seconds: float
    verify: dict | None = None

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "format": self.format,
            "tag": self.tag,
            "step": self.step,
            "parameters": self.parameters,
            "seconds": round(self.seconds, 3),
            "verify": self.verify,
        }


# ---------------------------------------------------------------------- vocabulary
def checkpoint_vocabulary(ckpt: EngineCheckpoint, spm: str | None = None) -> Vocabulary:
    """The run's vocabulary: its SentencePiece model (+ the fine-tuning task's language tags), size-checked."""
    config = ckpt.training_config
    task = config.get("task") if isinstance(config.get("task"), dict) else None
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    path = spm or (task or {}).get("spm_model") or data.get("spm_model") or ""
    if not path:
        raise CheckpointError(
            f"{ckpt.folder}: the run's config names no SentencePiece model; pass --spm PATH"
        )
    if not Path(path).is_file():
        raise CheckpointError(f"SentencePiece model not found: {path} (pass --spm PATH)")
    try:
        if task is not None:
            from deltalm.config_tree import from_dict
            from finetune.config import TaskConfig

            task_config = from_dict(TaskConfig, task, prefix="task")
            vocab = Vocabulary.from_spm(path, num_sentinels=task_config.num_sentinels)
            vocab = vocab.with_lang_tags(task_config.vocabulary_tags())
        else:
            vocab = Vocabulary.from_spm(path)
    except (ValueError, ConfigError) as exc:
        raise CheckpointError(str(exc)) from None
    if vocab.size != ckpt.model_config.vocab_size:
        raise CheckpointError(
            f"{path}: gives a {vocab.size}-id vocabulary but the checkpoint's model has "
            f"{ckpt.model_config.vocab_size}; pass the SentencePiece model the run was trained with (--spm)"
        )
    return vocab


def vocabulary_lines(vocab: Vocabulary) -> str:
    return "".join(f"{i}\t{vocab.id_to_token(i)}\n" for i in range(vocab.size))


# ---------------------------------------------------------------------- formats
def _weights_meta(ckpt: EngineCheckpoint, vocab: Vocabulary | None, dtype: str) -> dict:
    from deltalm.adapters.pretrained import FORMAT, FORMAT_VERSION, SPM_FILE, vocabulary_record

    meta: dict = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": ckpt.model_config.to_dict()}
    if vocab is not None:
        meta["vocabulary"] = {**vocabulary_record(vocab), "spm_file": SPM_FILE, "vocab_file": VOCAB_FILE}
    meta["exported_from"] = {"tag": ckpt.tag, "step": ckpt.step, "dtype": dtype}
    return meta


def write_safetensors_dir(ckpt: EngineCheckpoint, out: Path, vocab: Vocabulary | None, dtype: str) -> int:
    """Stream the consolidated tensors into ``out/model.safetensors`` (atomically, with config + vocabulary)."""
    from deltalm.adapters.pretrained import CONFIG_FILE, SPM_FILE, WEIGHTS_FILE

    torch_dtype = DTYPES[dtype]
    shapes = ckpt.parameter_shapes()
    count = 0
    with atomic_directory(out) as tmp:
        specs = [(name, shape, torch_dtype) for name, shape in shapes.items()]
        with StreamingSafetensorsWriter(tmp / WEIGHTS_FILE, specs, metadata={"format": "pt"}) as writer:
            for name, tensor in ckpt.tensors():
                writer.write(name, tensor.to(torch_dtype))
                count += tensor.numel()
        if vocab is not None:
            shutil.copyfile(vocab.spm_path, tmp / SPM_FILE)
            (tmp / VOCAB_FILE).write_text(vocabulary_lines(vocab), encoding="utf-8")
        meta = _weights_meta(ckpt, vocab, dtype)
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return count


def consolidated_model(ckpt: EngineCheckpoint, dtype: torch.dtype = torch.float32):
    """The checkpoint's weights as a :class:`deltalm.DeltaLM` (eval mode), built without a random init."""
    from deltalm.model import DeltaLM

    with torch.device("meta"):
        model = DeltaLM(ckpt.model_config)
    state = {name: tensor.to(dtype) for name, tensor in ckpt.tensors()}
    expected = set(model.state_dict())
    if set(state) != expected:
        extra = sorted(set(state) ^ expected)
        raise CheckpointError(f"{ckpt.folder}: tensor names differ from the model's (first: {extra[0]})")
    model.load_state_dict(state, assign=True)
    return model.eval()


def write_official(ckpt: EngineCheckpoint, out: Path) -> int:
    from deltalm.adapters.official import save_official

    model = consolidated_model(ckpt)
    save_official(model, out)
    return model.num_parameters()


def write_xlmr_encoder(ckpt: EngineCheckpoint, out: Path, vocab: Vocabulary | None) -> int:
    from deltalm.adapters.xlmr import export_encoder_as_xlmr

    model = consolidated_model(ckpt)
    with atomic_directory(out) as tmp:
        inner = export_encoder_as_xlmr(model, tmp / "encoder")
        for item in sorted(inner.iterdir()):
            item.rename(tmp / item.name)
        inner.rmdir()
        if vocab is not None:
            from deltalm.adapters.hf_tokenizer import write_tokenizer

            shutil.copyfile(vocab.spm_path, tmp / "sentencepiece.bpe.model")
            (tmp / VOCAB_FILE).write_text(vocabulary_lines(vocab), encoding="utf-8")
            write_tokenizer(vocab, tmp, model.config.max_source_length)
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("decoder."))


# ---------------------------------------------------------------------- the whole export
def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    format: str = "safetensors",
    tag: str | None = None,
    dtype: str = "fp32",
    spm: str | None = None,
    verify: bool = False,
    log=None,
) -> ExportResult:
    """Export ``tag`` (default: newest committed) of ``run_dir`` to ``out`` in ``format``; see the module doc."""
    if format not in FORMATS:
        raise CheckpointError(f"unknown format {format!r} (choose from {', '.join(FORMATS)})")
    if dtype not in DTYPES:
        raise CheckpointError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")
    if dtype != "fp32" and format != "safetensors":
        raise CheckpointError(f"--dtype {dtype} is only supported with --format safetensors")
    say = log or (lambda message: None)
    started = time.perf_counter()
    ckpt = open_checkpoint(run_dir, tag)
    say(
        f"checkpoint {ckpt.folder} verified (step {ckpt.step}, {ckpt.world_size} rank(s), ZeRO-{ckpt.zero_stage})"
    )
    vocab = None
    if format != "official":
        vocab = checkpoint_vocabulary(ckpt, spm) if (spm or _names_spm(ckpt)) else None
        if vocab is None:
            say(
                "no SentencePiece model in the run's config and no --spm: exporting weights without a tokenizer"
            )
    out = Path(out)
    if format == "safetensors":
        count = write_safetensors_dir(ckpt, out, vocab, dtype)
    elif format == "official":
        count = write_official(ckpt, out)
    else:
        count = write_xlmr_encoder(ckpt, out, vocab)
    result = ExportResult(out, format, ckpt.tag, ckpt.step, count, time.perf_counter() - started)
    say(f"wrote {out} ({format}, {count:,} parameters, {result.seconds:.1f} s)")
    if verify:
        from deltalm.export_verify import verify_export

        result.verify = verify_export(ckpt, out, format, dtype)
        say(f"verify: {result.verify['summary']}")
    return result


def _names_spm(ckpt: EngineCheckpoint) -> bool:
    config = ckpt.training_config
    return bool((config.get("task") or {}).get("spm_model") or (config.get("data") or {}).get("spm_model"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deltalm.export",
        description="Export a committed DeltaLM checkpoint (any ZeRO stage/world size) to one artifact.",
    )
    parser.add_argument("--run-dir", required=True, help="run directory (or its checkpoints/ directory)")
    parser.add_argument("--out", required=True, help="output directory (a .pt file for --format official)")
    parser.add_argument("--format", choices=FORMATS, default="safetensors")
    parser.add_argument("--tag", default=None, help="checkpoint tag (default: the newest committed one)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="safetensors weight dtype")
    parser.add_argument("--spm", default=None, help="SentencePiece model (default: from the run's config)")
    parser.add_argument("--verify", action="store_true", help="reload the export and compare logits")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def say(message: str) -> None:
        print(f"[export] {message}", file=sys.stderr, flush=True)

    try:
        result = export_run(
            args.run_dir,
            args.out,
            format=args.format,
            tag=args.tag,
            dtype=args.dtype,
            spm=args.spm,
            verify=args.verify,
            log=say,
        )
    except (CheckpointError, AdapterError, ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=1))
    if result.verify is not None and not result.verify["ok"]:
        print(f"error: verification failed: {result.verify['summary']}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
