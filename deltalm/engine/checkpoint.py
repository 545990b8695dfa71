"""Committed checkpoints on top of DeepSpeed's ``save_checkpoint``/``load_checkpoint`` (docs/design.md#training-engine).

Layout of ``<checkpoint dir>``::

    step_000000100/          DeepSpeed's files for that tag + rank_state_00000.pt ... (one per rank)
        manifest.json        every file's size and sha256, the step, world size, ZeRO stage, precision
        COMMITTED            written last, atomically; holds the manifest's sha256
    latest                   the newest committed tag, written atomically after the commit

Protocol: all ranks save (DeepSpeed with ``save_latest=False``) and write their own rank state, barrier, rank 0
hashes every file into the manifest, writes COMMITTED, then ``latest``, then prunes to the last K committed tags.
A kill at any point leaves the previous committed checkpoint as ``latest``. Loading verifies the manifest before
DeepSpeed (which unpickles its own shards) touches any file: a truncated or altered file, an empty ``latest`` or
a ``latest`` naming an uncommitted tag is a :class:`CheckpointError` naming the file, never a fresh start.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from deltalm.file_io import CheckpointError, fsync_dir, write_json_atomic, write_text_atomic

MANIFEST = "manifest.json"
COMMITTED = "COMMITTED"
LATEST = "latest"
UNIVERSAL_SUFFIX = ".universal"
UNIVERSAL_WAIT_S = 3600.0
TAG_RE = re.compile(r"^step_(\d{9})$")


def tag_for(step: int) -> str:
    return f"step_{step:09d}"


def rank_state_name(rank: int) -> str:
    return f"rank_state_{rank:05d}.pt"


def _sha256(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _hash_files(folder: Path, names: list[str]) -> dict[str, str]:
    """sha256 of several files in threads (hashlib releases the GIL on large blocks)."""
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(len(names), os.cpu_count() or 1, 8)) as pool:
        return dict(zip(names, pool.map(lambda rel: _sha256(folder / rel), names), strict=True))


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@dataclass
class LoadedCheckpoint:
    tag: str
    manifest: dict
    client_state: dict
    rank_state: dict


class CheckpointStore:
    """Committed checkpoints of one run; every rank constructs one with the same directory."""

    def __init__(self, directory: str | Path, *, keep_last: int, rank: int, world_size: int) -> None:
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.rank = rank
        self.world_size = world_size

    # ------------------------------------------------------------------ discovery
    def committed_tags(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        tags = [
            p.name for p in self.directory.iterdir() if TAG_RE.match(p.name) and (p / COMMITTED).is_file()
        ]
        return sorted(tags)

    def resume_tag(self) -> str | None:
        """The tag to resume from: ``latest`` when present (it must be sane), else the newest committed tag."""
        latest = self.directory / LATEST
        if latest.exists():
            tag = latest.read_text(encoding="utf-8").strip()
            if not tag:
                raise CheckpointError(
                    f"{latest} is empty; fix or remove it (committed: {self.committed_tags()})"
                )
            if not (self.directory / tag / COMMITTED).is_file():
                raise CheckpointError(f"{latest} names {tag!r}, which is not a committed checkpoint")
            return tag
        tags = self.committed_tags()
        return tags[-1] if tags else None

    # ------------------------------------------------------------------ verification
    def verify(self, tag: str) -> dict:
        """Check COMMITTED against the manifest and every file's size and sha256; returns the manifest."""
        folder = self.directory / tag
        marker, manifest_path = folder / COMMITTED, folder / MANIFEST
        if not marker.is_file():
            raise CheckpointError(f"{marker} is missing: checkpoint {tag} was never committed")
        if not manifest_path.is_file():
            raise CheckpointError(f"{manifest_path} is missing")
        raw = manifest_path.read_bytes()
        if marker.read_text(encoding="utf-8").strip() != hashlib.sha256(raw).hexdigest():
            raise CheckpointError(f"{manifest_path} does not match its COMMITTED marker (altered or torn)")
        try:
            manifest = json.loads(raw)
        except json.JSONDecodeError:
            raise CheckpointError(f"{manifest_path} is not valid JSON") from None
        for rel, entry in manifest["files"].items():
            path = folder / rel
            if not path.is_file():
                raise CheckpointError(f"{path} is listed in the manifest but missing")
            size = path.stat().st_size
            if size != entry["size"]:
                raise CheckpointError(
                    f"{path} has {size} bytes, the manifest says {entry['size']} (truncated?)"
                )
        digests = _hash_files(folder, self._my_share(sorted(manifest["files"])))
        for rel, digest in digests.items():
            if digest != manifest["files"][rel]["sha256"]:
                raise CheckpointError(f"{folder / rel} does not match its sha256 in the manifest (corrupted)")
        return manifest

    def _my_share(self, names: list[str]) -> list[str]:
        """Files this rank hashes (ranks split the work; every rank checks sizes of all)."""
        return names[self.rank :: self.world_size]

    # ------------------------------------------------------------------ save
    def save(self, engine, step: int, *, client_state: dict, rank_state: dict, meta: dict) -> Path:
        """Save, commit and publish checkpoint ``step`` (collective: every rank calls it)."""
        tag = tag_for(step)
        folder = self.directory / tag
        started = time.perf_counter()
        if self.rank == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            if folder.exists():  # an uncommitted leftover of a killed save, or a re-save of the same step
                shutil.rmtree(folder)
        _barrier()
        engine.save_checkpoint(str(self.directory), tag=tag, client_state=client_state, save_latest=False)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(rank_state, folder / rank_state_name(self.rank))
        _barrier()
        names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        mine = _hash_files(folder, self._my_share(names))
        hashes = [mine]
        if dist.is_initialized() and self.world_size > 1:
            hashes = [None] * self.world_size
            dist.all_gather_object(hashes, mine)
        if self.rank == 0:
            files = {}
            for part in hashes:
                for rel, digest in part.items():
                    files[rel] = {"size": (folder / rel).stat().st_size, "sha256": digest}
            manifest = {"tag": tag, "step": step, "world_size": self.world_size, **meta, "files": files}
            write_json_atomic(folder / MANIFEST, manifest)
            digest = hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest()
            write_text_atomic(folder / COMMITTED, digest + "\n")
            write_text_atomic(self.directory / LATEST, tag + "\n")
            self._prune()
        _barrier()
        self.last_save_seconds = time.perf_counter() - started
        return folder

    def _prune(self) -> None:
        tags = self.committed_tags()
        for tag in tags[: -self.keep_last]:
            shutil.rmtree(self.directory / tag, ignore_errors=True)
            shutil.rmtree(self.directory / (tag + UNIVERSAL_SUFFIX), ignore_errors=True)
        live = set(self.committed_tags())
        for path in self.directory.iterdir():  # torn leftovers older than the newest commit
            if TAG_RE.match(path.name) and path.name not in live and tags and path.name < tags[-1]:
                shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------------ load
    def load(self, engine, tag: str, manifest: dict, *, universal: bool) -> LoadedCheckpoint:
        """Load a verified checkpoint into ``engine`` (universal: through the converted folder)."""
        load_tag = tag + UNIVERSAL_SUFFIX if universal else tag
        path, client_state = engine.load_checkpoint(
            str(self.directory),
            tag=load_tag,
            load_module_strict=True,
            load_optimizer_states=True,
            load_lr_scheduler_states=False,
        )
        if path is None:
            raise CheckpointError(f"DeepSpeed could not load {self.directory / load_tag}")
        old_world = int(manifest["world_size"])
        source_rank = self.rank if old_world == self.world_size else self.rank % old_world
        rank_file = self.directory / tag / rank_state_name(source_rank)
        try:
            rank_state = torch.load(rank_file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear line
            raise CheckpointError(f"{rank_file}: cannot be read ({type(exc).__name__})") from None
        return LoadedCheckpoint(tag, manifest, client_state or {}, rank_state)

    def convert_to_universal(self, tag: str) -> Path:
        """DeepSpeed's ds_to_universal on a verified tag (rank 0 works, all ranks wait); returns the folder."""
        out = self.directory / (tag + UNIVERSAL_SUFFIX)
        done, failed = out / COMMITTED, self.directory / f".{tag}.universal.failed"
        if self.rank == 0 and not done.is_file():
            failed.unlink(missing_ok=True)
            from deepspeed.checkpoint import ds_to_universal

            tmp = self.directory / f".{tag}.universal.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            argv = sys.argv
            sys.argv = [
                "ds_to_universal",
                f"--input_folder={self.directory / tag}",
                f"--output_folder={tmp}",
                "--num_extract_workers=1",
                "--num_merge_workers=1",
            ]
            try:
                args = ds_to_universal.parse_arguments()
            finally:
                sys.argv = argv
            try:
                ds_to_universal.main(args)
            except BaseException:
                failed.write_text(tag + "\n", encoding="utf-8")
                raise
            (tmp / COMMITTED).write_text(tag + "\n", encoding="utf-8")
            os.replace(tmp, out)
            fsync_dir(self.directory)
        else:
            # The conversion can outlast the process-group timeout: wait on the file system, not a barrier.
            deadline = time.monotonic() + UNIVERSAL_WAIT_S
            while not done.is_file():
                if failed.is_file():
                    raise CheckpointError(f"rank 0 failed to convert {self.directory / tag} (see its log)")
                if time.monotonic() > deadline:
                    raise CheckpointError(f"timed out waiting for rank 0 to write {out}")
                time.sleep(0.5)
        _barrier()
        return out
