"""Text for people: aligned tables, usage bars, ages. Pure: data in, strings out."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

Cell = str | int | float | None


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], *, right: Sequence[str] = ()) -> str:
    """Columns as wide as their widest cell, two spaces apart; `right` names the columns aligned
    right (numbers). None is shown as `-`. No trailing spaces."""
    cells = [[_text(cell) for cell in row] for row in rows]
    widths = [max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        parts = [text.rjust(width) if header in right else text.ljust(width)
                 for text, width, header in zip(row, widths, headers)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), *(line(row) for row in cells)])


def _text(cell: Cell) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, bool):
        return "yes" if cell else "no"
    return str(cell)


BAR_MARKS = ("#", "r", "c", ".")  # allocated, reserved, cooling down, free (ASCII: any terminal, any log)


def bar(size: int, parts: Sequence[int], *, width: int = 20, marks: Sequence[str] = BAR_MARKS) -> str:
    """`[####rc..........]`: each part's share of `size` in its mark, the rest free. Shares are
    rounded at their running total, so a full pool fills the bar; a part that is not zero shows at
    least one mark while there is room, so one held address in a /16 is still seen."""
    if size <= 0:
        return "[" + " " * width + "]"
    edges, total = [], 0
    for part in parts:
        total += part
        edges.append(min(width, round(width * total / size)))
    counts = [edge - before for edge, before in zip(edges, [0, *edges])]
    free = width - sum(counts)
    for index, part in enumerate(parts):
        if part and not counts[index]:
            largest = max(range(len(counts)), key=lambda i: counts[i])
            if free:
                free -= 1
            elif counts[largest] > 1:
                counts[largest] -= 1
            else:
                continue
            counts[index] = 1
    drawn = "".join(mark * count for mark, count in zip(marks, counts))
    return "[" + drawn + marks[len(parts)] * (width - len(drawn)) + "]"


def percent(part: int, size: int) -> str:
    return f"{100 * part / size:.0f}%" if size else "-"


def age(iso: str | None, *, now: datetime.datetime) -> str | None:
    """`12s ago`, `5m ago`, `3h ago`, `2d ago` of an ISO 8601 time; None stays None."""
    if iso is None:
        return None
    seconds = max(0, int((now - datetime.datetime.fromisoformat(iso)).total_seconds()))
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit} ago"
    return f"{seconds}s ago"


def dpid_text(dpid: int) -> str:
    """A datapath id as ovs-ofctl prints it."""
    return f"{dpid:016x}"
