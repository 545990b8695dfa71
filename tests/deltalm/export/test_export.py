"""Export from real engine checkpoints (1 and 2 ranks, ZeRO 1/2/3, fp32 and bf16 training).

The ground truth is DeepSpeed's own fp32 master weights read from the live engine after training
(``reference_fp32.safetensors``, benchmarks/checkpoint_runs.py). Two launches (one per world size) produce all six
runs; every test reuses them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from deltalm.checkpoints.engine_checkpoint import open_checkpoint
from deltalm.export.exporter import export_run
from deltalm.export.verify import probe_batch
from deltalm.file_io import CheckpointError
from tests.deltalm.export import fixtures

pytestmark = pytest.mark.slow
REPO = fixtures.REPO


def reference(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "reference_fp32.safetensors"))


def digests(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def cli(*args: str) -> subprocess.CompletedProcess:
    """The real command line, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "deltalm.export", *args], cwd=REPO, env=env, capture_output=True, text=True
    )


def main_in_process(capsys, *args: str) -> tuple[int, str]:
    """``deltalm.export.command_line.main`` in this process (the CLI's code path without a new interpreter): (rc, stderr)."""
    from deltalm.export.command_line import main

    rc = main(list(args))
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    "name", ["w1_z1_fp32", "w1_z2_bf16", "w1_z3_fp32", "w2_z1_bf16", "w2_z2_fp32", "w2_z3_bf16"]
)
def test_safetensors_export_is_bit_equal_to_engine_fp32(runs, spm, tmp_path, name):
    run = runs[name]
    ckpt = open_checkpoint(run)
    assert ckpt.world_size == int(name[1]) and ckpt.zero_stage == int(name[4])
    result = export_run(run, tmp_path / "out", spm=str(spm), verify=True)
    ref = reference(run)
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(exported) == set(ref) and len(ref) > 20
    for key, tensor in ref.items():
        assert exported[key].dtype == torch.float32
        assert torch.equal(exported[key], tensor), key
    assert result.verify["ok"] and result.verify["max_abs_diff"] == 0.0, result.verify
    # logits of the reloaded export equal those of a model holding the engine's fp32 weights
    import deltalm

    ours = deltalm.from_pretrained(tmp_path / "out").eval()
    model = deltalm.DeltaLM(ours.config).eval()
    model.load_state_dict(ref)
    src, tgt = probe_batch(ours.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(ours(src, tgt), model(src, tgt))
    assert (tmp_path / "out" / "sentencepiece.model").read_bytes() == spm.read_bytes()
    vocab_lines = (tmp_path / "out" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab_lines) == ours.config.vocab_size
    assert vocab_lines[:4] == ["0\t<s>", "1\t<pad>", "2\t</s>", "3\t<unk>"]
    assert vocab_lines[-1] == f"{ours.config.vocab_size - 1}\t<extra_id_99>"


def test_bf16_export_and_repeatability(runs, spm, tmp_path):
    run = runs["w2_z3_bf16"]
    first = export_run(run, tmp_path / "a", spm=str(spm), dtype="bf16", verify=True)
    export_run(run, tmp_path / "b", spm=str(spm), dtype="bf16")
    assert first.verify["ok"], first.verify
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    exported = load_file(str(tmp_path / "a" / "model.safetensors"))
    for key, tensor in reference(run).items():
        assert exported[key].dtype == torch.bfloat16
        assert torch.equal(exported[key], tensor.to(torch.bfloat16)), key
    # the same checkpoint exported again in place gives the same bytes (and no temp leftovers)
    export_run(run, tmp_path / "a", spm=str(spm), dtype="bf16")
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_official_export_round_trips(runs, tmp_path):
    import deltalm

    run = runs["w2_z2_fp32"]
    result = export_run(run, tmp_path / "deltalm-tiny.pt", format="official", verify=True)
    assert result.verify["ok"], result.verify
    blob = torch.load(tmp_path / "deltalm-tiny.pt", weights_only=True)
    assert set(blob) == {"weights"}
    assert torch.equal(
        blob["weights"]["src_embedding.embed_tokens.weight"],
        blob["weights"]["tgt_embedding.embed_tokens.weight"],
    )
    c = open_checkpoint(run).model_config
    model = deltalm.load_official(
        tmp_path / "deltalm-tiny.pt", heads=c.heads, pad_vocab_to_multiple=c.pad_vocab_to_multiple
    )
    assert model.config.replace(dropout=c.dropout) == c  # the layout stores no dropout
    ref = reference(run)
    state = model.state_dict()
    rows = c.vocab_size
    ref["embedding.embed_tokens.weight"] = ref["embedding.embed_tokens.weight"][:rows]
    state["embedding.embed_tokens.weight"] = state["embedding.embed_tokens.weight"][:rows]
    assert all(torch.equal(state[k], v) for k, v in ref.items())
    deltalm.save_official(model, tmp_path / "again.pt")
    again = torch.load(tmp_path / "again.pt", weights_only=True)["weights"]
    assert set(again) == set(blob["weights"])
    assert all(torch.equal(again[k], v) for k, v in blob["weights"].items())
    export_run(run, tmp_path / "second.pt", format="official")
    assert (
        digests(tmp_path / "deltalm-tiny.pt")["deltalm-tiny.pt"]
        == digests(tmp_path / "second.pt")["second.pt"]
    )


def test_xlmr_encoder_export_loads_in_transformers(runs, spm, tmp_path):
    from transformers import XLMRobertaModel

    import deltalm

    run = runs["w1_z3_fp32"]
    result = export_run(run, tmp_path / "enc", format="xlmr-encoder", spm=str(spm), verify=True)
    assert result.verify["ok"], result.verify
    hf = XLMRobertaModel.from_pretrained(str(tmp_path / "enc")).eval()
    model = deltalm.DeltaLM(open_checkpoint(run).model_config).eval()
    model.load_state_dict(reference(run))
    src, _ = probe_batch(model.config.vocab_size, seed=5)
    mask = src.ne(1)
    with torch.no_grad():
        theirs = hf(input_ids=src, attention_mask=mask.long()).last_hidden_state
        ours = model.encode(src)
    torch.testing.assert_close(theirs[mask], ours[mask], atol=1e-5, rtol=1e-5)
    assert (tmp_path / "enc" / "sentencepiece.bpe.model").is_file()
    # its tokenizer gives the project's ids, byte fallback included (CJK and other text outside the vocabulary)
    from transformers import AutoTokenizer

    from deltalm.vocabulary import Vocabulary

    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "enc"))
    vocab = Vocabulary.from_spm(spm)
    texts = ["日本語のテキスト", "中文段落，还有标点。", "Ελληνικά и русский", "Grüße ☃ ok 😀 ﬁ ① Ａｂｃ",
             "  Hello   world,\tagain  ", "a\u2028b\u3000c", "Datei öffnen", ""]  # fmt: skip
    for text in texts:
        ids = [0, *vocab.encode(text).tolist(), 2]
        assert tokenizer(text)["input_ids"] == ids, text
        assert tokenizer.decode(ids, skip_special_tokens=True) == vocab.decode(ids), text
    assert any(int(i) < 4 + 256 for i in vocab.encode("日本語のテキスト")), "the probe must use byte pieces"
    # and it starts a new DeltaLM (the import direction): from_xlmr on the exported encoder
    again = deltalm.from_xlmr(tmp_path / "enc", decoder_blocks=1, vocab_size=model.config.padded_vocab_size)
    enc = again.model.state_dict()
    assert torch.equal(
        enc["encoder.layers.1.ffn.fc2.weight"], reference(run)["encoder.layers.1.ffn.fc2.weight"]
    )


def test_torn_and_uncommitted_checkpoints_are_refused(runs, tmp_path, capsys):
    source = runs["w2_z1_bf16"]
    tag = open_checkpoint(source).tag

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(source / "checkpoints", dst / "checkpoints")
        return dst

    uncommitted = copy("uncommitted")
    (uncommitted / "checkpoints" / tag / "COMMITTED").unlink()
    rc, err = main_in_process(capsys, "--run-dir", str(uncommitted), "--out", str(tmp_path / "x1"))
    assert rc == 2
    assert err.strip().splitlines()[-1].startswith("error: ") and "no committed checkpoint" in err
    rc, err = main_in_process(
        capsys, "--run-dir", str(uncommitted), "--tag", tag, "--out", str(tmp_path / "x1")
    )
    assert rc == 2 and "never committed" in err and "Traceback" not in err

    truncated = copy("truncated")
    optim = sorted((truncated / "checkpoints" / tag).glob("*optim_states.pt"))[1]
    optim.write_bytes(optim.read_bytes()[:-100])
    rc, err = main_in_process(capsys, "--run-dir", str(truncated), "--out", str(tmp_path / "x2"))
    assert rc == 2 and "truncated" in err and "Traceback" not in err

    altered = copy("altered")
    model_file = altered / "checkpoints" / tag / "mp_rank_00_model_states.pt"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        export_run(altered, tmp_path / "x3")

    rc, err = main_in_process(
        capsys, "--run-dir", str(source), "--tag", "step_000000099", "--out", str(tmp_path / "x4")
    )
    assert rc == 2 and "no such checkpoint" in err
    rc, err = main_in_process(capsys, "--run-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "x5"))
    assert rc == 2 and "not found" in err
    assert not any((tmp_path / f"x{i}").exists() for i in range(1, 6))


def test_wrong_sentencepiece_model_is_refused(runs, spm, tmp_path):
    other = tmp_path / "other"
    subprocess.run(
        [sys.executable, "-m", "data_prep", "train-spm", "--vocab-size", "400", "--character-coverage", "0.995",
         "--num-threads", "1", "--output", str(other), str(fixtures.SAMPLE / "en.txt.gz")],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="504-id vocabulary but the checkpoint's model has 500"):
        export_run(runs["w1_z1_fp32"], tmp_path / "out", spm=str(other) + ".model")
    assert not (tmp_path / "out").exists()


def test_export_cli_prints_summary(runs, spm, tmp_path):
    proc = cli(
        "--run-dir", str(runs["w1_z2_bf16"]), "--out", str(tmp_path / "out"), "--spm", str(spm), "--verify"
    )
    assert proc.returncode == 0, proc.stderr
    assert '"ok": true' in proc.stdout and "[export] verify:" in proc.stderr
