from __future__ import annotations

import json

import pytest

from deltalm.shard_format import SHARD_TABLE_NAME, load_manifest, write_dataset_manifest
from deltalm.temperature import temperature_probabilities

from .conftest import SAMPLE, run_cli


@pytest.fixture
def dataset(spm_model, tmp_path):
    out = tmp_path / "ds"
    for lang in ("de", "en"):
        rc, _, err = run_cli("mono", "--spm", spm_model, "--lang", lang, "--output", out, "--workers", "1",
                             "--shard-size", "32k", "--no-progress", SAMPLE / "mono" / f"{lang}.txt.gz")  # fmt: skip
        assert rc == 0, err
    rc, _, err = run_cli("parallel", "--spm", spm_model, "--src-lang", "en", "--tgt-lang", "de", "--output", out,
                         "--workers", "1", "--no-progress", SAMPLE / "parallel" / "valid.en-de.jsonl.gz")  # fmt: skip
    assert rc == 0, err
    return out


def test_verify_accepts_a_sound_dataset(dataset):
    rc, out, err = run_cli("verify", dataset)
    assert rc == 0 and err == ""
    assert "OK (3 streams" in out


def test_verify_names_a_shard_with_a_flipped_byte(dataset):
    manifest = load_manifest(dataset)
    shard = dataset / manifest["streams"]["en"]["shards"][1]["path"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    rc, out, err = run_cli("verify", dataset)
    assert rc == 1
    assert err.splitlines() == [
        f"verify: {shard}: sha256 mismatch" + err.splitlines()[0].split("sha256 mismatch")[1]
    ]


def test_verify_names_a_shard_with_a_wrong_row_count(dataset):
    manifest = load_manifest(dataset)
    entry = manifest["streams"]["en-de"]["shards"][0]
    entry["rows"] += 1
    manifest["streams"]["en-de"]["rows"] += 1
    write_dataset_manifest(dataset, manifest)  # a consistent table that lies about one shard
    rc, _, err = run_cli("verify", dataset)
    assert rc == 1
    assert err.splitlines() == [
        f"verify: {dataset / entry['path']}: {entry['rows'] - 1} rows, manifest says {entry['rows']}"
    ]


def test_verify_without_manifest(tmp_path):
    rc, _, err = run_cli("verify", tmp_path)
    assert rc == 1 and "no manifest" in err and err.count("\n") == 1


def test_stats_table_and_temperature_probabilities(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    counts = {name: manifest["streams"][name]["tokens"] for name in ("de", "en")}
    expected = temperature_probabilities(counts, 5.0)
    rc, out, err = run_cli("stats", dataset, "--temperature", "5")
    assert rc == 0, err
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for name in ("de", "en"):
        cols = lines[name]
        assert cols[1] == "mono" and cols[3] == f"{counts[name]:,}"
        assert float(cols[-2]) == pytest.approx(counts[name] / sum(counts.values()), abs=1e-4)
        assert float(cols[-1]) == pytest.approx(expected[name], abs=1e-4)
    assert lines["en-de"][1] == "parallel" and float(lines["en-de"][-1]) == 1.0
    assert expected["de"] != pytest.approx(counts["de"] / sum(counts.values()), abs=1e-3)  # T matters here


def test_stats_rejects_bad_temperature(dataset):
    rc, _, err = run_cli("stats", dataset, "--temperature", "0")
    assert rc == 2 and "--temperature" in err


def test_verify_names_table_and_journal_corruption(dataset):
    table = dataset / "de" / SHARD_TABLE_NAME
    original = table.read_bytes()
    table.write_bytes(original.replace(b'"rows":', b'"rows":1', 1))  # an edited entry
    count = original.count(b"\n")
    rc, _, err = run_cli("verify", dataset, "--workers", "1")
    assert rc == 1 and err.splitlines() == [
        f"verify: {table}: sha256 of its first {count} entries differs from the manifest (corrupt table)"
    ]
    table.write_bytes(original[:-10])  # a truncated table
    rc, _, err = run_cli("verify", dataset)
    assert rc == 1 and "truncated table" in err and err.count("\n") == 1
    table.write_bytes(original + b'{"bytes":1}\n')  # an unfinished command's entry
    (dataset / "en" / ".progress.json").write_text("{}")
    rc, _, err = run_cli("verify", dataset)
    assert rc == 1
    assert "1 entries past the listed" in err and "en/.progress.json" in err and err.count("\n") == 2
