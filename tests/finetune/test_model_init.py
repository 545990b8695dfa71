"""Starting models: vocabulary growth for language tags, official-checkpoint init, mismatch refusal."""

from __future__ import annotations

import pytest
import torch

from deltalm.adapters.checkpoint_io import CheckpointError
from deltalm.adapters.official import save_official
from deltalm.adapters.pretrained import save_pretrained
from deltalm.engine.config import InitConfig
from deltalm.model import DeltaLM
from deltalm.model_config import DeltaLMConfig
from deltalm.vocabulary import Vocabulary
from finetune.embedding_growth import grow_vocabulary
from finetune.model_init import initial_model


def _tiny(vocab_size: int) -> DeltaLMConfig:
    return DeltaLMConfig.preset(
        "tiny", vocab_size=vocab_size, d_model=32, heads=2, ffn=64, encoder_layers=2, decoder_blocks=1
    )


def test_grow_vocabulary_keeps_rows_and_adds_mean_rows():
    torch.manual_seed(0)
    model = DeltaLM(_tiny(101))
    grown = grow_vocabulary(model, 104)
    old, new = model.output_weight.detach(), grown.output_weight.detach()
    assert grown.config.vocab_size == 104 and new.shape[0] == grown.config.padded_vocab_size == 104
    assert torch.equal(new[:101], old[:101])
    keep = torch.ones(101, dtype=torch.bool)
    keep[1] = False  # <pad>
    expected = old[:101][keep].double().mean(0).float()
    assert all(torch.equal(new[i], expected) for i in (101, 102, 103))
    others = {k: v for k, v in model.state_dict().items() if "embed_tokens" not in k}
    assert all(torch.equal(v, grown.state_dict()[k]) for k, v in others.items())
    x = torch.tensor([[5, 6, 2]])
    y = torch.tensor([[2, 7]])
    model.eval(), grown.eval()
    torch.testing.assert_close(grown(x, y)[..., :101], model(x, y)[..., :101])  # old logits unchanged
    assert grow_vocabulary(model, 101) is model
    with pytest.raises(ValueError, match="shrink"):
        grow_vocabulary(model, 99)


def test_initial_model_from_official_and_pretrained(tmp_path, vocab):
    tagged = vocab.with_lang_tags(["de", "fr"])
    torch.manual_seed(1)
    source = DeltaLM(_tiny(vocab.pretrain_size))
    save_official(source, tmp_path / "deltalm-tiny.pt")
    model = initial_model(InitConfig("official", str(tmp_path / "deltalm-tiny.pt")), _tiny(8), tagged)
    assert model.config.vocab_size == tagged.size and model.config.heads == 2
    rows = vocab.pretrain_size
    assert torch.equal(model.output_weight.detach()[:rows], source.output_weight.detach()[:rows])
    save_pretrained(source, tmp_path / "pre")
    model2 = initial_model(
        InitConfig("pretrained", str(tmp_path / "pre")), _tiny(8).replace(dropout=0.3), tagged
    )
    assert model2.config.dropout == 0.3 and model2.config.vocab_size == tagged.size
    wrong = DeltaLM(_tiny(vocab.pretrain_size + 40))
    save_pretrained(wrong, tmp_path / "wrong")
    with pytest.raises(CheckpointError, match="use the SentencePiece model"):
        initial_model(InitConfig("pretrained", str(tmp_path / "wrong")), _tiny(8), tagged)
    fresh = initial_model(InitConfig("none", ""), _tiny(8), tagged)
    assert fresh.config.vocab_size == tagged.size


def _task(spm_model, langs):
    from finetune.config import DataFileConfig, TaskConfig

    files = [DataFileConfig(path=f"train.en-{x}.jsonl", src_lang="en", tgt_lang=x) for x in langs]
    return TaskConfig(spm_model=str(spm_model), train=files)


@pytest.mark.parametrize(
    ("task_langs", "expected_tags"),
    [(("zh", "de"), ("de", "zh")), (("de", "fr"), ("de", "zh", "fr")), (("fr",), ("de", "zh", "fr"))],
)
def test_tag_rows_follow_tag_names_from_a_tagged_export(tmp_path, spm_model, task_langs, expected_tags):
    """Saved (de, zh) → task (zh, de): ``__zh__`` keeps the trained zh row; (de, fr): fr is new (mean row)."""
    from finetune.data import task_vocabulary
    from finetune.model_init import init_lang_tags

    base = Vocabulary.from_spm(spm_model)
    saved_vocab = base.with_lang_tags(["de", "zh"])
    torch.manual_seed(3)
    source = DeltaLM(_tiny(saved_vocab.size))
    save_pretrained(source, tmp_path / "tagged", saved_vocab)
    init = InitConfig("pretrained", str(tmp_path / "tagged"))
    assert init_lang_tags(init) == ("de", "zh")
    vocab = task_vocabulary(_task(spm_model, task_langs), saved_tags=init_lang_tags(init))
    assert vocab.lang_tags == expected_tags
    model = initial_model(init, _tiny(8), vocab)
    old, new = source.output_weight.detach(), model.output_weight.detach()
    first = base.first_lang_tag
    assert torch.equal(new[:first], old[:first])
    for tag in ("de", "zh"):  # trained rows found by name
        assert torch.equal(new[vocab.lang_tag_id(tag)], old[saved_vocab.lang_tag_id(tag)]), tag
    keep = torch.ones(saved_vocab.size, dtype=torch.bool)
    keep[1] = False
    mean_row = old[: saved_vocab.size][keep].double().mean(0).float()
    for tag in set(expected_tags) - {"de", "zh"}:  # a new tag starts from the mean row, never a stale tag row
        assert torch.equal(new[vocab.lang_tag_id(tag)], mean_row)
    assert model.config.vocab_size == vocab.size


def test_explicit_lang_tags_map_rows_by_name(tmp_path, spm_model):
    from deltalm.config_tree import ConfigError
    from finetune.data import task_vocabulary
    from finetune.model_init import init_lang_tags

    saved_vocab = Vocabulary.from_spm(spm_model).with_lang_tags(["de", "zh"])
    torch.manual_seed(4)
    source = DeltaLM(_tiny(saved_vocab.size))
    save_pretrained(source, tmp_path / "tagged", saved_vocab)
    init = InitConfig("pretrained", str(tmp_path / "tagged"))
    task = _task(spm_model, ("zh", "de"))
    task.lang_tags = ["zh", "de"]  # an explicit order (e.g. a resumed run's config.yaml) wins
    vocab = task_vocabulary(task, saved_tags=init_lang_tags(init))
    assert vocab.lang_tags == ("zh", "de")
    model = initial_model(init, _tiny(8), vocab)
    for tag in ("de", "zh"):
        assert torch.equal(
            model.output_weight.detach()[vocab.lang_tag_id(tag)],
            source.output_weight.detach()[saved_vocab.lang_tag_id(tag)],
        )
    task.lang_tags = ["de"]
    with pytest.raises(ConfigError, match="no tag for target language 'zh'"):
        task.validate()
