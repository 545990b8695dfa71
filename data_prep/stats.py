"""``stats DIR``: per stream rows (documents or pairs), tokens, bytes, skipped records, and the temperature
sampling probabilities p_l ∝ n_l^(1/T) over token counts — within each kind (mono languages, parallel pairs),
as the pre-training loader mixes them (the same function: ``deltalm.temperature.temperature_probabilities``).

Everything comes from ``manifest.json`` alone (per-stream totals and shard counts): O(streams) time and memory
whatever the number of shards; no shard table or shard is read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deltalm.shard_format import ShardError, load_manifest
from deltalm.temperature import temperature_probabilities

from .errors import DataPrepError


@dataclass
class StreamStats:
    name: str
    kind: str
    rows: int
    tokens: int
    bytes: int
    shards: int
    skipped: int
    p_proportional: float
    p_temperature: float


def dataset_stats(directory: str | Path, temperature: float = 1.0) -> tuple[list[StreamStats], float, dict]:
    if not temperature > 0:
        raise DataPrepError(f"--temperature must be > 0, got {temperature}")
    try:
        manifest = load_manifest(directory, shards=False)
    except ShardError as exc:
        raise DataPrepError(str(exc)) from None
    streams = manifest.get("streams", {})
    rows: list[StreamStats] = []
    for kind in ("mono", "parallel"):
        names = sorted(n for n, s in streams.items() if s["kind"] == kind)
        counts = {n: streams[n]["tokens"] for n in names}
        positive = any(c > 0 for c in counts.values())
        p1 = temperature_probabilities(counts, 1.0) if positive else dict.fromkeys(names, 0.0)
        pt = temperature_probabilities(counts, temperature) if positive else dict.fromkeys(names, 0.0)
        for n in names:
            s = streams[n]
            rows.append(
                StreamStats(
                    n,
                    kind,
                    s["rows"],
                    s["tokens"],
                    s["bytes"],
                    s["num_shards"],
                    sum(s.get("skipped", {}).values()),
                    p1[n],
                    pt[n],
                )
            )
    return rows, temperature, manifest.get("languages", {})


def format_stats(result: tuple[list[StreamStats], float, dict]) -> str:
    rows, temperature, languages = result
    header = [
        "stream",
        "kind",
        "rows",
        "tokens",
        "MB",
        "shards",
        "skipped",
        "p(T=1)",
        f"p(T={temperature:g})",
    ]
    table = [header]
    for r in rows:
        table.append(
            [
                r.name,
                r.kind,
                f"{r.rows:,}",
                f"{r.tokens:,}",
                f"{r.bytes / 1e6:,.2f}",
                str(r.shards),
                f"{r.skipped:,}",
                f"{r.p_proportional:.4f}",
                f"{r.p_temperature:.4f}",
            ]
        )
    for kind in ("mono", "parallel"):
        sel = [r for r in rows if r.kind == kind]
        if sel:
            table.append(
                [
                    f"total {kind}",
                    "",
                    f"{sum(r.rows for r in sel):,}",
                    f"{sum(r.tokens for r in sel):,}",
                    f"{sum(r.bytes for r in sel) / 1e6:,.2f}",
                    str(sum(r.shards for r in sel)),
                    f"{sum(r.skipped for r in sel):,}",
                    "1.0000",
                    "1.0000",
                ]
            )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if languages:
        lines.append("")
        lines.append(
            "languages (parallel streams count both sides): "
            + ", ".join(f"{lang} {v['tokens']:,} tokens" for lang, v in languages.items())
        )
    lines.append(f"p: sampling probability within each kind, p ∝ tokens^(1/T); T={temperature:g}")
    return "\n".join(lines)
