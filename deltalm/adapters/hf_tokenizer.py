"""The project's SentencePiece vocabulary as a Hugging Face ``tokenizer.json`` that gives the project's ids.

Hugging Face's XLM-R tokenizer, built from ``sentencepiece.bpe.model`` alone, has no byte fallback: where the
project's :class:`~deltalm.vocabulary.Vocabulary` (SentencePiece with ``byte_fallback``) gives byte pieces for a
character outside the vocabulary, it gives ``<unk>``. This module writes the tokenizer explicitly instead:

- model: Unigram over fairseq/XLM-R ids (``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, SentencePiece piece
  *p* → *p*+1 for *p* ≥ 3, ``<mask>`` = pieces + 1), ``byte_fallback=True`` (the ``<0xNN>`` pieces);
- normalizer: SentencePiece's own precompiled character map (NFKC), then its whitespace rules (strip both ends,
  collapse runs of spaces); pre-tokenizer: ``▁`` for spaces and one in front (``add_dummy_prefix``);
- post-processor: ``<s> A </s>`` (``<s> A </s></s> B </s>`` for pairs), as XLM-R;
- decoder: ``▁`` → space, byte pieces → their bytes, leading space dropped.

Ids agree with the project on any text except text that literally contains a token name: ``<s>``, ``</s>``,
``<unk>``, ``<pad>``, ``<mask>`` (Hugging Face matches added tokens in raw text unless called with
``split_special_tokens=True``) or a byte piece's name such as ``<0x41>`` (a Unigram model in ``tokenizers`` cannot
keep a piece out of normal matching).

``tokenizer_config.json`` names ``XLMRobertaTokenizer``, so ``AutoTokenizer.from_pretrained(dir)`` loads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from deltalm.adapters.checkpoint_io import CheckpointError
from deltalm.vocabulary import Vocabulary

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
# transformers' own XLMRobertaTokenizer rebuilds the Unigram model without byte fallback from tokenizer.json's
# vocabulary; the generic tokenizers-backed class loads tokenizer.json as written.
TOKENIZER_CLASS = "PreTrainedTokenizerFast"


def build_tokenizer(vocab: Vocabulary):
    """A ``tokenizers.Tokenizer`` giving ``[<s>] + vocab.encode(text) + [</s>]`` for ``text``."""
    try:
        from sentencepiece import sentencepiece_model_pb2
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
        from tokenizers.models import Unigram
    except (
        ImportError
    ) as exc:  # tokenizers comes with transformers, protobuf with tensorboard (requirements.txt)
        raise CheckpointError(
            f"writing tokenizer.json needs the {exc.name or 'tokenizers/protobuf'} package "
            "(pip install -r requirements.txt)"
        ) from None

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(vocab.spm_path).read_bytes())
    specials = {proto.trainer_spec.unk_id, proto.trainer_spec.bos_id, proto.trainer_spec.eos_id}
    if specials != {0, 1, 2}:
        raise ValueError(f"{vocab.spm_path}: SentencePiece pieces 0-2 must be <unk>, <s>, </s>")
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    # A byte piece is only a fallback (SentencePiece never matches the text "<0x41>" to it): it gets the lowest
    # normal score, which keeps the unknown-character penalty (lowest score - 10) where SentencePiece has it.
    lowest = min((p.score for p in proto.pieces if p.type == 1), default=0.0)
    pieces += [(p.piece, lowest if p.type == 6 else p.score) for p in proto.pieces[3:]]
    pieces += [("<mask>", 0.0)]
    if len(pieces) != vocab.mask + 1:
        raise ValueError(
            f"{vocab.spm_path}: {len(pieces)} tokenizer ids, the vocabulary expects {vocab.mask + 1}"
        )
    tokenizer = Tokenizer(Unigram(pieces, unk_id=3, byte_fallback=bool(proto.trainer_spec.byte_fallback)))
    spec = proto.normalizer_spec
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    if steps:
        tokenizer.normalizer = normalizers.Sequence(steps)
    prepend = "always" if spec.add_dummy_prefix else "never"
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return tokenizer


def write_tokenizer(vocab: Vocabulary, out: Path, model_max_length: int) -> None:
    """``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json`` in ``out``."""
    out = Path(out)
    build_tokenizer(vocab).save(str(out / TOKENIZER_FILE))
    specials = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "cls_token": "<s>",
        "mask_token": "<mask>",
    }
    config = {"tokenizer_class": TOKENIZER_CLASS, "model_max_length": model_max_length, **specials}
    (out / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    (out / SPECIAL_TOKENS_FILE).write_text(json.dumps(specials, indent=1) + "\n", encoding="utf-8")
