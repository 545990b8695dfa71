"""Benchmarks: each prints a table next to its named peer; records and commands live in docs/benchmarks/."""
