"""The criterion equals fairseq's label_smoothed_nll_loss computed naively on full logits; batch-source resume."""

from __future__ import annotations

import numpy as np
import torch

from deltalm.model.config import DeltaLMConfig
from deltalm.model.model import DeltaLM
from deltalm.vocabulary import EOS_ID
from finetune.batching import collate
from finetune.config import DataFileConfig, MonoFileConfig, TaskConfig
from finetune.criterion import make_criterion
from finetune.data import FinetuneBatches
from finetune.tasks import Example


def fairseq_label_smoothed_nll_loss(lprobs, target, epsilon, ignore_index):
    """fairseq/criterions/label_smoothed_cross_entropy.py, written out (reduce=True)."""
    if target.dim() == lprobs.dim() - 1:
        target = target.unsqueeze(-1)
    nll_loss = -lprobs.gather(dim=-1, index=target)
    smooth_loss = -lprobs.sum(dim=-1, keepdim=True)
    pad_mask = target.eq(ignore_index)
    nll_loss.masked_fill_(pad_mask, 0.0)
    smooth_loss.masked_fill_(pad_mask, 0.0)
    nll_loss, smooth_loss = nll_loss.sum(), smooth_loss.sum()
    eps_i = epsilon / (lprobs.size(-1) - 1)
    loss = (1.0 - epsilon - eps_i) * nll_loss + eps_i * smooth_loss
    return loss, nll_loss


def _examples(n, vocab, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        src = np.append(rng.integers(4, vocab, size=rng.integers(2, 9)), EOS_ID).astype(np.int32)
        tgt = np.append(rng.integers(4, vocab, size=rng.integers(1, 7)), EOS_ID).astype(np.int32)
        out.append(Example(src, tgt, "", "en", "de", f"x:{i}"))
    return out


def test_label_smoothing_equals_fairseq_definition():
    torch.manual_seed(0)
    config = DeltaLMConfig.preset(
        "tiny", vocab_size=203, d_model=32, heads=2, ffn=64, encoder_layers=1, decoder_blocks=1, dropout=0.0
    )
    model = DeltaLM(config).double().eval()
    batch = collate(_examples(5, 203))
    for eps in (0.0, 0.1):
        out = make_criterion(eps)(model, batch)
        logits = model(batch["encoder_input_tokens"], batch["decoder_input_tokens"])[..., : config.vocab_size]
        lprobs = torch.log_softmax(logits.double(), dim=-1)
        loss, nll = fairseq_label_smoothed_nll_loss(
            lprobs, batch["decoder_target_tokens"], eps, ignore_index=1
        )
        torch.testing.assert_close(out.loss_sum.double(), loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.nll_sum.double(), nll, rtol=1e-5, atol=1e-6)
        assert int(out.num_tokens) == int(batch["decoder_loss_weights"].sum())


def test_finetune_batches_resume_exactly(tmp_path, vocab):
    mono = tmp_path / "de.txt"
    mono.write_text(("Datei öffnen und speichern. " * 30 + "\n\n") * 5, encoding="utf-8")
    v = vocab.with_lang_tags(["de", "fr"])
    task = TaskConfig(
        train=[
            DataFileConfig(path="a", src_lang="en", tgt_lang="de"),
            DataFileConfig(path="b", src_lang="en", tgt_lang="fr"),
        ],
        zero_shot_ratio=0.5,
        zero_shot_mono=[MonoFileConfig(path=str(mono), lang="de")],
        zero_shot_input_length=32,
    )
    train = {"en-de": _examples(30, 300, 1), "en-fr": _examples(12, 300, 2)}

    def make():
        return FinetuneBatches(task, train, v, 3, seed=5, dp_rank=0, dp_world_size=1, rise_micro_batches=20)

    first = make()
    for _ in range(9):
        first.next_batch()
    state = first.state_dict()
    expected = [first.next_batch() for _ in range(8)]
    second = make()
    second.load_state_dict(state)
    for want in expected:
        got = second.next_batch()
        assert all(torch.equal(got[k], want[k]) for k in want)
    kinds = []
    third = make()
    for _ in range(10):
        third.next_batch()
        kinds.append(third.last_kind)
    assert kinds.count("pretrain") == 5 and set(kinds) - {"pretrain"} <= {"en-de", "en-fr"}
