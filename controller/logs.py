"""Structured log lines: `event key=value ...`, so a grep or a log shipper can take them apart."""

from __future__ import annotations


def kv(event: str, **fields: object) -> str:
    """`kv("allocated", pod="default/web-0", ip="198.18.0.5")` → 'allocated pod=default/web-0 ip=198.18.0.5'.

    Values with spaces, quotes or `=` are quoted, so every line splits the same way."""
    return " ".join([event, *(f"{key}={_value(value)}" for key, value in fields.items())])


def _value(value: object) -> str:
    text = "-" if value is None else str(value)
    if not text or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text
