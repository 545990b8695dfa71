"""The ``mono`` / ``parallel`` driver: inputs → ordered tokenization → shards → manifest, resumable.

Per input the manifest records its sha256, size and progress. Every shard is listed with a resume point
(:meth:`data_prep.manifest.Dataset.add_shard`, O(1) in the shards already listed): the start (decompressed
byte offset, line) of the block in which the shard ended, how many of that
block's rows are already in shards, and the bad-input counts as of that block. Blocks are cut from their
start only, so rerunning after a kill re-reads from that point, drops the committed rows and continues:
the result is byte-identical to an uninterrupted run. A finished input is skipped on a rerun.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from deltalm.vocabulary import Vocabulary, file_sha256

from .bad_input import BadInput, describe_counts
from .errors import DataPrepError
from .manifest import Dataset
from .progress import Progress
from .readers import DOCUMENT, LINE, check_input, iter_aligned_blocks, iter_blocks
from .shard_writer import ShardInfo, ShardWriter
from .tokenize_pool import TaskSpec, TokenizePool


@dataclass(frozen=True)
class InputSpec:
    paths: tuple[str, ...]  # one file, or (src, tgt) for aligned files
    fmt: str  # mono | tsv | jsonl | aligned


@dataclass(frozen=True)
class BuildOptions:
    shard_size: int
    workers: int
    on_error: str = "skip"
    max_line_bytes: int = 1 << 20
    max_doc_bytes: int = 64 << 20
    block_bytes: int = 1 << 20
    progress: bool = True
    direct_io: bool = True  # shard files bypass the page cache where the filesystem allows it
    allow_empty: bool = False  # an input that gives no rows is an error unless this is set


@dataclass
class BuildSummary:
    inputs_done: int = 0
    inputs_skipped: int = 0
    shards: int = 0
    rows: int = 0
    tokens: int = 0
    bad: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # bad records of this run's inputs, by reason


def build_stream(
    root: str | Path,
    vocab: Vocabulary,
    schema: pa.Schema,
    stream_name: str,
    stream_template: dict,
    inputs: list[InputSpec],
    options: BuildOptions,
    command: str,
    log=print,
) -> BuildSummary:
    for spec in inputs:
        for path in spec.paths:
            check_input(path)
    identities = [_identity(spec) for spec in inputs]
    template = dict(stream_template, shard_size=options.shard_size)
    dataset = Dataset(root, vocab.fingerprint(), stream_name, template, command)
    summary = BuildSummary()
    try:
        todo = []
        for spec, ident in zip(inputs, identities, strict=True):
            entry = dataset.find_input({k: v for k, v in ident.items() if k.endswith("sha256")})
            if entry is not None and entry["done"]:
                log(
                    f"{stream_name}: {spec.paths[0]}: already done ({entry['rows']:,} rows), skipping",
                    file=sys.stderr,
                )
                summary.inputs_skipped += 1
            else:
                todo.append((spec, ident, entry))
        if not todo:
            dataset.save()  # records the command; nothing else changes
            return summary
        with TokenizePool(options.workers) as pool:
            for spec, ident, entry in todo:
                if entry is None:
                    entry = dict(
                        ident,
                        format=spec.fmt,
                        done=False,
                        rows=0,
                        tokens=0,
                        shards=0,
                        bad_input=BadInput().state_dict(),
                        resume=None,
                    )
                    dataset.stream["inputs"].append(entry)
                    dataset.save()
                _build_input(dataset, vocab, schema, spec, entry, options, pool, summary, log)
                summary.inputs_done += 1
    finally:
        dataset.close()
    return summary


def _identity(spec: InputSpec) -> dict:
    ident = {
        "path": spec.paths[0],
        "bytes": Path(spec.paths[0]).stat().st_size,
        "sha256": file_sha256(spec.paths[0]),
    }
    if len(spec.paths) == 2:
        tgt = spec.paths[1]
        ident.update(tgt_path=tgt, tgt_bytes=Path(tgt).stat().st_size, tgt_sha256=file_sha256(tgt))
    return ident


def _build_input(
    dataset: Dataset,
    vocab: Vocabulary,
    schema: pa.Schema,
    spec: InputSpec,
    entry: dict,
    options: BuildOptions,
    pool: TokenizePool,
    summary: BuildSummary,
    log,
) -> None:
    stream = dataset.stream
    resume = entry["resume"] or {
        "offset": [0] * len(spec.paths),
        "line": 1,
        "skip_rows": 0,
        "bad_input": entry["bad_input"],
    }
    bad = BadInput(options.on_error)
    bad.load_state_dict(resume["bad_input"])
    reader_skips: list = []
    if spec.fmt == "aligned":
        blocks = iter_aligned_blocks(
            spec.paths[0],
            spec.paths[1],
            max(options.block_bytes // 64, 1),
            options.max_line_bytes,
            reader_skips,
            tuple(resume["offset"]),
            resume["line"],
        )
    else:
        boundary, limit, reason = (
            (DOCUMENT, options.max_doc_bytes, "document_too_long")
            if spec.fmt == "mono"
            else (LINE, options.max_line_bytes, "line_too_long")
        )
        blocks = iter_blocks(
            spec.paths[0],
            boundary,
            options.block_bytes,
            limit,
            reader_skips,
            reason,
            resume["offset"][0],
            resume["line"],
        )
    task = TaskSpec(
        spm_path=str(vocab.spm_path),
        fmt=spec.fmt,
        max_line_bytes=options.max_line_bytes,
        max_doc_bytes=options.max_doc_bytes,
        src_lang=stream.get("src_lang", ""),
        tgt_lang=stream.get("tgt_lang", ""),
    )
    writer = ShardWriter(
        dataset.root,
        dataset.stream_name,
        schema,
        options.shard_size,
        dataset.num_shards,
        options.direct_io,
    )
    skip_rows = resume["skip_rows"]
    label = f"{dataset.stream_name} {Path(spec.paths[0]).name}"
    progress = Progress(
        label,
        sum(Path(p).stat().st_size for p in spec.paths) if spec.fmt != "mono" else None,
        enabled=options.progress,
    )
    for block, result in pool.map(task, blocks):
        for reason, path, line in block.pre_skips:
            bad.add(reason, path, line)
        at_block = bad.state_dict()
        for reason, line in result.skips:
            bad.add(reason, spec.paths[0], line)
        dropped = 0
        if skip_rows:
            dropped = min(skip_rows, result.rows)
            result = result.drop_rows(dropped)
            skip_rows = 0
        progress.update(block.nbytes, result.rows)

        def commit(info: ShardInfo, block=block, dropped=dropped, at_block=at_block) -> None:
            resume = {
                "offset": list(block.offset),
                "line": block.line,
                "skip_rows": dropped + info.rows_into_block,
                "bad_input": at_block,
            }
            _commit_shard(dataset, entry, info, resume, summary)

        writer.add(result, commit)
    for reason, path, line in reader_skips:
        bad.add(reason, path, line)
    entry["bad_input"] = bad.state_dict()
    info = writer.flush()
    if info is not None:
        _commit_shard(dataset, entry, info, None, summary)
    summary.bad += bad.total
    for reason, count in bad.counts.items():
        summary.skipped[reason] = summary.skipped.get(reason, 0) + count
    if entry["rows"] == 0 and not options.allow_empty:
        entry["bad_input"] = BadInput().state_dict()  # the input stays not done: a rerun reads it again
        dataset.save()
        progress.close(message="no rows ")
        skipped = describe_counts(bad.counts) or "the input holds no text"
        raise DataPrepError(
            f"{spec.paths[0]}: no rows ({skipped}); pass --allow-empty if an empty input is expected"
        )
    entry.update(done=True, resume=None, bad_input=bad.state_dict())
    dataset.save()
    progress.close(message=f"done ({bad.total:,} skipped) ")


def _commit_shard(
    dataset: Dataset, entry: dict, info: ShardInfo, resume: dict | None, summary: BuildSummary
) -> None:
    shard = info.manifest_entry()
    if dataset.stream["kind"] == "parallel":
        shard.update(src_tokens=info.column_tokens["src"], tgt_tokens=info.column_tokens["tgt"])
    entry["rows"] += info.rows
    entry["tokens"] += info.tokens
    entry["shards"] += 1
    if resume is not None:
        entry["resume"] = resume
        entry["bad_input"] = resume["bad_input"]
    dataset.add_shard(shard)
    summary.shards += 1
    summary.rows += info.rows
    summary.tokens += info.tokens
