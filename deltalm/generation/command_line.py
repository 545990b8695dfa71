"""``python -m deltalm.generation``: translate / generate text with an exported DeltaLM directory.

Examples::

    python -m deltalm.generation --model runs/demo/finetune/averaged --src-lang en --tgt-lang de < en.txt > de.txt
    python -m deltalm.generation --model export/ --input en.txt --output de.txt --tgt-lang de --beam-size 5 --batch-size 64

``--model`` is a :func:`deltalm.checkpoints.pretrained.save_pretrained` directory with its SentencePiece model (what
``python -m deltalm.export`` and a fine-tuning run's ``best/``, ``final/``, ``averaged/`` hold). Input: one
sentence a line (stdin or ``--input``, UTF-8; only ``\\n`` ends a line, see :mod:`deltalm.text_lines`); output:
exactly one hypothesis a line per input line, in input order (stdout or ``--output``, written atomically). Sentences are tokenized with SentencePiece, sorted by length and batched
(``--batch-size`` sentences at most), decoded with beam search, and detokenized
(:func:`deltalm.generation.translation.translate_lines`, the loop validation and evaluation use too). When ``--tgt-lang`` is given and
the vocabulary has that language's tag (a multilingual fine-tuned model), the tag is prepended to the source,
as in fine-tuning. Empty input lines give empty output lines. Progress goes to stderr. Uses the GPU when present
(``--device``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from deltalm.file_io import CheckpointError, write_text_atomic
from deltalm.generation.options import GenerationError, GenerationOptions
from deltalm.text_lines import join_lines, read_text_lines

if TYPE_CHECKING:  # torch loads only once the arguments are good: --help and their errors answer at once
    import torch


class GenerateError(ValueError):
    """A user-facing failure (bad model directory, unreadable input): one line."""


def pick_device(name: str = "auto") -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GenerateError(f"--device {name}: no CUDA device is available")
    return torch.device(name)


def load_model(model_dir: str | Path, device: torch.device):
    """``(model, vocabulary)`` from a save_pretrained directory; refuses one without a SentencePiece model."""
    import torch

    from deltalm.checkpoints.pretrained import from_pretrained, pretrained_vocabulary

    try:
        vocab = pretrained_vocabulary(model_dir)
        if vocab is None:
            raise GenerateError(
                f"{model_dir}: no SentencePiece model saved with the weights (export it with --spm)"
            )
        model = from_pretrained(
            model_dir, device=device, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0
        )
    except (CheckpointError, FileNotFoundError) as exc:
        raise GenerateError(str(exc)) from None
    if model.config.vocab_size != vocab.size:
        raise GenerateError(
            f"{model_dir}: the model has {model.config.vocab_size} vocabulary rows, its SentencePiece model and "
            f"language tags give {vocab.size}"
        )
    if device.type == "cpu" and model.embedding.embed_tokens.weight.dtype != torch.float32:
        model = model.float()  # bf16 exports run in fp32 on CPU
    return model.eval(), vocab


def read_lines(path: str | None) -> list[str]:
    """The input's lines (:mod:`deltalm.text_lines`: only ``\\n`` ends a line, CRLF and a leading BOM are
    accepted, U+2028/form feed/NEL stay inside their line): N lines in give N hypotheses out."""
    source = "stdin" if path is None or path == "-" else path
    try:
        if source == "stdin":
            return read_text_lines(sys.stdin.buffer, source)
        with open(path, "rb") as handle:
            return read_text_lines(handle, source)
    except OSError as exc:
        raise GenerateError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise GenerateError(str(exc)) from None


def write_lines(path: str | None, lines: Sequence[str]) -> None:
    text = join_lines(lines)
    if path is None or path == "-":
        if hasattr(sys.stdout, "buffer"):  # UTF-8 whatever the locale
            sys.stdout.flush()
            sys.stdout.buffer.write(text.encode("utf-8"))
            sys.stdout.buffer.flush()
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(target, text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = GenerationOptions()  # the generation defaults live there
    p = argparse.ArgumentParser(
        prog="python -m deltalm.generation", description="Translate / generate with DeltaLM."
    )
    p.add_argument("--model", required=True, help="exported (save_pretrained) model directory")
    p.add_argument(
        "--src-lang", default=None, help="source language (informational; the source is not tagged)"
    )
    p.add_argument(
        "--tgt-lang", default=None, help="target language: its tag is prepended when the model has one"
    )
    p.add_argument("--beam-size", type=int, default=d.beam_size)
    p.add_argument("--batch-size", type=int, default=32, help="sentences per batch (sorted by length)")
    p.add_argument(
        "--max-len-a", type=float, default=d.max_len_a, help="output length limit a*source_len + b"
    )
    p.add_argument("--max-len-b", type=int, default=d.max_len_b)
    p.add_argument("--min-len", type=int, default=d.min_len)
    p.add_argument("--length-penalty", type=float, default=d.length_penalty)
    p.add_argument("--no-repeat-ngram-size", type=int, default=d.no_repeat_ngram_size)
    p.add_argument("--input", default=None, help="input file (default: stdin)")
    p.add_argument("--output", default=None, help="output file (default: stdout)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            rate = done / max(time.perf_counter() - started, 1e-9)
            print(f"[generate] {done}/{total} sentences ({rate:.1f}/s)", file=sys.stderr, flush=True)

    try:
        options = GenerationOptions(
            beam_size=args.beam_size,
            max_len_a=args.max_len_a,
            max_len_b=args.max_len_b,
            min_len=args.min_len,
            length_penalty=args.length_penalty,
            no_repeat_ngram_size=args.no_repeat_ngram_size,
        )
        options.validate()
        if args.batch_size < 1:
            raise GenerateError(f"--batch-size must be >= 1, got {args.batch_size}")
        device = pick_device(args.device)
        model, vocab = load_model(args.model, device)
        if not args.quiet:
            print(
                f"[generate] model {args.model} on {device}, beam size {options.beam_size}",
                file=sys.stderr,
                flush=True,
            )
        from deltalm.generation.translation import check_target_language

        check_target_language(vocab, args.tgt_lang)  # before reading any input
        lines = read_lines(args.input)
        from deltalm.generation.translation import translate_lines

        hyps = translate_lines(
            model,
            vocab,
            lines,
            options,
            tgt_lang=args.tgt_lang,
            batch_size=args.batch_size,
            progress=progress,
        )
        write_lines(args.output, hyps)
    except (GenerateError, GenerationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(
            f"[generate] done: {len(lines)} lines in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
