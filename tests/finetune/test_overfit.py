"""Training and generation agree on the sequence convention: a tiny model memorizes 4 real pairs through
collate + model.loss, and beam search + detokenization reproduces the references exactly."""

from __future__ import annotations

import torch

from deltalm.generation.search import beam_search
from deltalm.model.config import DeltaLMConfig
from deltalm.model.model import DeltaLM
from finetune.batching import collate
from finetune.readers import Record, SkipReport
from finetune.tasks import TaskSpec, build_examples
from tests.finetune.conftest import read_pairs


def test_memorize_and_regenerate(vocab):
    torch.manual_seed(0)
    v = vocab.with_lang_tags(["de"])
    rows = [r for r in read_pairs("train.en-de.jsonl.gz", 60) if len(r["de"]) < 40][:4]
    examples = build_examples(
        TaskSpec("translation", "en", "de"), [Record(r, "") for r in rows], v, SkipReport()
    )
    config = DeltaLMConfig.preset(
        "tiny",
        vocab_size=v.size,
        d_model=32,
        heads=2,
        ffn=64,
        encoder_layers=1,
        decoder_blocks=1,
        dropout=0.0,
    )
    model = DeltaLM(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    batch = collate(examples)
    for _ in range(50):
        out = model.loss(batch, label_smoothing=0.0)
        optimizer.zero_grad()
        (out.loss_sum / out.num_tokens).backward()
        optimizer.step()
    hyps = beam_search(model, batch["encoder_input_tokens"], beam_size=3, max_len_a=0.0, max_len_b=40)
    texts = [v.decode(h[0].tokens) for h in hyps]
    references = [e.reference for e in examples]
    assert texts == references
