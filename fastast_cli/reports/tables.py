"""One table, two renderings: a rich console table and a CSV file holding the same cells."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

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


def rich_table(title: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> Table:
    """A right-aligned rich table of `rows` (mappings from column key to value). Title, headers
    and cells are text, never rich markup (a run or file name may hold `[...]`)."""
    table = Table(title=escape(title), title_justify="left")
    for column in columns:
        table.add_column(escape(column.header), justify="right")
    for row in rows:
        table.add_row(*(escape(column.cell(row) + column.unit * (row[column.key] is not None))
                        for column in columns))
    return table


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


def is_table_of(path: str | Path, columns: Sequence[Column]) -> bool:
    """Whether `path` is a CSV that `write_csv` wrote with these columns (same header)."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as stream:
            header = next(csv.reader(stream), None)
    except (OSError, csv.Error):
        return False
    return header == [column.key for column in columns]


def check_table_target(path: str | Path, columns: Sequence[Column], option: str = "--out") -> None:
    """Before any work: `path` can be written, and holds nothing but such a table (a file of
    any other kind is the user's, never replaced)."""
    check_output(path, folder=False, option=option)
    if Path(path).exists() and not is_table_of(path, columns):
        raise FastASTError(
            f"{option} {path} exists and is not a table of this kind "
            f"({','.join(column.key for column in columns)}): remove it or pick another {option}"
        )
