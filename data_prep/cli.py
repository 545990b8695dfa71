"""``python -m data_prep COMMAND``: train-spm, mono, parallel, verify, stats.

Every failure a user can cause ends in one line on stderr and a non-zero exit (2), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from deltalm.shard_format import mono_schema, parallel_schema, stream_name

from .bad_input import describe_counts
from .errors import DataPrepError, describe_os_error
from .readers import base_suffix, check_input

DEFAULT_SHARD_SIZE = 64 << 20
MAX_SHARD_SIZE = 1 << 30  # int32 list offsets: keep a shard well below 2**31 tokens


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _size(text: str) -> int:
    """``256M``, ``64k``, ``1G`` or a plain byte count."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("b")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256M, 64k, 1000000)") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spm", required=True, help="SentencePiece model (the dataset is pinned to its sha256)")
    p.add_argument("--output", required=True, help="dataset directory (created; several calls may add to it)")
    p.add_argument(
        "--workers",
        type=_positive,
        default=_default_workers(),
        help="tokenizer processes (default: all cores)",
    )
    p.add_argument(
        "--shard-size", type=_size, default=DEFAULT_SHARD_SIZE, help="shard payload bytes (default 64M)"
    )
    p.add_argument(
        "--on-error", choices=("skip", "fail"), default="skip", help="bad input: count and skip, or stop"
    )
    p.add_argument(
        "--max-line-bytes", type=_size, default=1 << 20, help="longer lines are bad input (default 1M)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress log lines")
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="accept an input that gives no rows (default: that is an error and the input is not marked done)",
    )
    p.add_argument(
        "--block-size",
        type=_size,
        default=1 << 20,
        help="bytes per tokenizer task (speed only; output unchanged)",
    )
    p.add_argument(
        "--buffered-io",
        action="store_true",
        help="write shards through the page cache instead of O_DIRECT (speed only; output unchanged)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train-spm", help="train a SentencePiece model fitting the vocabulary contract")
    p.add_argument("--vocab-size", type=_positive, required=True)
    p.add_argument("--output", required=True, help="model prefix: writes PREFIX.model and PREFIX.vocab")
    p.add_argument(
        "--input-sentence-size", type=_positive, default=None, help="sentences sampled (default 1M)"
    )
    p.add_argument("--character-coverage", type=float, default=0.9995)
    p.add_argument(
        "--num-threads", type=_positive, default=2, help="trainer threads (the result depends on it)"
    )
    p.add_argument(
        "--max-line-bytes",
        type=_size,
        default=1 << 20,
        help="longer lines are skipped and counted (default 1M, as in mono/parallel)",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT")

    p = sub.add_parser("mono", help="CC100-layout text → DIR/LANG/shard-*.arrow")
    p.add_argument("--lang", required=True)
    p.add_argument(
        "--max-doc-bytes", type=_size, default=64 << 20, help="longer documents are bad input (64M)"
    )
    _add_build_options(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT")

    p = sub.add_parser("parallel", help="TSV / JSONL / aligned files → DIR/SRC-TGT/shard-*.arrow")
    p.add_argument("--src-lang", required=True)
    p.add_argument("--tgt-lang", required=True)
    p.add_argument("--src-file", action="append", default=[], help="source side of two aligned files")
    p.add_argument("--tgt-file", action="append", default=[], help="target side of two aligned files")
    p.add_argument(
        "--format", choices=("auto", "tsv", "jsonl"), default="auto", help="format of INPUTs (auto: suffix)"
    )
    _add_build_options(p)
    p.add_argument("inputs", nargs="*", metavar="INPUT")

    p = sub.add_parser("verify", help="re-check every shard against DIR/manifest.json")
    p.add_argument("dir")
    p.add_argument(
        "--workers",
        type=_positive,
        default=_default_workers(),
        help="checking processes (default: all cores)",
    )

    p = sub.add_parser(
        "stats", help="languages, documents, tokens, bytes, temperature-sampling probabilities"
    )
    p.add_argument("dir")
    p.add_argument("--temperature", type=float, default=1.0)
    return parser


def _check_lang(lang: str) -> str:
    if (
        not lang
        or "/" in lang
        or lang.startswith(".")
        or not lang.replace("_", "").replace("-", "").isalnum()
    ):
        raise DataPrepError(f"bad language code {lang!r} (letters, digits, '_' or '-')")
    return lang


def _canonical_command(args: argparse.Namespace, argv: list[str]) -> str:
    """The command as recorded in the manifest, without the flags that do not change the output."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--workers", "--block-size"):
            skip = True
            continue
        if arg.startswith(("--workers=", "--block-size=")) or arg in ("--no-progress", "--buffered-io"):
            continue
        out.append(arg)
    return "python -m data_prep " + shlex.join(out)


def _build_options(args: argparse.Namespace):
    from .builder import BuildOptions

    if args.block_size < 1024:
        raise DataPrepError(f"--block-size must be >= 1k, got {args.block_size}")
    if args.shard_size < 1024 or args.shard_size > MAX_SHARD_SIZE:
        raise DataPrepError(f"--shard-size must be between 1k and 1G, got {args.shard_size}")
    return BuildOptions(
        shard_size=args.shard_size,
        workers=args.workers,
        on_error=args.on_error,
        max_line_bytes=args.max_line_bytes,
        max_doc_bytes=getattr(args, "max_doc_bytes", 64 << 20),
        block_bytes=args.block_size,
        progress=not args.no_progress,
        direct_io=not args.buffered_io,
        allow_empty=args.allow_empty,
    )


def _load_vocab(path: str):
    from deltalm.vocabulary import Vocabulary

    try:
        return Vocabulary.from_spm(path)
    except FileNotFoundError:
        raise DataPrepError(f"--spm: SentencePiece model not found: {path}") from None
    except ValueError as exc:
        raise DataPrepError(f"--spm: {exc}") from None


def _report(summary, stream: str) -> None:
    print(
        f"{stream}: {summary.inputs_done} input(s) processed, {summary.inputs_skipped} already done; "
        f"{summary.shards} new shard(s), {summary.rows:,} rows, {summary.tokens:,} tokens, {summary.bad:,} bad records skipped"
    )
    print(f"{stream}: skipped: {describe_counts(summary.skipped) or 'none'}", file=sys.stderr)


def run_mono(args: argparse.Namespace, argv: list[str]) -> int:
    from .builder import InputSpec, build_stream

    lang = _check_lang(args.lang)
    options = _build_options(args)
    vocab = _load_vocab(args.spm)
    inputs = [InputSpec((p,), "mono") for p in args.inputs]
    name = stream_name("mono", lang=lang)
    summary = build_stream(
        args.output,
        vocab,
        mono_schema(lang),
        name,
        {"kind": "mono", "lang": lang},
        inputs,
        options,
        _canonical_command(args, argv),
    )
    _report(summary, name)
    return 0


def run_parallel(args: argparse.Namespace, argv: list[str]) -> int:
    from .builder import InputSpec, build_stream

    src, tgt = _check_lang(args.src_lang), _check_lang(args.tgt_lang)
    if src == tgt:
        raise DataPrepError(f"--src-lang and --tgt-lang are both {src!r}")
    if len(args.src_file) != len(args.tgt_file):
        raise DataPrepError("give --src-file and --tgt-file in pairs")
    if not args.inputs and not args.src_file:
        raise DataPrepError("parallel: give INPUT files (TSV/JSONL) or --src-file/--tgt-file pairs")
    inputs = []
    for path in [*args.inputs, *args.src_file, *args.tgt_file]:
        check_input(path)
    for path in args.inputs:
        fmt = args.format
        if fmt == "auto":
            suffix = base_suffix(path)
            fmt = {".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}.get(suffix, "")
            if not fmt:
                raise DataPrepError(
                    f"{path}: cannot tell the format from {suffix or 'no suffix'!r}; use --format tsv|jsonl"
                )
        inputs.append(InputSpec((path,), fmt))
    inputs += [InputSpec((a, b), "aligned") for a, b in zip(args.src_file, args.tgt_file, strict=True)]
    options = _build_options(args)
    vocab = _load_vocab(args.spm)
    name = stream_name("parallel", src_lang=src, tgt_lang=tgt)
    template = {"kind": "parallel", "src_lang": src, "tgt_lang": tgt}
    summary = build_stream(
        args.output,
        vocab,
        parallel_schema(src, tgt),
        name,
        template,
        inputs,
        options,
        _canonical_command(args, argv),
    )
    _report(summary, name)
    return 0


def run_train_spm(args: argparse.Namespace) -> int:
    from .spm_trainer import train_spm

    summary = train_spm(
        args.inputs,
        args.output,
        args.vocab_size,
        args.input_sentence_size,
        args.num_threads,
        args.character_coverage,
        max_line_bytes=args.max_line_bytes,
    )
    model = str(summary.model)
    print(f"wrote {model} and {model[: -len('.model')]}.vocab")
    print(
        f"train-spm: {summary.sentences:,} sentences ({summary.sampled:,} sampled for training); "
        f"skipped: {describe_counts(summary.skipped) or 'none'}"
    )
    shares = ", ".join(f"{label} {share:.1%}" for label, (share, _) in summary.byte_share.items())
    print(f"train-spm: byte-fallback pieces per input: {shares}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from .verify import verify_dataset

    problems, summary = verify_dataset(args.dir, args.workers)
    for problem in problems:
        print(f"verify: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"verify: {args.dir}: OK ({summary})")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from .stats import dataset_stats, format_stats

    print(format_stats(dataset_stats(args.dir, args.temperature)))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train-spm":
            return run_train_spm(args)
        if args.command == "mono":
            return run_mono(args, argv)
        if args.command == "parallel":
            return run_parallel(args, argv)
        if args.command == "verify":
            return run_verify(args)
        return run_stats(args)
    except DataPrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {describe_os_error(exc, args.command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to finish (completed shards are kept)", file=sys.stderr)
        return 130
