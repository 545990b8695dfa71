"""The dataset directory's manifest and shard tables: creation, tokenizer pinning, per-stream state, journaled
updates whose cost does not grow with the number of shards.

One process at a time may write a given stream (a per-stream lock file, held for the whole command); many
processes may write *different* streams of one directory at once.

Adding a shard (:meth:`Dataset.add_shard`) is O(1) in the shards already listed: one line appended (and
fsynced) to the stream's table ``STREAM/shards.jsonl``, then the stream's state (totals, inputs and resume
points, but no shard list) written atomically to ``STREAM/.progress.json``; that rename is the commit point.
``manifest.json`` (O(streams), no shard lists) is rewritten only at a command's checkpoints (opening the
stream, starting and finishing an input) under the directory lock, replacing only this command's stream, and
``.progress.json`` is removed after it. Reopening a stream after a kill takes the newer of the two states and
cuts the table back to the shards that state lists, so a rerun continues exactly where the kill left off.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from deltalm.shard_format import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    SHARD_TABLE_NAME,
    ShardError,
    load_manifest,
    load_shard_table,
    read_table_lines,
    shard_table_line,
    write_json_atomic,
)

from .errors import DataPrepError, describe_os_error

DIR_LOCK = ".manifest.lock"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@contextlib.contextmanager
def _flock(path: Path, blocking: bool) -> Iterator[None]:
    try:
        fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise describe_os_error(exc, f"cannot create lock file {path}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise DataPrepError(f"{path}: another data_prep process is writing this stream") from None
        yield
    finally:
        os.close(fd)


def new_manifest(tokenizer: dict) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "tokenizer": tokenizer,
        "streams": {},
        "languages": {},
        "commands": [],
    }


def summarize_inputs(stream: dict) -> None:
    """Recompute a stream's skipped-record counts and samples from its inputs (in place)."""
    skipped: dict[str, int] = {}
    samples: list[str] = []
    for entry in stream["inputs"]:
        bad = entry.get("bad_input", {})
        for reason, count in bad.get("counts", {}).items():
            skipped[reason] = skipped.get(reason, 0) + count
        samples.extend(bad.get("samples", []))
    stream["skipped"] = dict(sorted(skipped.items()))
    stream["skip_samples"] = samples[:10]


def language_totals(streams: dict) -> dict:
    totals: dict[str, dict[str, int]] = {}
    for stream in streams.values():
        if stream["kind"] == "mono":
            sides = [(stream["lang"], stream["tokens"])]
        else:
            sides = [(stream["src_lang"], stream["src_tokens"]), (stream["tgt_lang"], stream["tgt_tokens"])]
        for lang, tokens in sides:
            t = totals.setdefault(lang, {"rows": 0, "tokens": 0})
            t["rows"] += stream["rows"]
            t["tokens"] += tokens
    return dict(sorted(totals.items()))


PROGRESS_NAME = ".progress.json"


class Dataset:
    """A dataset directory opened for writing one stream."""

    def __init__(
        self, root: str | Path, tokenizer: dict, stream_name: str, stream_template: dict, command: str
    ):
        self.root = Path(root)
        self.stream_name = stream_name
        self.command = command
        self._table_fd: int | None = None
        try:
            if self.root.exists() and not self.root.is_dir():
                raise DataPrepError(f"output is not a directory: {self.root}")
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise describe_os_error(exc, f"cannot create output directory {self.root}") from None
        if not os.access(self.root, os.W_OK):
            raise DataPrepError(f"output directory is not writable: {self.root}")
        self._stream_lock = _flock(self.root / f".{stream_name}.lock", blocking=False)
        self._stream_lock.__enter__()
        try:
            self._open(tokenizer, stream_name, stream_template)
        except BaseException:
            self.close()
            raise

    @property
    def stream_dir(self) -> Path:
        return self.root / self.stream_name

    @property
    def num_shards(self) -> int:
        return self.stream["num_shards"]

    def _open(self, tokenizer: dict, stream_name: str, stream_template: dict) -> None:
        with self._dir_lock():
            manifest = self._load()
            if manifest is None:
                manifest = new_manifest(tokenizer)
            elif manifest["tokenizer"] != tokenizer:
                have = manifest["tokenizer"]
                raise DataPrepError(
                    f"tokenizer mismatch: {self.root} was built with sha256 {str(have.get('spm_sha256'))[:12]}… "
                    f"(spm_size {have.get('spm_size')}), --spm has sha256 {str(tokenizer['spm_sha256'])[:12]}… "
                    f"(spm_size {tokenizer['spm_size']})"
                )
            stream = self._progress() or manifest["streams"].get(stream_name)
            if stream is None:
                stream = dict(stream_template, inputs=[], num_shards=0, shards_sha256=_EMPTY_SHA256)
                stream.update(rows=0, tokens=0, bytes=0)
                if stream["kind"] == "parallel":
                    stream.update(src_tokens=0, tgt_tokens=0)
            else:
                for key, value in stream_template.items():
                    if stream.get(key) != value:
                        raise DataPrepError(
                            f"stream {stream_name} in {self.root} has {key}={stream.get(key)!r}; "
                            f"this command asks for {value!r}"
                        )
            self.stream = stream
            self._open_table()
            self._commit(manifest)

    def _progress(self) -> dict | None:
        """The stream state a killed command left in ``.progress.json`` (newer than the manifest's)."""
        path = self.stream_dir / PROGRESS_NAME
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))["stream"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataPrepError(f"{path}: unreadable progress record ({exc})") from None

    def _open_table(self) -> None:
        """Open the stream's table for appending, cut back to the listed shards (a kill may leave one
        more line, or a torn one), and check that those lines are the ones the state lists."""
        path = self.stream_dir / SHARD_TABLE_NAME
        count = self.stream["num_shards"]
        try:
            self.stream_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise describe_os_error(exc, f"cannot open shard table {path}") from None
        self._table_fd = fd
        lines, _ = read_table_lines(path, count)
        payload = b"".join(lines)
        self._table_hash = hashlib.sha256(payload)
        if len(lines) < count or self._table_hash.hexdigest() != self.stream["shards_sha256"]:
            raise DataPrepError(
                f"{path}: its first {count} entries do not match the manifest (corrupt table); "
                f"remove the stream directory {self.stream_dir} and rebuild it"
            )
        try:
            if os.fstat(fd).st_size != len(payload):
                os.ftruncate(fd, len(payload))
                os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_END)
        except OSError as exc:
            raise describe_os_error(exc, f"cannot write shard table {path}") from None

    def _dir_lock(self):
        return _flock(self.root / DIR_LOCK, blocking=True)

    def _load(self) -> dict | None:
        if not (self.root / MANIFEST_NAME).exists():
            return None
        try:
            return load_manifest(self.root, shards=False)
        except ShardError as exc:
            raise DataPrepError(str(exc)) from None

    def _commit(self, manifest: dict) -> None:
        summarize_inputs(self.stream)
        manifest["streams"][self.stream_name] = self.stream
        manifest["streams"] = dict(sorted(manifest["streams"].items()))
        manifest["languages"] = language_totals(manifest["streams"])
        if self.command not in manifest["commands"]:
            manifest["commands"].append(self.command)
        try:
            write_json_atomic(self.root / MANIFEST_NAME, manifest)
            (self.stream_dir / PROGRESS_NAME).unlink(missing_ok=True)
        except OSError as exc:
            raise describe_os_error(exc, f"cannot write manifest in {self.root}") from None

    def add_shard(self, shard: dict) -> None:
        """List one more shard (durable on return), with the stream state as it is now (inputs, resume
        points). O(1) in the number of shards already listed."""
        stream = self.stream
        line = shard_table_line(shard)
        path = self.stream_dir / SHARD_TABLE_NAME
        try:
            written = os.write(self._table_fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, "short write", str(path))
            os.fsync(self._table_fd)
        except OSError as exc:
            raise describe_os_error(exc, f"cannot write shard table {path}") from None
        self._table_hash.update(line)
        stream["num_shards"] += 1
        stream["shards_sha256"] = self._table_hash.hexdigest()
        for key in ("rows", "tokens", "bytes", "src_tokens", "tgt_tokens"):
            if key in shard:
                stream[key] = stream.get(key, 0) + shard[key]
        self.checkpoint()

    def checkpoint(self) -> None:
        """Make the stream state durable without touching the manifest (O(inputs), not O(shards))."""
        try:
            write_json_atomic(self.stream_dir / PROGRESS_NAME, {"stream": self.stream})
        except OSError as exc:
            raise describe_os_error(exc, f"cannot write progress record in {self.stream_dir}") from None

    def save(self) -> None:
        """Publish this stream's state in the manifest (re-reading the rest of it under the directory lock)."""
        with self._dir_lock():
            manifest = self._load() or new_manifest({})
            self._commit(manifest)

    def find_input(self, key: dict) -> dict | None:
        for entry in self.stream["inputs"]:
            if all(entry.get(k) == v for k, v in key.items()):
                return entry
        return None

    def close(self) -> None:
        if self._table_fd is not None:
            os.close(self._table_fd)
            self._table_fd = None
        self._stream_lock.__exit__(None, None, None)


def committed_stream(root: str | Path, name: str) -> dict:
    """Stream ``name`` as its writer last committed it (``.progress.json`` of an unfinished command, else the
    manifest), with its ``"shards"`` list: what a rerun continues from."""
    root = Path(root)
    path = root / name / PROGRESS_NAME
    if path.is_file():
        stream = json.loads(path.read_text(encoding="utf-8"))["stream"]
    else:
        stream = load_manifest(root, shards=False)["streams"][name]
    stream["shards"] = load_shard_table(root, name, stream)
    return stream


def dumps(manifest: dict) -> str:
    return json.dumps(manifest, indent=1, sort_keys=True)
