"""The dataset directory's manifest: creation, tokenizer pinning, per-stream state, locked atomic updates.

One process at a time may write a given stream (a per-stream lock file, held for the whole command);
every manifest update re-reads ``manifest.json`` under the directory lock and replaces only this
command's stream, so calls adding other languages to the same directory at the same time stay consistent.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from deltalm.file_io import write_json_atomic
from deltalm.shard_format import FORMAT_VERSION, MANIFEST_NAME, ShardError, load_manifest

from .errors import DataPrepError, describe_os_error

DIR_LOCK = ".manifest.lock"


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


def summarize_stream(stream: dict) -> None:
    """Recompute a stream's totals from its shards and inputs (in place)."""
    shards = stream["shards"]
    stream["rows"] = sum(s["rows"] for s in shards)
    stream["tokens"] = sum(s["tokens"] for s in shards)
    stream["bytes"] = sum(s["bytes"] for s in shards)
    if stream["kind"] == "parallel":
        stream["src_tokens"] = sum(s.get("src_tokens", 0) for s in shards)
        stream["tgt_tokens"] = sum(s.get("tgt_tokens", 0) for s in shards)
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


class Dataset:
    """A dataset directory opened for writing one stream."""

    def __init__(
        self, root: str | Path, tokenizer: dict, stream_name: str, stream_template: dict, command: str
    ):
        self.root = Path(root)
        self.stream_name = stream_name
        self.command = command
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
            stream = manifest["streams"].get(stream_name)
            if stream is None:
                stream = dict(stream_template, shards=[], inputs=[])
                summarize_stream(stream)
            else:
                for key, value in stream_template.items():
                    if stream.get(key) != value:
                        raise DataPrepError(
                            f"stream {stream_name} in {self.root} has {key}={stream.get(key)!r}; "
                            f"this command asks for {value!r}"
                        )
            self.stream = stream
            self._commit(manifest)

    def _dir_lock(self):
        return _flock(self.root / DIR_LOCK, blocking=True)

    def _load(self) -> dict | None:
        if not (self.root / MANIFEST_NAME).exists():
            return None
        try:
            return load_manifest(self.root)
        except ShardError as exc:
            raise DataPrepError(str(exc)) from None

    def _commit(self, manifest: dict) -> None:
        summarize_stream(self.stream)
        manifest["streams"][self.stream_name] = self.stream
        manifest["streams"] = dict(sorted(manifest["streams"].items()))
        manifest["languages"] = language_totals(manifest["streams"])
        if self.command not in manifest["commands"]:
            manifest["commands"].append(self.command)
        try:
            write_json_atomic(self.root / MANIFEST_NAME, manifest)
        except OSError as exc:
            raise describe_os_error(exc, f"cannot write manifest in {self.root}") from None

    def save(self) -> None:
        """Publish this stream's state (re-reading the rest of the manifest under the directory lock)."""
        with self._dir_lock():
            manifest = self._load() or new_manifest({})
            self._commit(manifest)

    def find_input(self, key: dict) -> dict | None:
        for entry in self.stream["inputs"]:
            if all(entry.get(k) == v for k, v in key.items()):
                return entry
        return None

    def close(self) -> None:
        self._stream_lock.__exit__(None, None, None)


def dumps(manifest: dict) -> str:
    return json.dumps(manifest, indent=1, sort_keys=True)
