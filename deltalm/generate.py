"""``python -m deltalm.generate``: translate / generate text with an exported DeltaLM directory.

Examples::

    python -m deltalm.generate --model runs/demo/finetune/averaged --src-lang en --tgt-lang de < en.txt > de.txt
    python -m deltalm.generate --model export/ --input en.txt --output de.txt --tgt-lang de --beam 5 --batch-size 64

``--model`` is a :func:`deltalm.adapters.pretrained.save_pretrained` directory with its SentencePiece model (what
``python -m deltalm.export`` and a fine-tuning run's ``best/``, ``final/``, ``averaged/`` hold). Input: one
sentence a line (stdin or ``--input``, UTF-8; only ``\\n`` ends a line, see :mod:`deltalm.text_lines`); output:
exactly one hypothesis a line per input line, in input order (stdout or ``--output``, written atomically). Sentences are tokenized with SentencePiece, sorted by length and batched
(``--batch-size`` sentences at most), decoded with beam search, and detokenized. When ``--tgt-lang`` is given and
the vocabulary has that language's tag (a multilingual fine-tuned model), the tag is prepended to the source,
as in fine-tuning. Empty input lines give empty output lines. Progress goes to stderr. Uses the GPU when present
(``--device``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deltalm.adapters.checkpoint_io import CheckpointError
from deltalm.shard_format import write_text_atomic
from deltalm.text_lines import join_lines, read_text_lines
from deltalm.vocabulary import EOS_ID, PAD_ID, Vocabulary


class GenerateError(ValueError):
    """A user-facing failure (bad model directory, unknown language, unreadable input): one line."""


@dataclass
class GenerateOptions:
    beam: int = 5
    batch_size: int = 32
    max_len_a: float = 1.2
    max_len_b: int = 10
    min_len: int = 1
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    def validate(self) -> None:
        if self.beam < 1:
            raise GenerateError(f"--beam must be >= 1, got {self.beam}")
        if self.batch_size < 1:
            raise GenerateError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.max_len_a < 0 or self.max_len_b < 1:
            raise GenerateError("--max-len-a must be >= 0 and --max-len-b >= 1")


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GenerateError(f"--device {name}: no CUDA device is available")
    return torch.device(name)


def load_model(model_dir: str | Path, device: torch.device):
    """``(model, vocabulary)`` from a save_pretrained directory; refuses one without a SentencePiece model."""
    from deltalm.adapters.pretrained import from_pretrained, pretrained_vocabulary

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


def source_ids(
    lines: Sequence[str], vocab: Vocabulary, tgt_lang: str | None, max_len: int
) -> list[np.ndarray]:
    """``[tag] tokens </s>`` per line (truncated to ``max_len``); an empty line gives an empty array."""
    prefix: list[int] = []
    if tgt_lang and tgt_lang in vocab.lang_tags:
        prefix = [vocab.lang_tag_id(tgt_lang)]
    body_limit = max_len - len(prefix) - 1
    out = []
    for ids in vocab.encode_batch(list(lines)):
        if len(ids) == 0:
            out.append(np.zeros(0, dtype=np.int64))
            continue
        out.append(np.asarray([*prefix, *ids[:body_limit].tolist(), EOS_ID], dtype=np.int64))
    return out


def check_tgt_lang(vocab: Vocabulary, tgt_lang: str | None) -> None:
    """Refuse (GenerateError) a target language the tagged model has no tag for, or none for a tagged model."""
    if vocab.lang_tags and not tgt_lang:
        raise GenerateError(
            f"the model has language tags ({', '.join(vocab.lang_tags)}); give --tgt-lang with one of them"
        )
    if tgt_lang and vocab.lang_tags and tgt_lang not in vocab.lang_tags:
        raise GenerateError(
            f"--tgt-lang {tgt_lang}: the model has no tag for it (tags: {', '.join(vocab.lang_tags)})"
        )


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of non-empty items sorted by length (longest first, ties in input order), cut into batches."""
    order = sorted((i for i, n in enumerate(lengths) if n > 0), key=lambda i: (-lengths[i], i))
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


@torch.no_grad()
def translate(
    model,
    vocab: Vocabulary,
    lines: Sequence[str],
    *,
    tgt_lang: str | None = None,
    options: GenerateOptions | None = None,
    progress=None,
) -> list[str]:
    """Best hypothesis per line, in input order (batched by length, order restored)."""
    from deltalm.generation.beam_search import beam_search

    options = options or GenerateOptions()
    options.validate()
    check_tgt_lang(vocab, tgt_lang)
    limit = model.config.max_source_length
    sources = source_ids(lines, vocab, tgt_lang, limit)
    out = [""] * len(lines)
    device = next(model.parameters()).device
    done = 0
    for batch in length_batches([len(s) for s in sources], options.batch_size):
        longest = len(sources[batch[0]])
        tokens = torch.full((len(batch), longest), PAD_ID, dtype=torch.long)
        for row, index in enumerate(batch):
            tokens[row, : len(sources[index])] = torch.from_numpy(sources[index])
        max_len_b = max(1, min(options.max_len_b, limit - 1 - int(options.max_len_a * longest)))
        hyps = beam_search(
            model,
            tokens.to(device),
            beam_size=options.beam,
            max_len_a=options.max_len_a,
            max_len_b=max_len_b,
            min_len=options.min_len,
            length_penalty=options.length_penalty,
            no_repeat_ngram_size=options.no_repeat_ngram_size,
        )
        for index, sentence in zip(batch, hyps, strict=True):
            out[index] = vocab.decode(sentence[0].tokens) if sentence else ""
        done += len(batch)
        if progress is not None:
            progress(done, sum(1 for s in sources if len(s)))
    return out


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
    p = argparse.ArgumentParser(
        prog="python -m deltalm.generate", description="Translate / generate with DeltaLM."
    )
    p.add_argument("--model", required=True, help="exported (save_pretrained) model directory")
    p.add_argument(
        "--src-lang", default=None, help="source language (informational; the source is not tagged)"
    )
    p.add_argument(
        "--tgt-lang", default=None, help="target language: its tag is prepended when the model has one"
    )
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32, help="sentences per batch (sorted by length)")
    p.add_argument("--max-len-a", type=float, default=1.2, help="output length limit a*source_len + b")
    p.add_argument("--max-len-b", type=int, default=10)
    p.add_argument("--min-len", type=int, default=1)
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--no-repeat-ngram-size", type=int, default=0)
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
        options = GenerateOptions(
            beam=args.beam,
            batch_size=args.batch_size,
            max_len_a=args.max_len_a,
            max_len_b=args.max_len_b,
            min_len=args.min_len,
            length_penalty=args.length_penalty,
            no_repeat_ngram_size=args.no_repeat_ngram_size,
        )
        options.validate()
        device = pick_device(args.device)
        model, vocab = load_model(args.model, device)
        check_tgt_lang(vocab, args.tgt_lang)  # before reading any input
        if not args.quiet:
            print(
                f"[generate] model {args.model} on {device}, beam {options.beam}", file=sys.stderr, flush=True
            )
        lines = read_lines(args.input)
        hyps = translate(model, vocab, lines, tgt_lang=args.tgt_lang, options=options, progress=progress)
        write_lines(args.output, hyps)
    except GenerateError as exc:
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
