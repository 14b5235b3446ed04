"""Figures written to files with matplotlib's Agg canvas (no display, no pyplot global state).

Figures are `matplotlib.figure.Figure` objects drawn on an Agg canvas, so nothing here changes
the backend of a program that imports it. Sizes are given in pixels and kept exactly (no tight
bounding box), so a caller knows the size of the image it gets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastast_cli.atomic import atomic_path
from fastast_cli.errors import FastASTError

if TYPE_CHECKING:  # matplotlib itself is imported where a figure is made (~0.8 s)
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PathLike = str | os.PathLike[str]
DPI = 100


def new_figure(width_px: int, height_px: int, dpi: int = DPI) -> Figure:
    """An empty figure of exactly `width_px` × `height_px` pixels when saved at `dpi`."""
    if width_px < 50 or height_px < 50:
        raise ValueError(f"a figure needs at least 50×50 pixels, got {width_px}×{height_px}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def image_format(path: PathLike) -> str:
    """The image format named by the file's suffix (`png` when it has none).

    Raises FastASTError for a suffix matplotlib cannot write.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    supported = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in supported:
        raise FastASTError(
            f"{path}: cannot write .{fmt} images; use one of .{', .'.join(sorted(supported))}"
        )
    return fmt


def save_figure(figure: Figure, path: PathLike) -> Path:
    """Write `figure` atomically in the format of the file's suffix (see `image_format`)."""
    path = Path(path)
    fmt = image_format(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=fmt, dpi=figure.dpi)
    return path


def plot_tradeoff(
    rows: Sequence[Mapping[str, Any]],
    x_key: str,
    y_key: str,
    label_key: str,
    path: PathLike,
    title: str,
    *,
    x_label: str | None = None,
    y_label: str | None = None,
    series_key: str | None = None,
    size: tuple[int, int] = (900, 600),
) -> Path:
    """A metric against speed: one point per row at (row[x_key], row[y_key]), joined in row
    order and annotated with row[label_key] (e.g. accuracy vs samples/s, one point per r).

    rows: mappings holding numbers under `x_key` and `y_key`; any value under `label_key`.
    series_key: when given, one line per distinct row[series_key] (e.g. one per run), in legend.
    Raises ValueError when there are no rows or a row lacks a key or holds a non-number.
    """
    if not rows:
        raise ValueError("no rows to plot")
    figure = new_figure(*size)
    axes = figure.add_subplot()
    series = [row[series_key] for row in rows] if series_key else [None] * len(rows)
    labels: list[tuple[float, float, str]] = []
    for name in dict.fromkeys(series):
        chosen = [row for row, owner in zip(rows, series, strict=True) if owner == name]
        points = _tradeoff_points(chosen, x_key, y_key, label_key)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        axes.plot(xs, ys, marker="o", linewidth=1.5, label=name)
        labels += [(x, y, f"{label_key}={label}") for x, y, label in points]
    if series_key:
        axes.legend()
    axes.set_xlabel(x_label or x_key)
    axes.set_ylabel(y_label or y_key)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    annotate_apart(axes, labels)
    return save_figure(figure, path)


# Where a point's label may go, tried in order: (dx, dy) in points, horizontal and vertical
# alignment.
LABEL_PLACES = ((4, 4, "left", "bottom"), (4, -4, "left", "top"), (-4, 4, "right", "bottom"),
                (-4, -4, "right", "top"), (0, 10, "center", "bottom"), (0, -10, "center", "top"))


def annotate_apart(axes: Axes, labels: Sequence[tuple[float, float, str]]) -> list[str]:
    """Write each (x, y, text) beside its point where it overlaps no label already written
    (trying the places of `LABEL_PLACES`); a text already written at the same point, or one
    with no free place, is left out (the same r is written on the neighbouring curve).
    Returns the texts written. Call after the layout is final: places are measured in pixels."""
    renderer = axes.figure.canvas.get_renderer()  # type: ignore[attr-defined]
    taken: list[Any] = []  # bounding boxes of the texts written
    written: list[str] = []
    seen: set[tuple[float, float, str]] = set()
    for x, y, text in labels:
        if (x, y, text) in seen:
            continue
        seen.add((x, y, text))
        for dx, dy, across, up in LABEL_PLACES:
            note = axes.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy),
                                 fontsize=8, ha=across, va=up)
            box = note.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in taken):
                taken.append(box)
                written.append(text)
                break
            note.remove()
    return written


def method_curves(
    rows: Sequence[Mapping[str, Any]], run_key: str = "run", method_key: str = "method",
    shared: str = "none",
) -> list[dict[str, Any]]:
    """The rows of a sweep over methods as curves for `plot_tradeoff(series_key="curve")`: one
    curve per run and method, each starting at the run's shared r = 0 row (method `shared`).

    rows: mappings with `run_key` and `method_key`; returns copies with `curve` added, curve
    by curve: the method when there is one run, the run when each run has one method, else
    `run (method)`.
    """
    runs = list(dict.fromkeys(row[run_key] for row in rows))
    curves: list[dict[str, Any]] = []
    one_method = all(len({row[method_key] for row in rows
                          if row[run_key] == run and row[method_key] != shared}) <= 1
                     for run in runs)
    for run in runs:
        mine = [row for row in rows if row[run_key] == run]
        start = [row for row in mine if row[method_key] == shared]
        methods = list(dict.fromkeys(row[method_key] for row in mine if row[method_key] != shared))
        for method in methods or [shared]:
            name = (method if len(runs) == 1 else run if one_method else f"{run} ({method})")
            points = start + [row for row in mine if row[method_key] == method != shared]
            curves += [{**row, "curve": name} for row in points]
    return curves


def _tradeoff_points(
    rows: Sequence[Mapping[str, Any]], x_key: str, y_key: str, label_key: str
) -> list[tuple[float, float, Any]]:
    """(x, y, label) per row, checked."""
    if not rows:
        raise ValueError("no rows to plot")
    points = []
    for number, row in enumerate(rows):
        missing = [key for key in (x_key, y_key, label_key) if key not in row]
        if missing:
            raise ValueError(f"row {number} has no {', '.join(missing)}")
        try:
            points.append((float(row[x_key]), float(row[y_key]), row[label_key]))
        except (TypeError, ValueError):
            raise ValueError(
                f"row {number}: {x_key}={row[x_key]!r} and {y_key}={row[y_key]!r} must be numbers"
            ) from None
    return points


def draw_token_counts(axes: Axes, counts: Sequence[int], title: str = "tokens per block") -> None:
    """Tokens (CLS and DIST included) entering the first block (x = 0) and after each block.

    counts: [depth + 1] with counts[0] the input token count.
    """
    blocks = list(range(len(counts)))
    axes.plot(blocks, counts, marker="o", markersize=3)
    axes.set_xlabel("block (0 = input)")
    axes.set_ylabel("tokens")
    axes.set_title(title)
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.annotate(str(counts[-1]), (blocks[-1], counts[-1]), textcoords="offset points",
                  xytext=(0, 6), ha="center", fontsize=8)


def colour_scale(values: Sequence[Sequence[float]]) -> tuple[float, float]:
    """The colour range of a heat map: the lowest and highest score shown, so that a file
    whose scores lie between 0.1 and 0.25 uses every colour (the colour bar names the range).
    A range of one value is widened a little, so that it still has a colour."""
    flat = [value for row in values for value in row]
    low, high = min(flat), max(flat)
    if high - low < 1e-6:
        low, high = max(low - 0.05, 0.0), min(high + 0.05, 1.0)
    return low, high


def plot_timeline(
    starts_s: Sequence[float],
    ends_s: Sequence[float],
    scores: Sequence[Sequence[float]],
    labels: Sequence[str],
    path: PathLike,
    title: str,
    *,
    width_px: int = 1000,
) -> Path:
    """Scores of a few classes over time as a heat map: one row per class (the first on top),
    time in seconds on the x axis.

    starts_s, ends_s: [W] each window's span; scores: [W, K] the classes' scores in [0, 1];
    labels: [K]. Windows overlap, so each is drawn around its middle, up to halfway to its
    neighbours' middles (the first from the start, the last to the end). Colours span the
    scores' own range (`colour_scale`), named on the colour bar.
    """
    if not starts_s:
        raise ValueError("no windows to plot")
    middles = [(start + end) / 2 for start, end in zip(starts_s, ends_s, strict=True)]
    halfway = [(a + b) / 2 for a, b in zip(middles, middles[1:], strict=False)]
    x = [starts_s[0], *halfway, ends_s[-1]]  # [W + 1] column edges in seconds
    values = [[row[k] for row in scores] for k in range(len(labels))]  # [K, W]
    low, high = colour_scale(values)
    figure = new_figure(width_px, 140 + 28 * len(labels))
    axes = figure.add_subplot()
    mesh = axes.pcolormesh(x, range(len(labels) + 1), values, vmin=low, vmax=high,
                           cmap="magma", shading="flat")
    axes.set_yticks([k + 0.5 for k in range(len(labels))], labels)
    axes.invert_yaxis()
    axes.set_xlabel("time (s)")
    axes.set_title(title)
    figure.colorbar(mesh, ax=axes, label=f"score (colours span {low:.2f}–{high:.2f})",
                    fraction=0.03, pad=0.01)
    figure.tight_layout()
    return save_figure(figure, path)
