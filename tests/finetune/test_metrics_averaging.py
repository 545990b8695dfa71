"""Metrics equal the cited libraries called directly; checkpoint averaging is the exact fp64 mean."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from finetune.average import main as average_main
from finetune.averaging import AveragingError, average_checkpoints
from finetune.metrics import CharacterTokenizer, bleu, rouge, score_all, wordnet_missing

HYPS = ["The cat sat on the mat.", "Open the file now", "Datei speichern unter"]
REFS = ["The cat is sitting on the mat.", "Open the file.", "Datei speichern unter …"]


def test_bleu_equals_sacrebleu():
    import sacrebleu

    value, signature = bleu(HYPS, REFS)
    direct = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="13a")
    assert value == direct.score and value > 0
    assert "tok:13a" in signature and "case:mixed" in signature
    assert bleu(["the cat"], ["The cat"])[0] != 100.0  # case-sensitive


def test_rouge_equals_rouge_score_and_chinese_by_characters():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = {
        k: 100 * sum(scorer.score(r, h)[k].fmeasure for h, r in zip(HYPS, REFS, strict=True)) / 3
        for k in ("rouge1", "rouge2", "rougeL")
    }
    assert rouge(HYPS, REFS) == pytest.approx(expected, abs=1e-12)
    # Chinese: the default tokenizer drops it entirely (score 0); by characters 2 of 3 unigrams match.
    assert rouge(["打开文件"], ["打开文档"], lang="en")["rouge1"] == 0.0
    zh = rouge(["打开文件"], ["打开文档"], lang="zh")
    assert zh["rouge1"] == pytest.approx(75.0) and zh["rouge2"] == pytest.approx(100 * 2 / 3)
    assert CharacterTokenizer().tokenize("打开 文件。") == ["打", "开", "文", "件"]


def test_meteor_degrades_when_wordnet_missing():
    result = score_all(HYPS, REFS, metrics=("bleu", "meteor"))
    if wordnet_missing():
        assert "meteor" not in result.scores and "METEOR unavailable" in result.notes[0]
    else:
        assert 0 <= result.scores["meteor"] <= 100
    with pytest.raises(ValueError, match="unknown metric"):
        score_all(HYPS, REFS, metrics=("cider",))


def _checkpoints(tmp_path, n=3):
    paths = []
    gen = torch.Generator().manual_seed(0)
    for i in range(n):
        sd = {
            "w": torch.randn(17, 5, generator=gen),
            "h": torch.randn(33, generator=gen).to(torch.bfloat16),
            "step": torch.tensor([7]),
        }
        path = tmp_path / f"ckpt{i}.safetensors"
        save_file(sd, str(path), metadata={"format": "deltalm"})
        paths.append(path)
    return paths


def test_average_is_exact_fp64_mean(tmp_path):
    paths = _checkpoints(tmp_path)
    out = tmp_path / "avg" / "model.safetensors"
    average_checkpoints(paths, out)
    got = load_file(str(out))
    sds = [load_file(str(p)) for p in paths]
    for key in ("w", "h"):
        expected = (torch.stack([sd[key].double() for sd in sds]).sum(0) / 3).to(sds[0][key].dtype)
        assert got[key].dtype == sds[0][key].dtype and torch.equal(got[key], expected)
    assert torch.equal(got["step"], torch.tensor([7]))
    # averaging one checkpoint returns it bit for bit
    average_checkpoints(paths[:1], tmp_path / "one.safetensors")
    assert all(torch.equal(v, sds[0][k]) for k, v in load_file(str(tmp_path / "one.safetensors")).items())


def _cli(args: list[str], capsys) -> SimpleNamespace:
    """``python -m finetune.average ARGS`` in-process: exit code and captured stderr."""
    code = average_main(args)
    return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)


def test_average_refuses_mismatches_and_cli(tmp_path, capsys):
    paths = _checkpoints(tmp_path)
    bad = tmp_path / "bad.safetensors"
    save_file(
        {"w": torch.zeros(17, 4), "h": torch.zeros(33, dtype=torch.bfloat16), "step": torch.tensor([7])},
        str(bad),
    )
    with pytest.raises(AveragingError, match="w is"):
        average_checkpoints([paths[0], bad], tmp_path / "x.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    proc = _cli(
        [
            "--output",
            str(tmp_path / "o.safetensors"),
            str(paths[0]),
            str(tmp_path / "junk.safetensors"),
        ],
        capsys,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "not a safetensors file" in proc.stderr
    proc = _cli(
        [
            "--output",
            str(tmp_path / "o.safetensors"),
            *map(str, paths),
        ],
        capsys,
    )
    assert proc.returncode == 0, proc.stderr
    average_checkpoints(paths, tmp_path / "api.safetensors")
    cli, api = load_file(str(tmp_path / "o.safetensors")), load_file(str(tmp_path / "api.safetensors"))
    assert cli.keys() == api.keys() and all(torch.equal(cli[k], api[k]) for k in api)
    # --last N over a weights directory picks the newest N by step
    weights = tmp_path / "run" / "weights"
    weights.mkdir(parents=True)
    for step, p in zip((100, 20, 300), paths, strict=True):
        (weights / f"step_{step:09d}.safetensors").write_bytes(p.read_bytes())
    proc = _cli(
        [
            "--run-dir",
            str(tmp_path / "run"),
            "--last",
            "2",
            "--output",
            str(tmp_path / "last2.safetensors"),
        ],
        capsys,
    )
    assert proc.returncode == 0, proc.stderr
    expected = (load_file(str(paths[0]))["w"].double() + load_file(str(paths[2]))["w"].double()) / 2
    assert torch.equal(load_file(str(tmp_path / "last2.safetensors"))["w"], expected.float())


# Near-perfect Chinese hypotheses (one or two characters off per sentence).
ZH_REFS = [
    "今天天气很好，我们去公园散步吧。",
    "这本书非常有意思，我已经读了三遍。",
    "他每天早上六点起床，然后去跑步。",
    "请把窗户关上，外面太冷了。",
]
ZH_HYPS = [
    "今天天气很好，我们去公园散步。",
    "这本书很有意思，我已经读了三遍。",
    "他每天早上六点起床，然后去跑步了。",
    "请把窗户关上，外面很冷。",
]


@pytest.mark.parametrize("lang", ["zh", "zh-Hans", "zh_CN"])
def test_bleu_tokenizer_follows_the_target_language_like_sacrebleu(lang):
    from sacrebleu.metrics import BLEU

    value, signature = bleu(ZH_HYPS, ZH_REFS, lang=lang)
    sacre = BLEU(trg_lang="zh").corpus_score(ZH_HYPS, [ZH_REFS]).score  # sacreBLEU's own choice for zh
    assert value == sacre and round(value, 2) == 82.65
    assert "tok:zh" in signature
    # the same strings under one 13a tokenizer for every pair: nothing matches
    value_13a, signature_13a = bleu(ZH_HYPS, ZH_REFS, tokenize="13a", lang=lang)
    assert value_13a == 0.0 and "tok:13a" in signature_13a
    # score_all (finetune.evaluate and validation during fine-tuning) makes the same choice
    result = score_all(ZH_HYPS, ZH_REFS, metrics=("bleu",), lang=lang)
    assert result.scores["bleu"] == value and "tok:zh" in result.signatures["bleu"]


def test_bleu_tokenizer_choice_per_language_and_override():
    from finetune.metrics import bleu_tokenizer_for

    assert [bleu_tokenizer_for(x) for x in ("zh", "ja", "ko", "de", "", "ZH-tw")] == [
        "zh", "ja-mecab", "ko-mecab", "13a", "13a", "zh"
    ]  # fmt: skip
    assert bleu_tokenizer_for("zh", "intl") == "intl"
    assert bleu(HYPS, REFS, tokenize="char", lang="de")[1].count("tok:char") == 1


def test_bleu_tokenizer_with_a_missing_package_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import importlib.util

    from deltalm.config_tree import ConfigError
    from finetune.config import DataFileConfig, TaskConfig
    from finetune.evaluate import main as evaluate_main
    from finetune.metrics import check_bleu_tokenizer

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "MeCab" else real_find_spec(name, *a)
    )
    with pytest.raises(ValueError, match="'ja-mecab' needs the package 'mecab-python3'"):
        check_bleu_tokenizer("ja-mecab")
    with pytest.raises(ConfigError, match="target 'ja'.*mecab-python3"):
        TaskConfig(test=[DataFileConfig(path="t.jsonl", src_lang="en", tgt_lang="ja")]).validate()
    with pytest.raises(ConfigError, match="unknown sacreBLEU tokenizer 'nope'"):
        TaskConfig(bleu_tokenize="nope").validate()
    TaskConfig(bleu_tokenize="13a", test=[DataFileConfig(path="t", tgt_lang="ja")]).validate()  # override
    # the CLI refuses in one line before loading the (absent) model or reading the (absent) data
    code = evaluate_main(
        ["--model", str(tmp_path / "absent"), "--data", str(tmp_path / "absent.jsonl"), "--src-lang", "en",
         "--tgt-lang", "ja", "--output-dir", str(tmp_path / "out")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "mecab-python3" in err
    assert not (tmp_path / "out").exists()
