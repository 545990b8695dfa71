"""Validation and evaluation translate through the same loop as the command line (one implementation)."""

from __future__ import annotations

import numpy as np
import torch

from deltalm.generation.translation import GenerationOptions, source_ids, translate_lines
from deltalm.model.config import DeltaLMConfig
from deltalm.model.model import DeltaLM
from finetune.config import TaskConfig
from finetune.decoding import generate
from finetune.tasks import Example

LINES = ["Open the file", "Save changes before closing?", "a", "Print the document twice", "Quit"]


def test_validation_and_the_command_line_give_the_same_hypotheses(vocab):
    tagged = vocab.with_lang_tags(["de"])
    torch.manual_seed(0)
    config = DeltaLMConfig.preset(
        "tiny", vocab_size=tagged.size, d_model=32, heads=2, ffn=64, encoder_layers=1, decoder_blocks=1
    )
    model = DeltaLM(config).eval()
    task = TaskConfig(beam_size=3, max_len_a=0.5, max_len_b=4, eval_batch_size=2)
    sources = source_ids(LINES, tagged, "de", config.max_source_length)
    empty = np.zeros(0, dtype=np.int32)
    examples = [Example(s, empty, "", "en", "de", f"x:{i}") for i, s in enumerate(sources)]
    validation = generate(model, examples, tagged, task)
    cli = translate_lines(model, tagged, LINES, task.generation_options(), tgt_lang="de", batch_size=3)
    assert [validation[i] for i in range(len(LINES))] == cli
    assert task.generation_options() == GenerationOptions(beam_size=3, max_len_a=0.5, max_len_b=4)


def test_task_generation_defaults_are_the_generation_options():
    translation = TaskConfig().generation_options()
    assert translation == GenerationOptions()  # translation: the one set of defaults
    summary = TaskConfig(name="summarization").generation_options()
    assert (summary.max_len_a, summary.max_len_b) == (0.0, 80)
