"""Many ``data_prep`` processes writing different streams of one dataset directory at the same time."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deltalm.shard_format import load_manifest

from .conftest import REPO, SAMPLE, read_tree, run_cli


def _command(spm_model, out, lang: str, source: str) -> list[str]:
    return [sys.executable, "-m", "data_prep", "mono", "--spm", str(spm_model), "--lang", lang, "--output",
            str(out), "--workers", "1", "--shard-size", "4k", "--no-progress", str(SAMPLE / "mono" / source)]  # fmt: skip


@pytest.mark.slow
def test_concurrent_processes_build_one_sound_dataset(spm_model, tmp_path):
    langs = {f"l{i}": ("de.txt.gz" if i % 2 else "en.txt.gz") for i in range(6)}
    env = dict(os.environ, PYTHONPATH=str(REPO))
    together = tmp_path / "together"
    procs = [
        subprocess.Popen(_command(spm_model, together, lang, src), env=env, stderr=subprocess.PIPE, text=True)
        for lang, src in langs.items()
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    rc, out, err = run_cli("verify", together)
    assert rc == 0, err
    manifest = load_manifest(together)
    assert sorted(manifest["streams"]) == sorted(langs)
    assert len(manifest["commands"]) == len(langs)
    # Each stream is what a process alone in its own directory writes, byte for byte.
    tree = read_tree(together)
    for lang, src in langs.items():
        alone = tmp_path / f"alone-{lang}"
        proc = subprocess.run(_command(spm_model, alone, lang, src), env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        single = read_tree(alone)
        for name, data in single.items():
            if name != "manifest.json":
                assert tree[name] == data, name
        assert load_manifest(alone)["streams"][lang] == manifest["streams"][lang]
        assert manifest["streams"][lang]["num_shards"] > 5
