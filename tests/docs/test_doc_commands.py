"""Every command the documentation shows runs (as written, or as a cheap variant of itself).

:func:`tests.docs.doc_commands.documented_commands` extracts the commands (README.md, docs/*.md fenced ``bash``
blocks, the example at the head of finetune/configs/*.yaml). ``TABLE`` says, per distinct command text, how it is
checked; a documented command without an entry, or an entry no page shows any more, fails the quick tests below,
so docs and code cannot drift apart silently.

The slow test runs the entries in table order with ``bash -c`` in a sandbox directory laid out like a checkout
after ``bash launch.sh`` (the repository's top-level folders linked in, ``runs/demo`` made by the documented
``--budget smoke`` demo command, the placeholder files the docs name — ``my_run.yaml``, ``my_mt.yaml``,
``en.txt``, ``hosts`` ... — made from that run). A variant only cuts work: fewer steps (``replace``/``append``),
never a different program or option. Cluster launchers (``deepspeed`` with a hostfile, ``mpirun -np 16``,
``srun -N4``) are replaced on ``PATH`` and in the sandbox's ``.venv/bin`` by one-rank stand-ins: ``launch.sh``'s
own argument handling and the entry point run for real, with one process instead of N.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import SMOKE_DEMO_ARGS
from tests.docs.doc_commands import REPO, documented_commands

DEMO = "python -m demo --budget smoke --run-dir /tmp/d"


@dataclass(frozen=True)
class Entry:
    command: str  # exactly as the docs show it (continuations joined, comment dropped)
    replace: tuple[tuple[str, str], ...] = ()  # cheap variant: substitutions ...
    append: str = ""  # ... and/or extra arguments (--set overrides that cut steps)
    skip: str = ""  # not run: why
    expect_output: str = ""  # text the command's stdout+stderr must contain
    check: Callable[[], None] | None = None  # a check of the documented text itself (no run)
    shared: str = ""  # run once for the whole session by a fixture: which, and how it matches


def _vocab_of_default_demo() -> None:
    """docs/engine.md's model.vocab_size is the default demo budget's pre-training vocabulary."""
    from deltalm.vocabulary import Vocabulary
    from demo.pipeline import BUDGETS

    assert Vocabulary(spm_size=BUDGETS["small"].spm_vocab).pretrain_size == DOCUMENTED_DEMO_VOCAB


DOCUMENTED_DEMO_VOCAB = 2104
STEPS_2 = "--set run.max_steps=2"
FT_CUT = "--set run.max_steps=2 --set task.validate_every=0 --set task.valid_max_examples=4"
TINY_PAPER = (
    "--set model.d_model=64 --set model.heads=4 --set model.ffn=128 --set model.encoder_layers=2 "
    "--set model.decoder_blocks=1 --set model.max_positions=130 --set model.vocab_size=704 "
    "--set init.kind=xlmr --set batch.global_batch_size=8 --set batch.micro_batch_size=4 "
    "--set schedule.warmup_steps=1 --set data.input_length=64 --set data.translation_input_length=64 "
    "--set run.max_steps=2 --set run.run_dir=runs/paper"
)

TABLE: tuple[Entry, ...] = (
    # the sandbox's runs/demo (every later entry uses it)
    Entry(DEMO, shared="the session's smoke demo (tests/conftest.py smoke_demo) runs exactly this command; "
          "the sandbox's runs/demo is a copy of its run"),
    Entry("python -m demo --run-dir runs/demo --budget small", replace=(("small", "smoke"),),
          expect_output="done before"),
    Entry("python -m demo --budget full --run-dir runs/demo-full", replace=(("--budget full", "--budget smoke"),),
          expect_output="done before"),
    Entry("python -m demo --redo finetune", append="--budget smoke", expect_output="6/8 finetune: finished"),
    Entry("bash launch.sh", skip="the whole demo at its default budget (minutes); its code runs above as "
          "`python -m demo --budget smoke` and in tests/demo/test_demo.py"),
    Entry("bash tests/run.sh", skip="the test suite itself (it runs this test)"),
    # data_prep
    Entry("python -m data_prep train-spm --vocab-size 8000 --output runs/data/spm data_prep/sample_corpus/mono/*.txt.gz "
          "data_prep/sample_corpus/parallel/train.*.jsonl.gz"),
    Entry("python -m data_prep train-spm --vocab-size 8000 --output runs/data/spm data_prep/sample_corpus/mono/*.txt.gz"),
    Entry("python -m data_prep mono --spm runs/data/spm.model --lang de --output runs/data/ds data_prep/sample_corpus/mono/de.txt.gz"),
    Entry("python -m data_prep mono --spm runs/data/spm.model --lang en --output runs/data/ds data_prep/sample_corpus/mono/en.txt.gz"),
    Entry("python -m data_prep parallel --spm runs/data/spm.model --src-lang en --tgt-lang de --output runs/data/ds "
          "data_prep/sample_corpus/parallel/train.en-de.jsonl.gz"),
    Entry("python -m data_prep parallel --spm runs/data/spm.model --src-lang en --tgt-lang fr --output runs/data/ds "
          "--src-file corpus.en --tgt-file corpus.fr"),
    Entry("python -m data_prep verify runs/data/ds", expect_output="OK"),
    Entry("python -m data_prep stats runs/data/ds --temperature 5"),
    # pre-training
    Entry("bash launch.sh pretrain preset:tiny --set data.data_dirs=[runs/demo/data/ds] --set model.vocab_size=2104",
          replace=(("=2104", "=704"),), append="--set run.max_steps=2 --set run.run_dir=runs/tiny",
          check=_vocab_of_default_demo),
    Entry("bash launch.sh pretrain my_run.yaml --num_gpus 8 --num_nodes 4 --hostfile hosts",
          expect_output="[stand-in deepspeed]"),
    Entry("bash launch.sh pretrain my_run.yaml --mpirun --np 16 --hostfile mpi_hosts", expect_output="[stand-in mpirun]"),
    Entry("srun -N4 --ntasks-per-node=8 bash launch.sh pretrain my_run.yaml", expect_output="[stand-in srun]"),
    Entry("deepspeed pretrain/train.py --config my_run.yaml --set run.max_steps=1000",
          replace=(("max_steps=1000", "max_steps=3"),), expect_output="[stand-in deepspeed]"),
    Entry("deepspeed --num_gpus 8 pretrain/train.py --config my_run.yaml --set run.max_steps=1000",
          replace=(("max_steps=1000", "max_steps=4"),), expect_output="[stand-in deepspeed]"),
    Entry("mpirun -np 2 --oversubscribe python pretrain/train.py --config my_run.yaml", expect_output="[stand-in mpirun]"),
    Entry("python pretrain/train.py --preset paper --set init.path=PATH/infoxlm-base --set data.data_dirs=[DIR]",
          append=TINY_PAPER),
    Entry("python pretrain/train.py --preset tiny --set data.data_dirs=[DIR] ...",
          replace=(("...", "--set model.vocab_size=704 --set run.max_steps=2 --set run.run_dir=runs/tiny2"),)),
    # export, generate
    Entry("python -m deltalm.export --run-dir runs/pretrain --out runs/pretrain/export --spm spm.model --verify"),
    Entry("python -m deltalm.export --run-dir runs/pretrain --out runs/pretrain/export --spm runs/demo/spm/spm.model --verify"),
    Entry("python -m deltalm.export --run-dir runs/pretrain --tag step_000002000 --dtype bf16 --out export-bf16 --spm spm.model",
          replace=(("step_000002000", "step_000000004"),)),
    Entry("python -m deltalm.export --run-dir runs/pretrain --format official --out deltalm-mine.pt --verify"),
    Entry("python -m deltalm.export --run-dir runs/pretrain --format xlmr-encoder --out encoder-hf --spm spm.model"),
    Entry("python -m deltalm.export --run-dir runs/pretrain --format xlmr-encoder --out encoder-hf --spm spm.model --verify"),
    Entry("python -m deltalm.export --run-dir runs/finetune --out ft-export"),
    Entry("python pretrain/train.py --preset tiny --set init.kind=pretrained --set init.path=runs/pretrain/export ...",
          replace=(("...", "--set data.data_dirs=[runs/demo/data/ds] --set model.vocab_size=704 --set model.d_model=64 "
                    "--set model.heads=4 --set model.ffn=128 --set model.encoder_layers=2 --set model.decoder_blocks=1 "
                    "--set run.max_steps=2 --set run.run_dir=runs/from_export"),)),
    Entry("python -m deltalm.generation --model runs/demo/finetune/run/averaged --src-lang en --tgt-lang de < en.txt > de.txt"),
    Entry("python -m deltalm.generation --model ft-export --tgt-lang fr --input en.txt --output fr.txt --beam-size 5 --batch-size 64",
          replace=(("--tgt-lang fr", "--tgt-lang de"),)),  # the sandbox's demo fine-tunes En→De only
    # fine-tuning
    Entry("deepspeed --num_gpus 2 finetune/train.py --task translation --config my_mt.yaml", append=FT_CUT,
          expect_output="[stand-in deepspeed]"),
    Entry("python finetune/train.py --config finetune/configs/translation_sample.yaml --set task.spm_model=runs/demo/spm/spm.model "
          "--set init.kind=pretrained --set init.path=runs/demo/export/model", append=FT_CUT),
    Entry("DS_ACCELERATOR=cpu .venv/bin/python finetune/train.py --config finetune/configs/translation_sample.yaml "
          "--set task.spm_model=runs/demo/spm/spm.model --set init.kind=pretrained --set init.path=runs/demo/export/model",
          append=FT_CUT + " --set run.run_dir=runs/finetune_sample2"),
    Entry("python finetune/train.py --config ft.yaml --set init.kind=official --set init.path=deltalm-base.pt", append=FT_CUT),
    Entry("python -m finetune.evaluate --model runs/ft/averaged --config my_mt.yaml --output-dir runs/ft/eval",
          expect_output="| en-de |"),
    Entry("python -m finetune.evaluate --model runs/ft/best --task summarization --data test.jsonl --output-dir eval/ "
          "--set task.beam_size=4 --set task.no_repeat_ngram_size=3", expect_output="rouge",
          append="--set task.max_source_length=128 --set task.max_target_length=64"),  # the demo model: 128 positions
    Entry("python -m finetune.averaging --run-dir runs/ft --last 5 --output runs/ft/avg5.safetensors"),
    Entry("python -m finetune.averaging --output avg.safetensors a.safetensors b.safetensors"),
)  # fmt: skip


def _entries() -> dict[str, Entry]:
    return {entry.command: entry for entry in TABLE}


# ---------------------------------------------------------------------------------------------- quick checks
def test_every_documented_command_has_an_entry_and_every_entry_is_documented():
    documented = {c.text: c.source for c in documented_commands()}
    entries = _entries()
    assert len(entries) == len(TABLE), "duplicate entries"
    missing = {text: source for text, source in documented.items() if text not in entries}
    assert not missing, f"documented commands with no entry in TABLE (add one): {missing}"
    stale = [text for text in entries if text not in documented]
    assert not stale, f"TABLE entries no page shows any more (update or drop): {stale}"


def test_skips_say_why_and_documented_values_hold():
    for entry in TABLE:
        assert entry.skip == "" or len(entry.skip) > 20
        if entry.check is not None:
            entry.check()


# ---------------------------------------------------------------------------------------------- the sandbox
STAND_IN = """#!/usr/bin/env bash
# {name} stand-in for the doc-command test: one rank instead of many (launch.sh's and the docs' arguments as given)
echo "[stand-in {name}] $*" >&2
{body}
"""
DEEPSPEED_BODY = """while [ $# -gt 0 ] && [[ "$1" != *.py ]]; do case "$1" in --*=*) shift ;; --*) shift 2 ;; *) shift ;; esac; done
exec "$(dirname "$0")/python" "$@"
"""
MPIRUN_BODY = """while [ $# -gt 0 ] && [[ "$1" != *python* ]]; do case "$1" in --oversubscribe|--allow-run-as-root) shift ;; -*) shift 2 ;; *) shift ;; esac; done
shift
exec "$(dirname "$0")/python" "$@"
"""
SRUN_BODY = """while [ $# -gt 0 ] && [[ "$1" == -* ]]; do shift; done
export SLURM_PROCID=0 SLURM_NTASKS=1 SLURM_LOCALID=0
exec "$@"
"""


def _venv(sandbox: Path) -> None:
    """A ``.venv`` whose python is the real one and whose launchers are the one-rank stand-ins."""
    real = REPO / ".venv"
    venv = sandbox / ".venv"
    (venv / "bin").mkdir(parents=True)
    shutil.copy(real / "pyvenv.cfg", venv / "pyvenv.cfg")
    for name in ("lib", "lib64", "include", "share", "etc"):
        if (real / name).exists():
            (venv / name).symlink_to(real / name)
    for path in (real / "bin").iterdir():
        if path.name not in ("deepspeed", "mpirun", "srun"):
            (venv / "bin" / path.name).symlink_to(path)
    for name, body in (("deepspeed", DEEPSPEED_BODY), ("mpirun", MPIRUN_BODY), ("srun", SRUN_BODY)):
        script = venv / "bin" / name
        script.write_text(STAND_IN.format(name=name, body=body))
        script.chmod(0o755)
    (venv / ".installed").touch()


def _placeholders(sandbox: Path) -> None:
    """The files the docs name, made from the sandbox's smoke demo run."""
    demo = sandbox / "runs" / "demo"
    runs = sandbox / "runs"
    shutil.copytree(demo, runs / "demo-full", symlinks=True)
    shutil.copytree(demo / "pretrain", runs / "pretrain")
    shutil.copytree(demo / "finetune" / "run", runs / "ft")
    (runs / "finetune").symlink_to(demo / "finetune" / "run")
    (sandbox / "spm.model").symlink_to(demo / "spm" / "spm.model")
    (sandbox / "PATH").mkdir()
    (sandbox / "PATH" / "infoxlm-base").symlink_to(demo / "encoder" / "xlmr")
    (sandbox / "DIR").symlink_to(demo / "data" / "ds")
    (sandbox / "deltalm-base.pt").symlink_to(sandbox / "deltalm-mine.pt")  # written by the documented export
    weights = sorted((runs / "ft" / "weights").glob("*.safetensors"))
    shutil.copy(weights[0], sandbox / "a.safetensors")
    shutil.copy(weights[-1], sandbox / "b.safetensors")
    run_config = yaml.safe_load((demo / "pretrain" / "config.yaml").read_text())
    run_config["run"].update(run_dir="runs/my_run", max_steps=2)
    run_config["init"] = {"kind": "random", "path": ""}
    (sandbox / "my_run.yaml").write_text(yaml.safe_dump(run_config))
    mt = yaml.safe_load((demo / "finetune" / "finetune.yaml").read_text())
    mt["run"].update(run_dir="runs/my_mt", max_steps=2)
    (sandbox / "my_mt.yaml").write_text(yaml.safe_dump(mt))
    mt["run"]["run_dir"] = "runs/ft_official"
    mt["model"] = {"heads": 4}  # a released .pt does not record the head count
    (sandbox / "ft.yaml").write_text(yaml.safe_dump(mt))
    (sandbox / "hosts").write_text("localhost slots=8\n")
    (sandbox / "mpi_hosts").write_text("localhost slots=16\n")


def _texts(sandbox: Path) -> None:
    import gzip

    with gzip.open(
        REPO / "data_prep" / "sample_corpus" / "parallel" / "train.en-fr.jsonl.gz", "rt"
    ) as handle:
        rows = [json.loads(line) for _, line in zip(range(40), handle, strict=False)]
    (sandbox / "corpus.en").write_text("".join(r["en"] + "\n" for r in rows))
    (sandbox / "corpus.fr").write_text("".join(r["fr"] + "\n" for r in rows))
    (sandbox / "en.txt").write_text("".join(r["en"] + "\n" for r in rows[:3]))
    lines = [{"document": r["en"] + " " + r["en"], "summary": r["en"]} for r in rows[:4]]
    (sandbox / "test.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, smoke_demo) -> Path:
    root = tmp_path_factory.mktemp("docs") / "checkout"
    root.mkdir()
    for name in (
        "benchmarks",
        "data_prep",
        "deltalm",
        "demo",
        "finetune",
        "pretrain",
        "ds_configs",
        "launch.sh",
        "requirements.txt",
    ):
        (root / name).symlink_to(REPO / name)
    _venv(root)
    _texts(root)
    demo_copy(smoke_demo[0], root / "runs" / "demo")
    _placeholders(root)
    return root


def demo_copy(source: Path, target: Path) -> None:
    """A copy of a demo run that reads as if made at ``target``: its files name their own run directory."""
    shutil.copytree(source, target, symlinks=True)
    for path in [*target.glob("*/*.yaml"), *target.glob("*/DONE"), *target.glob("*/*/config.yaml")]:
        path.write_text(path.read_text().replace(str(source), str(target)))


def _shell(sandbox: Path, text: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{sandbox / '.venv' / 'bin'}:{os.environ['PATH']}", "DS_ACCELERATOR": "cpu"}
    env.update(OMP_NUM_THREADS="1", MASTER_PORT=str(29500 + os.getpid() % 1000))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "PYTHONPATH"):
        env.pop(key, None)
    return subprocess.run(
        ["bash", "-c", text], cwd=sandbox, env=env, capture_output=True, text=True, timeout=600
    )


def variant(entry: Entry) -> str:
    text = entry.command
    for old, new in entry.replace:
        assert old in text, (old, text)
        text = text.replace(old, new)
    if entry.append:
        text = text.replace(" < ", f" {entry.append} < ", 1) if " < " in text else f"{text} {entry.append}"
    return text


@pytest.mark.slow
@pytest.mark.parametrize("entry", TABLE, ids=[e.command[:60] for e in TABLE])
def test_documented_command_runs(sandbox, entry):
    if entry.skip:
        pytest.skip(entry.skip)
    if entry.shared:
        assert (
            entry.command == f"python {' '.join(SMOKE_DEMO_ARGS)} /tmp/d"
        )  # the fixture's command, as documented
        assert (sandbox / "runs" / "demo" / "report" / "DONE").is_file()
        return
    proc = _shell(sandbox, variant(entry))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{variant(entry)}\nexit {proc.returncode}\n{output[-4000:]}"
    assert entry.expect_output in output, output[-4000:]
