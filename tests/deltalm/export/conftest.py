"""Session-wide assets of tests/export (built once, shared by every module)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deltalm.export import fixtures


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Six committed engine checkpoints: 1 and 2 ranks x ZeRO 1/2/3 (two launches)."""
    return fixtures.train_runs(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def spm(tmp_path_factory) -> Path:
    """A 396-piece SentencePiece model: with 108 extra ids, the runs' 500-row vocabulary."""
    return fixtures.train_spm(tmp_path_factory.mktemp("spm"))
