"""``python -m deltalm.export``: a committed pre-training or fine-tuning checkpoint → one shippable artifact.

Examples::

    python -m deltalm.export --run-dir runs/pretrain --out runs/pretrain/export            # newest committed tag
    python -m deltalm.export --run-dir runs/pretrain --tag step_000000300 --dtype bf16 --out export-bf16
    python -m deltalm.export --run-dir runs/pretrain --format official --out deltalm-tiny.pt --verify
    python -m deltalm.export --run-dir runs/pretrain --format xlmr-encoder --out encoder-hf

Formats:

- ``safetensors`` (default): a :func:`deltalm.checkpoints.pretrained.from_pretrained` directory — ``model.safetensors``
  (``--dtype fp32|bf16``), ``config.json``, ``sentencepiece.model`` and ``vocab.txt`` (``id<TAB>token`` for every
  logical id: specials, pieces, ``<mask>``, sentinels, language tags). Starts fine-tuning (``init.kind: pretrained``)
  or pre-training, and serves ``python -m deltalm.generation``.
- ``official``: the released ``deltalm-*.pt`` layout (``{"weights": ...}``, :func:`deltalm.save_official`).
- ``xlmr-encoder``: the encoder as a Hugging Face ``XLMRobertaModel`` directory (+ ``sentencepiece.bpe.model`` and
  a ``tokenizer.json`` with byte fallback: ``AutoTokenizer`` gives the project's ids, see
  :mod:`deltalm.checkpoints.hf_tokenizer`).

The checkpoint's manifest and ``COMMITTED`` marker are verified first (an uncommitted or torn tag is refused);
the fp32 master weights are consolidated tensor by tensor from the ZeRO shards of any stage and world size
(:mod:`deltalm.checkpoints.engine_checkpoint`); the output is written to a temp directory/file and renamed into place; the
same checkpoint gives the same bytes. ``--verify`` reloads the export and compares it with the checkpoint's
weights (:mod:`deltalm.export.verify`). The SentencePiece model is found in the run's config (fine-tuning:
``task.spm_model``; pre-training: ``data.spm_model``) unless ``--spm`` names it.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from deltalm.checkpoints.engine_checkpoint import EngineCheckpoint, open_checkpoint
from deltalm.checkpoints.streaming_safetensors import StreamingSafetensorsWriter
from deltalm.checkpoints.weights_files import atomic_directory
from deltalm.config_tree import ConfigError
from deltalm.export.formats import DTYPES, FORMATS
from deltalm.file_io import CheckpointError
from deltalm.vocabulary import DEFAULT_NUM_SENTINELS, Vocabulary

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
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
    record = ckpt.vocabulary or {}  # fine-tuning keeps its vocabulary record (sentinels, language tags)
    try:
        vocab = Vocabulary.from_spm(
            path, num_sentinels=int(record.get("num_sentinels", DEFAULT_NUM_SENTINELS))
        )
        vocab = vocab.with_lang_tags(list(record.get("lang_tags", [])))
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
    from deltalm.checkpoints.pretrained import FORMAT, FORMAT_VERSION, SPM_FILE, vocabulary_record

    meta: dict = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": ckpt.model_config.to_dict()}
    if vocab is not None:
        meta["vocabulary"] = {**vocabulary_record(vocab), "spm_file": SPM_FILE, "vocab_file": VOCAB_FILE}
    meta["exported_from"] = {"tag": ckpt.tag, "step": ckpt.step, "dtype": dtype}
    return meta


def write_safetensors_dir(ckpt: EngineCheckpoint, out: Path, vocab: Vocabulary | None, dtype: str) -> int:
    """Stream the consolidated tensors into ``out/model.safetensors`` (atomically, with config + vocabulary)."""
    from deltalm.checkpoints.pretrained import CONFIG_FILE, SPM_FILE, WEIGHTS_FILE

    torch_dtype = TORCH_DTYPES[dtype]
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
    from deltalm.model.model import DeltaLM

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
    from deltalm.checkpoints.official import save_official

    model = consolidated_model(ckpt)
    save_official(model, out)
    return model.num_parameters()


def write_xlmr_encoder(ckpt: EngineCheckpoint, out: Path, vocab: Vocabulary | None) -> int:
    from deltalm.checkpoints.xlmr import export_encoder_as_xlmr

    model = consolidated_model(ckpt)
    with atomic_directory(out) as tmp:
        inner = export_encoder_as_xlmr(model, tmp / "encoder")
        for item in sorted(inner.iterdir()):
            item.rename(tmp / item.name)
        inner.rmdir()
        if vocab is not None:
            from deltalm.checkpoints.hf_tokenizer import write_tokenizer

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
        from deltalm.export.verify import verify_export

        result.verify = verify_export(ckpt, out, format, dtype)
        say(f"verify: {result.verify['summary']}")
    return result


def _names_spm(ckpt: EngineCheckpoint) -> bool:
    config = ckpt.training_config
    return bool((config.get("task") or {}).get("spm_model") or (config.get("data") or {}).get("spm_model"))
