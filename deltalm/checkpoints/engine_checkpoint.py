"""A committed engine checkpoint read back as fp32 tensors, one tensor at a time (any ZeRO stage, any world size).

The engine (:mod:`deltalm.engine.checkpoint`) commits each tag with a manifest (every file's size and sha256) and a
``COMMITTED`` marker; :func:`open_checkpoint` verifies both before any DeepSpeed file is opened, so an uncommitted,
truncated or altered checkpoint is refused with one line naming the file.

Where the fp32 weights live (DeepSpeed 0.19.8, the layout its ``zero_to_fp32`` reads):

- ZeRO 1/2 (and bf16/fp16 at stage 0): every rank's optimizer file holds ``single_partition_of_fp32_groups``,
  one flat fp32 partition per parameter group; the groups' partitions concatenated over ranks hold the
  parameters of ``param_shapes[group]`` back to back (plus ``param_alignment_paddings`` when present).
- ZeRO 3: every rank's file holds ``fp32_flat_groups``; parameter *p* (in ``param_shapes`` order over all groups)
  takes ``ceil(numel / world)`` elements of each rank's flat vector (groups concatenated); the ranks' slices
  concatenated and cut to ``numel`` are the tensor.
- ZeRO 0 in fp32: the module state itself is the fp32 weights.

Files are opened with ``torch.load(weights_only=True, mmap=True)``: nothing is unpickled except tensors,
containers and the few DeepSpeed value types listed in :data:`DEEPSPEED_SAFE_TYPES`, and the optimizer moments
stay on disk (memory-mapped, never touched), so the peak resident memory is about one copy of the fp32 weights.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from deltalm.config_tree import ConfigError
from deltalm.engine.checkpoint import COMMITTED, LATEST, TAG_RE, CheckpointStore
from deltalm.file_io import CheckpointError
from deltalm.model.config import DeltaLMConfig

MODULE_PREFIX = "model."  # the engine wraps the model in TrainingModule(model=...)
OPTIM_RE = re.compile(r"^(?:bf16_|fp16_)?zero_pp_rank_(\d+)_mp_rank_00_optim_states\.pt$")


def _deepspeed_safe_types() -> list:
    """DeepSpeed's value types found in its optimizer files (enums, loss-scaler state, fragment addresses)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]


def load_weights_only(path: Path) -> dict:
    """``torch.load(weights_only=True, mmap=True)`` with DeepSpeed's value types allowed; one-line errors."""
    try:
        with torch.serialization.safe_globals(_deepspeed_safe_types()):
            blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, ...: one clear line
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        reason = f"it holds the unexpected type {found.group(1)}" if found else type(exc).__name__
        raise CheckpointError(f"{path}: cannot be read weights-only ({reason})") from None
    if not isinstance(blob, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(blob).__name__}")
    return blob


def find_checkpoint_dir(run_dir: str | Path) -> Path:
    """The checkpoint directory of a run: ``run_dir`` itself when it holds tags, else ``run_dir/checkpoints``
    (or the directory the run's ``config.yaml`` names in ``checkpoint.dir``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")

    def holds_tags(path: Path) -> bool:
        return path.is_dir() and (
            (path / LATEST).exists() or any(TAG_RE.match(p.name) for p in path.iterdir())
        )

    if holds_tags(run_dir):
        return run_dir
    candidates = [run_dir / "checkpoints"]
    config = run_dir / "config.yaml"
    if config.is_file():
        import yaml

        try:
            data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
            named = (data.get("checkpoint") or {}).get("dir") if isinstance(data, dict) else None
        except yaml.YAMLError:
            named = None
        if named:
            candidates.insert(0, Path(named))
    for path in candidates:
        if holds_tags(path):
            return path
    raise CheckpointError(f"{run_dir}: no checkpoints found (looked in {', '.join(map(str, candidates))})")


@dataclass
class EngineCheckpoint:
    """One verified, committed tag of a run, with the training config stored in it."""

    directory: Path  # the checkpoint directory (holding the tags)
    tag: str
    manifest: dict
    training_config: dict  # the run's whole config tree (client state "config")
    model_config: DeltaLMConfig
    step: int
    vocabulary: dict | None = None  # the vocabulary record a fine-tuning run keeps (language tags, sentinels)
    _model_state: dict = field(repr=False, default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.directory / self.tag

    @property
    def zero_stage(self) -> int:
        return int(self.manifest.get("zero_stage", 0))

    @property
    def world_size(self) -> int:
        return int(self.manifest["world_size"])

    def parameter_shapes(self) -> dict[str, torch.Size]:
        """Every parameter of the model (our names, no ``model.`` prefix) in DeepSpeed's flat order."""
        out: dict[str, torch.Size] = {}
        for group in self._model_state.get("param_shapes") or []:
            for name, shape in group.items():
                out[_strip(name)] = torch.Size(shape)
        if not out:  # ZeRO-0 fp32: the module state is the model
            out = {_strip(k): v.shape for k, v in self._model_state["module"].items()}
        return out

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, fp32 tensor)`` for every parameter, consolidated one at a time (a fresh contiguous copy)."""
        optim = self._optimizer_files()
        if not optim:
            yield from self._module_tensors()
            return
        shards = [load_weights_only(path)["optimizer_state_dict"] for path in optim]
        if self.zero_stage == 3 or "fp32_flat_groups" in shards[0]:
            yield from _zero3_tensors(self, shards)
        elif "single_partition_of_fp32_groups" in shards[0]:
            yield from _zero12_tensors(self, shards)
        else:
            raise CheckpointError(
                f"{optim[0]}: no fp32 master weights (neither single_partition_of_fp32_groups nor fp32_flat_groups)"
            )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.tensors())

    # ------------------------------------------------------------------ internals
    def _optimizer_files(self) -> list[Path]:
        found = {}
        for path in self.folder.iterdir():
            match = OPTIM_RE.match(path.name)
            if match:
                found[int(match.group(1))] = path
        if found and sorted(found) != list(range(self.world_size)):
            raise CheckpointError(
                f"{self.folder}: optimizer shards for ranks {sorted(found)}, expected 0..{self.world_size - 1}"
            )
        return [found[r] for r in sorted(found)]

    def _module_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        module = self._model_state.get("module") or {}
        if not module:
            raise CheckpointError(f"{self.folder}: no optimizer shards and no module weights")
        for key, tensor in module.items():
            if tensor.dtype != torch.float32:
                raise CheckpointError(
                    f"{self.folder}: module weights are {tensor.dtype} and no fp32 master copy was found"
                )
            yield _strip(key), tensor.detach().clone().contiguous()


def _strip(name: str) -> str:
    return name[len(MODULE_PREFIX) :] if name.startswith(MODULE_PREFIX) else name


class _FlatVector:
    """One rank's flat fp32 groups seen as a single vector (slices may span group boundaries)."""

    def __init__(self, groups: list[torch.Tensor]) -> None:
        self.groups = groups
        self.starts = [0]
        for g in groups:
            self.starts.append(self.starts[-1] + g.numel())

    @property
    def numel(self) -> int:
        return self.starts[-1]

    def slice(self, begin: int, end: int) -> list[torch.Tensor]:
        pieces = []
        for g, (lo, hi) in enumerate(zip(self.starts, self.starts[1:], strict=False)):
            a, b = max(begin, lo), min(end, hi)
            if a < b:
                pieces.append(self.groups[g].reshape(-1)[a - lo : b - lo])
        return pieces


def _zero3_tensors(ckpt: EngineCheckpoint, shards: list[dict]) -> Iterator[tuple[str, torch.Tensor]]:
    world = len(shards)
    flats = [_FlatVector(list(s["fp32_flat_groups"])) for s in shards]
    offset = 0
    for name, shape in ckpt.parameter_shapes().items():
        numel = math.prod(shape)
        part = math.ceil(numel / world)
        if offset + part > flats[0].numel:
            raise CheckpointError(f"{ckpt.folder}: ZeRO-3 partitions end before parameter {name}")
        pieces = [p for flat in flats for p in flat.slice(offset, offset + part)]
        yield name, torch.cat(pieces)[:numel].clone().view(shape)
        offset += part
    if offset != flats[0].numel:
        raise CheckpointError(f"{ckpt.folder}: used {offset} of {flats[0].numel} ZeRO-3 partition elements")


def _zero12_tensors(ckpt: EngineCheckpoint, shards: list[dict]) -> Iterator[tuple[str, torch.Tensor]]:
    world = len(shards)
    groups_per_rank = [list(s["single_partition_of_fp32_groups"]) for s in shards]
    paddings = shards[0].get("param_alignment_paddings")
    shapes_by_group = [
        {_strip(k): torch.Size(v) for k, v in group.items()} for group in ckpt._model_state["param_shapes"]
    ]
    if len(shapes_by_group) != len(groups_per_rank[0]):
        raise CheckpointError(
            f"{ckpt.folder}: {len(shapes_by_group)} parameter groups but {len(groups_per_rank[0])} fp32 partitions"
        )
    for g, shapes in enumerate(shapes_by_group):
        partitions = [groups_per_rank[r][g].reshape(-1) for r in range(world)]
        size = partitions[0].numel()
        total = size * world
        offset = 0
        for index, (name, shape) in enumerate(shapes.items()):
            numel = math.prod(shape)
            if offset + numel > total:
                raise CheckpointError(
                    f"{ckpt.folder}: fp32 partitions of group {g} end before parameter {name}"
                )
            pieces = []
            for r in range(offset // size, (offset + numel - 1) // size + 1 if numel else offset // size):
                a, b = max(offset, r * size), min(offset + numel, (r + 1) * size)
                pieces.append(partitions[r][a - r * size : b - r * size])
            flat = torch.cat(pieces) if pieces else torch.empty(0)
            yield name, flat.clone().view(shape)
            offset += numel
            if paddings is not None:
                offset += int(paddings[g][index])
        align = 2 * world
        if math.ceil(offset / align) * align != math.ceil(total / align) * align:
            raise CheckpointError(f"{ckpt.folder}: used {offset} of {total} fp32 elements of group {g}")


def open_checkpoint(run_dir: str | Path, tag: str | None = None) -> EngineCheckpoint:
    """Verify and open ``tag`` (default: the newest committed tag) of a pre-training or fine-tuning run."""
    directory = find_checkpoint_dir(run_dir)
    store = CheckpointStore(directory, keep_last=2, rank=0, world_size=1)
    if tag is None:
        tags = store.committed_tags()
        if not tags:
            torn = sorted(p.name for p in directory.iterdir() if TAG_RE.match(p.name))
            hint = f" (uncommitted: {', '.join(torn)})" if torn else ""
            raise CheckpointError(f"{directory}: no committed checkpoint{hint}")
        tag = tags[-1]
    elif not (directory / tag).is_dir():
        raise CheckpointError(f"{directory / tag}: no such checkpoint (committed: {store.committed_tags()})")
    if not (directory / tag / COMMITTED).is_file():
        raise CheckpointError(
            f"{directory / tag / COMMITTED} is missing: checkpoint {tag} was never committed (torn or in progress)"
        )
    manifest = store.verify(tag)
    folder = directory / tag
    model_file = folder / (
        "zero_pp_rank_0_mp_rank_00_model_states.pt"
        if int(manifest.get("zero_stage", 0)) == 3
        else "mp_rank_00_model_states.pt"
    )
    if not model_file.is_file():
        raise CheckpointError(f"{model_file} is missing")
    state = load_weights_only(model_file)
    config = state.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{model_file}: no training config in the client state")
    try:
        model_config = DeltaLMConfig.from_dict(config["model"])
    except ConfigError as exc:
        raise CheckpointError(f"{model_file}: bad model config ({exc})") from None
    return EngineCheckpoint(
        directory=directory,
        tag=tag,
        manifest=manifest,
        training_config=config,
        model_config=model_config,
        step=int(manifest.get("step", 0)),
        vocabulary=state.get("vocabulary") if isinstance(state.get("vocabulary"), dict) else None,
        _model_state=state,
    )
