"""Structured log lines: `event key=value ...`, so a grep or a log shipper can take them apart;
or, with `--log-format json` (`configure`), one JSON object per line with the same keys."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone


def kv(event: str, **fields: object) -> str:
    """`kv("allocated", pod="default/web-0", ip="198.18.0.5")` → 'allocated pod=default/web-0 ip=198.18.0.5'.

    Values with spaces, quotes or `=` are quoted, so every line splits the same way. The line
    keeps its event and fields for `--log-format json` (`JsonFormatter`)."""
    line = Line(" ".join([event, *(f"{key}={_value(value)}" for key, value in fields.items())]))
    line.event, line.fields = event, {key: _json_value(value) for key, value in fields.items()}
    return line


def _json_value(value: object) -> object:
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _value(value: object) -> str:
    text = "-" if value is None else str(value)
    if not text or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class Line(str):
    """A `kv` line that remembers its event and fields, for the JSON formatter (the text is the same)."""

    event: str
    fields: dict[str, object]


_PAIR = re.compile(r"""(\w+)=("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\S+)""")
_PAIRS = re.compile(rf"""(?P<event>[^=]*?)\s*(?P<pairs>(?:{_PAIR.pattern}\s*)*)""")
_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?")  # "0000000000000001" (a dpid) stays text
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time`, `level`, `logger`, `event` and the line's own keys (the
    metrics' label names: `switch`, `node`, `pool`, `result`...). A `kv` line keeps its values'
    types; a `key=value ...` line written with %-formatting is taken apart; any other text is `message`."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name}
        document.update(_structured(record))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def _structured(record: logging.LogRecord) -> dict[str, object]:
    if isinstance(record.msg, Line) and not record.args:
        return {"event": record.msg.event, **record.msg.fields}
    text = record.getMessage()
    found = _PAIRS.fullmatch(text)
    if found is None or not found["pairs"]:
        return {"message": text}
    fields: dict[str, object] = {"event": found["event"]} if found["event"] else {}
    for key, value in _PAIR.findall(found["pairs"]):
        fields[key] = _parsed(value)
    return fields


def _parsed(value: str) -> object:
    if value[:1] in "\"'" and value[-1:] == value[:1] and len(value) > 1:
        return value[1:-1].replace("\\" + value[0], value[0]).replace("\\\\", "\\")
    if _NUMBER.fullmatch(value):
        return float(value) if "." in value else int(value)
    return None if value == "-" else value


def configure(level: int | str, *, fmt: str = "text") -> None:
    """The process's logging: to stderr, as text lines or (`fmt="json"`) JSON lines."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])


FORMATS = ("text", "json")
