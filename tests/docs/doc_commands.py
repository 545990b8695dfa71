"""The command lines the documentation shows: every line of every fenced ``bash`` block of ``README.md`` and
``docs/*.md`` (``\\`` continuations joined, comments dropped), and the commented example at the head of each
``finetune/configs/*.yaml``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class DocCommand:
    source: str  # "README.md:57"
    text: str  # the command as written, continuations joined, comment dropped


COMMENT = re.compile(r"\s+#\s.*$")  # a trailing "  # comment" (the docs never put " # " inside an argument)


def _strip_comment(line: str) -> str:
    return COMMENT.sub("", line).strip()


def _join(lines: list[tuple[int, str]], source: str) -> list[DocCommand]:
    commands, pending, start = [], "", 0
    for number, raw in lines:
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if not pending:
            start = number
        stripped = _strip_comment(line)
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        text = " ".join((pending + stripped).split())
        pending = ""
        if text:
            commands.append(DocCommand(f"{source}:{start}", text))
    return commands


def markdown_commands(path: Path) -> list[DocCommand]:
    lines, block, inside = [], [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = FENCE.match(line.strip())
        if match and not inside:
            inside, block = True, [] if match.group(1) in ("bash", "sh", "shell") else None
            continue
        if match and inside:
            inside = False
            if block is not None:
                lines.append(block)
            continue
        if inside and block is not None:
            block.append((number, line))
    source = str(path.relative_to(REPO))
    return [command for block in lines for command in _join(block, source)]


def config_header_commands(path: Path) -> list[DocCommand]:
    """Commands in a YAML file's leading comment: lines indented under ``#`` (``#   cmd \\``)."""
    lines = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("#"):
            break
        if line.startswith("#   "):
            lines.append((number, line[1:]))
    return _join(lines, str(path.relative_to(REPO)))


def documented_commands() -> list[DocCommand]:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    commands = [c for page in pages for c in markdown_commands(page)]
    for config in sorted((REPO / "finetune" / "configs").glob("*.yaml")):
        commands += config_header_commands(config)
    return commands
