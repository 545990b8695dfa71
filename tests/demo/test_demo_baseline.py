"""demo.baseline: the random-init control's config and the paired comparison (no training here)."""

from __future__ import annotations

import gzip
import json

import yaml

from demo.baseline import baseline_config, compare


def _setup(tmp_path):
    refs = [f"das ist satz nummer {i} im test" for i in range(30)]
    test = tmp_path / "test.en-de.jsonl.gz"
    with gzip.open(test, "wt", encoding="utf-8") as handle:
        for i, ref in enumerate(refs):
            handle.write(json.dumps({"en": f"this is sentence {i}", "de": ref}) + "\n")
    config = {
        "run": {"run_dir": str(tmp_path / "ft"), "max_steps": 10},
        "init": {"kind": "pretrained", "path": str(tmp_path / "export")},
        "optimizer": {"lr": 1e-3},
        "task": {"name": "translation", "test": [{"path": str(test), "src_lang": "en", "tgt_lang": "de"}]},
    }
    ft_yaml = tmp_path / "finetune.yaml"
    ft_yaml.write_text(yaml.safe_dump(config), encoding="utf-8")
    return refs, ft_yaml


def test_baseline_config_changes_only_the_init_and_the_run_dir(tmp_path):
    _refs, ft_yaml = _setup(tmp_path)
    export = tmp_path / "export"
    export.mkdir()
    model = {"vocab_size": 2110, "d_model": 128, "heads": 4, "dropout": 0.3, "attention_dropout": 0.1}
    (export / "config.json").write_text(json.dumps({"format": "deltalm-pretrained", "model": model}))
    out = baseline_config(ft_yaml, export, tmp_path / "random_run", tmp_path / "baseline" / "finetune.yaml")
    got, original = yaml.safe_load(out.read_text()), yaml.safe_load(ft_yaml.read_text())
    assert got["init"] == {"kind": "random", "path": ""}
    assert got["model"] == {"vocab_size": 2110, "d_model": 128, "heads": 4}  # dropouts stay the run's own
    assert got["run"] == {**original["run"], "run_dir": str(tmp_path / "random_run")}
    assert got["optimizer"] == original["optimizer"] and got["task"] == original["task"]


def test_compare_reports_difference_and_significance(tmp_path):
    refs, ft_yaml = _setup(tmp_path)
    pre, rnd = tmp_path / "pre", tmp_path / "rnd"
    for folder, hyps in ((pre, refs), (rnd, ["nichts"] * len(refs))):
        folder.mkdir()
        (folder / "hypotheses.en-de.txt").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    (pre / "results.json").write_text(json.dumps({"results": [{"pair": "en-de"}]}))
    (row,) = compare(ft_yaml, pre, rnd, samples=200)
    assert row["pair"] == "en-de" and row["n"] == 30
    assert row["pretrained"] == 100.0 and row["random"] < 5.0
    assert row["difference"] == round(row["pretrained"] - row["random"], 2)
    assert row["significant"] and row["p_value"] < 0.05
