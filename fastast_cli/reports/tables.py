"""One table, two renderings: a rich console table and a CSV file holding the same cells.

On the console a table fits the width it is printed at without cutting a cell: headers wrap at
their spaces, and a table still too wide is stacked in parts that each repeat its key columns
(e.g. run and r). Columns that hold one value in every row can be said once in the title.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions
from rich.table import Table
from rich.text import Text

from fastast_cli.atomic import atomic_path, check_output
from fastast_cli.errors import FastASTError


@dataclass(frozen=True)
class Column:
    """A table column: the row key it shows, its header, the format of its cells, and a unit.

    The unit (e.g. "x" for a speedup) is shown on the console only, so CSV cells stay numbers.
    A missing value (None, e.g. no spread without folds) is a blank cell.
    """

    key: str
    header: str
    fmt: str = "{}"
    unit: str = ""

    def cell(self, row: Mapping[str, Any]) -> str:
        value = row[self.key]
        return "" if value is None else self.fmt.format(value)


    def shown(self, row: Mapping[str, Any]) -> str:
        """The console's cell: the CSV's, with the unit."""
        return self.cell(row) + self.unit * (row[self.key] is not None)


BORDER = 3  # characters a column adds to a rich table's width besides its text (│ and padding)


@dataclass
class FittedTable:
    """A rich renderable: the table in as many parts as the console's width needs (see module
    docstring). cells: [rows][columns] console text; keys: leading columns every part
    repeats."""

    title: str
    headers: list[str]
    cells: list[list[str]]
    keys: int = 1

    def widths(self, index: int) -> int:
        """The narrowest the column can be without cutting a cell or a header word."""
        words = [cell_len(word) for word in self.headers[index].split()] or [0]
        return max([max(words), *(cell_len(row[index]) for row in self.cells)])

    def parts(self, width: int) -> list[list[int]]:
        """Column indices of each part: all of them when they fit `width`, else the key columns
        and as many others as fit, part after part."""
        need = [self.widths(index) + BORDER for index in range(len(self.headers))]
        if sum(need) + 1 <= width:
            return [list(range(len(self.headers)))]
        keys = list(range(min(self.keys, len(self.headers))))
        parts: list[list[int]] = []
        for index in range(len(keys), len(self.headers)):
            if parts and sum(need[i] for i in parts[-1]) + need[index] + 1 <= width:
                parts[-1].append(index)
            else:
                parts.append([*keys, index])
        return parts or [keys]

    def natural(self, index: int) -> int:
        """The column's width with its header on one line."""
        return max([cell_len(self.headers[index]), *(cell_len(row[index]) for row in self.cells)])

    def table(self, columns: list[int], width: int) -> Table:
        """The part of the table made of `columns`; when its headers on one line would not fit
        `width`, every column is as narrow as its cells and header words allow."""
        narrow = sum(self.natural(index) + BORDER for index in columns) + 1 > width
        table = Table()
        for index in columns:
            table.add_column(Text(self.headers[index]), justify="right", overflow="fold",
                             width=self.widths(index) if narrow else None)
        for row in self.cells:
            table.add_row(*(Text(row[index]) for index in columns))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Any]:
        """Each part under its title; a title wraps at the part's width, or at 80 columns
        (within the console's) for a narrower part."""
        parts = self.parts(options.max_width)
        for number, columns in enumerate(parts):
            title = self.title if number == 0 else f"(continued, part {number + 1} of {len(parts)})"
            if title:
                width = sum(self.natural(index) + BORDER for index in columns) + 1
                yield from console.render(
                    Text(title), options.update_width(min(options.max_width, max(width, 80))))
            yield self.table(columns, options.max_width)


def rich_table(
    title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], *,
    keys: int = 1, constant: Sequence[str] = (),
) -> FittedTable:
    """A right-aligned table of `rows` (mappings from column key to value) that fits the
    console. Title, headers and cells are text, never rich markup (a run or file name may hold
    `[...]`). A column blank in every row is left out; a column named in `constant` that holds
    one value in every row (of two or more) is said once, on a line under the title. `keys`:
    the leading columns repeated when the table is stacked to fit."""
    said: list[str] = []
    kept: list[Column] = []
    for column in columns:
        values = {column.shown(row) for row in rows}
        if rows and values == {""}:
            continue
        if column.key in constant and len(rows) > 1 and len(values) == 1:
            said.append(f"{column.header}: {values.pop()}")
        else:
            kept.append(column)
    if said:
        title = f"{title}\n{'; '.join(said)}" if title else "; ".join(said)
    kept_keys = sum(column in kept for column in columns[:keys])
    return FittedTable(title, [column.header for column in kept],
                       [[column.shown(row) for column in kept] for row in rows], kept_keys)


def write_csv(
    path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]
) -> None:
    """Write the table as CSV (header = column keys, cells formatted as on the console),
    atomically: a reader never sees half a file."""
    with atomic_path(path) as temporary, temporary.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([column.key for column in columns])
        for row in rows:
            writer.writerow([column.cell(row) for column in columns])


def table_header(path: str | Path) -> list[str] | None:
    """The first row of the CSV at `path` (None when it cannot be read as one)."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as stream:
            return next(csv.reader(stream), None)
    except (OSError, csv.Error):
        return None


def is_table_of(path: str | Path, columns: Sequence[Column]) -> bool:
    """Whether `path` is a CSV that `write_csv` wrote with these columns (same header)."""
    return table_header(path) == [column.key for column in columns]


def check_table_target(path: str | Path, columns: Sequence[Column], option: str = "--out") -> None:
    """Before any work: `path` can be written, and holds nothing but such a table (a file of
    any other kind is the user's, never replaced)."""
    check_output(path, folder=False, option=option)
    if Path(path).exists() and not is_table_of(path, columns):
        raise FastASTError(
            f"{option} {path} exists and is not a table of this kind "
            f"({','.join(column.key for column in columns)}): remove it or pick another {option}"
        )
