"""Tables that fit the terminal without cutting a value.

A value of one word (a number, a name, a date) is never wrapped or cut; longer text wraps at its spaces. When the
table is wider than the terminal, the headings stack their words first, then the columns the command marks as
optional are left out, in its order, and a line under the table names them. On a terminal too narrow even for that,
values wrap rather than lose characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class Column:
    heading: str
    right: bool = False
    """Right-aligned (numbers)."""


def chrome(columns: int) -> int:
    """The width a table's borders and padding take: a border left of every column and after the last, and a space
    each side of every cell (rich's default box)."""
    return 1 + 3 * columns


def print_table(
    console: Console,
    title: str | None,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    drop: Sequence[int] = (),
    note: str | None = "--csv and --json have all",
) -> None:
    """Print `rows` (cells in rich markup) under `columns`, fitted to `console`'s width: the columns `drop` names
    (by index) may be left out, in that order, and `note` says where the full table is."""
    shown = list(range(len(columns)))
    droppable = list(drop)
    left_out: list[str] = []
    plain = [[Text.from_markup(value).plain for value in row] for row in rows]  # what each cell shows, measured
    table, least, natural = _table(title, columns, rows, plain, shown)
    if natural > console.width:  # stacked headings leave more room to the values
        table, least, natural = _table(title, columns, rows, plain, shown, stacked=True)
        while least > console.width and droppable:
            index = droppable.pop(0)
            left_out.append(columns[index].heading)
            shown.remove(index)
            table, least, natural = _table(title, columns, rows, plain, shown, stacked=True)
        if least > console.width:
            table, least, natural = _table(title, columns, rows, plain, shown, stacked=True, whole=False)
    console.print(table)
    if left_out:
        where = f" ({note})" if note else ""
        console.print(f"[dim]left out at this width: {escape(', '.join(left_out))}{where}[/]")


def _table(
    title: str | None,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    plain: Sequence[Sequence[str]],
    shown: Sequence[int],
    stacked: bool = False,
    whole: bool = True,
) -> tuple[Table, int, int]:
    """The table of the `shown` columns, the least width it needs and the width it takes unwrapped (`plain`: the
    cells as shown). With `whole`, one-word values are never wrapped; `stacked` puts each heading word on a line of
    its own."""
    table = Table(title=title, title_justify="left")
    least = natural = chrome(len(shown))
    for index in shown:
        column = columns[index]
        texts = [row[index] for row in plain]
        unbroken = whole and all(len(text.split()) <= 1 for text in texts)
        head = column.heading.split() if stacked or not unbroken else [column.heading]
        body = texts if unbroken else [word for text in texts for word in text.split()]
        least += max(map(cell_len, [*head, *body]))
        natural += max(map(cell_len, [*head, *texts]))
        table.add_column(
            "\n".join(head) if stacked else column.heading,
            justify="right" if column.right else "left",
            no_wrap=unbroken,
            overflow="fold",
        )
    for row in rows:
        table.add_row(*(row[index] for index in shown))
    return table, least, natural
