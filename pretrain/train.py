"""DeltaLM pre-training entry point.

    deepspeed [--num_gpus N] pretrain/train.py --config CONFIG.yaml [--preset paper|tiny] [--set key=value ...]
    python pretrain/train.py ...            (one process)
    mpirun -np N python pretrain/train.py ... / srun python pretrain/train.py ...

Everything that can be wrong with the command line, the config or the data directories (each manifest and
shard table, every shard's presence and size, split across the ranks) is reported as one line on stderr with
exit code 2 before any process group starts; a shard found bad when training first reads it (schema, rows,
tokens, unreadable) ends the run with one line and exit code 2 as well. Exit codes: 0 done (or preempted after its
checkpoint), 2 bad config/CLI/data, 3 untrustworthy checkpoint, 4 too many non-finite steps, 128 + signal
number (143 SIGTERM) stopped by a signal during set-up (the handler is installed first thing; nothing new saved).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# MKL's results depend on memory alignment unless pinned: bit-exact resume on CPU needs this before torch loads.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deltalm.config_tree import ConfigError  # noqa: E402
from deltalm.engine.cli import EXIT_BAD_CONFIG, engine_argument_parser, fail, run_guarded, stopped  # noqa: E402
from deltalm.engine.distributed import LaunchError, RankInfo, discover, init_process_group, shutdown  # noqa: E402
from deltalm.engine.model_init import build_model, check_init  # noqa: E402
from deltalm.engine.preemption import Preempted, install_for_setup  # noqa: E402
from deltalm.shard_format import ShardError, load_manifest  # noqa: E402
from deltalm.vocabulary import Vocabulary, file_sha256  # noqa: E402
from pretrain.config import PRESETS, PretrainConfig  # noqa: E402


def read_config(argv: list[str] | None) -> PretrainConfig:
    args = engine_argument_parser("pretrain/train.py", presets=sorted(PRESETS)).parse_args(argv)
    from deltalm.engine.config import build_config

    return build_config(PretrainConfig, PRESETS, args.config, args.overrides, preset=args.preset)


def dataset_vocabulary(config: PretrainConfig) -> Vocabulary:
    """The vocabulary the shards were tokenized with (from their manifest); the model must match it."""
    if not config.data.data_dirs:
        raise ConfigError("data.data_dirs: at least one data_prep dataset directory is required")
    tokenizer = load_manifest(config.data.data_dirs[0]).get("tokenizer") or {}
    try:
        vocab = Vocabulary(
            spm_size=int(tokenizer["spm_size"]),
            num_sentinels=int(tokenizer["num_sentinels"]),
            spm_sha256=tokenizer.get("spm_sha256"),
        )
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{config.data.data_dirs[0]}/manifest.json: no usable tokenizer record") from None
    if config.data.spm_model:
        check_spm_model(config.data.spm_model, vocab, config.data.data_dirs[0])
    if config.model.vocab_size != vocab.pretrain_size:
        raise ConfigError(
            f"model.vocab_size ({config.model.vocab_size}) does not match the dataset's vocabulary "
            f"({vocab.pretrain_size}); set model.vocab_size={vocab.pretrain_size}"
        )
    return vocab


def check_spm_model(path: str, vocab: Vocabulary, data_dir: str) -> None:
    """``data.spm_model`` must be the SentencePiece model the shards were tokenized with."""
    if not Path(path).is_file():
        raise ConfigError(f"data.spm_model: SentencePiece model not found: {path}")
    if vocab.spm_sha256 and file_sha256(path) != vocab.spm_sha256:
        raise ConfigError(
            f"data.spm_model: {path} is not the tokenizer of {data_dir} (sha256 differs from its manifest)"
        )


def check_data_dirs(config: PretrainConfig, rank: RankInfo) -> None:
    """Every ``data.data_dirs`` entry, not just the first: a readable manifest, one tokenizer for all,
    consistent stream kinds, shard tables matching their manifests, and every listed shard present with its
    listed size. The shard files are split across the ranks (rank r stats shards r, r + world, ...), so each
    rank's cost is its share; schema, rows and tokens are checked when a shard is first opened."""
    from pretrain.loader import read_manifests

    for directory in config.data.data_dirs:
        if not Path(directory).is_dir():
            raise ShardError(f"data.data_dirs: {directory} is not a directory")
    streams, _, _ = read_manifests(config.data.data_dirs)
    for source in streams.values():
        table = source.shard_table()
        if (int(table.rows.sum()), int(table.tokens.sum())) != (source.rows, source.tokens):
            raise ShardError(f"stream {source.name}: its shard tables do not sum to the manifest's totals")
        for i in range(rank.rank, len(table), rank.world_size):
            entry = table.entry(i)
            try:
                size = os.stat(entry.path).st_size
            except FileNotFoundError:
                raise ShardError(f"{entry.path}: listed in the manifest but missing") from None
            except OSError as exc:
                raise ShardError(f"{entry.path}: unreadable shard ({exc.strerror or exc})") from None
            if size != entry.bytes:
                raise ShardError(
                    f"{entry.path}: {size} bytes, the manifest says {entry.bytes} (corrupt or replaced shard)"
                )


def check_before_start(config: PretrainConfig, rank: RankInfo) -> Vocabulary:
    config.batch.accumulation(rank.world_size)
    check_init(config.init)
    vocab = dataset_vocabulary(config)
    config.data.check_sentinels(vocab.num_sentinels)
    check_data_dirs(config, rank)
    return vocab


def train(config: PretrainConfig, rank: RankInfo, vocab: Vocabulary) -> int:
    from deltalm.engine.trainer import Trainer
    from pretrain.loader import PretrainLoader

    init_process_group(rank, timeout_s=config.deepspeed.timeout_s, cpu_shm_comm=config.deepspeed.cpu_shm_comm)
    try:
        model = build_model(config.model, config.init, seed=config.run.seed)
        loader = PretrainLoader(
            config.data,
            vocab,
            micro_batch_size=config.batch.micro_batch_size,
            seed=config.run.seed,
            dp_rank=rank.rank,
            dp_world_size=rank.world_size,
        )
        try:
            result = Trainer(config, model, loader, rank).fit()
        finally:
            loader.close()
    except ShardError as exc:  # a shard found bad when first read: one line, exit 2
        raise ConfigError(f"data: {exc}") from None
    finally:
        shutdown()
    if rank.is_main:
        print(f"done: step {result.step} ({result.stopped_by}), {result.skipped_steps} skipped steps")
    return 0


def main(argv: list[str] | None = None) -> int:
    preemption = (
        install_for_setup()
    )  # first: a stop signal from here until the first step ends the run at once
    try:
        try:
            config = read_config(argv)
            rank = discover()
            vocab = check_before_start(config, rank)
        except (ConfigError, LaunchError, ShardError, FileNotFoundError) as exc:
            return fail(exc, EXIT_BAD_CONFIG)
        except Preempted as exc:
            return stopped(exc)
        return run_guarded(lambda: train(config, rank, vocab))
    finally:
        preemption.uninstall()


if __name__ == "__main__":
    sys.exit(main())
