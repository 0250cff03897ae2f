"""Small helpers shared by the domains' figure code: atomic PNG writing, input checks, and a
legibility checker (labelled axes and colour bars, non-overlapping ticks) for the tests."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from awd.io import InputError, atomic_path

#: Resolution of every PNG the workflow writes.
DPI = 110


def save_png(fig, path: str | Path, dpi: int = DPI) -> Path:
    """Write the matplotlib figure ``fig`` to ``path`` as PNG, atomically (no half-written file)."""
    path = Path(path)
    if _CAPTURED is not None:
        _CAPTURED.append((path, fig))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


def require_file(path: str | Path, hint: str) -> Path:
    """``path`` if it is a file, else an InputError naming it and ``hint`` (what writes it)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"missing; {hint}")
    return path


# ----------------------------------------------------------------------------- legibility checks

_CAPTURED: list | None = None


@contextmanager
def capture_figures() -> Iterator[list]:
    """Collect ``(path, figure)`` of every :func:`save_png` call inside the block (for tests that
    check what a domain's figure code drew, e.g. with :func:`label_problems`)."""
    global _CAPTURED
    previous, _CAPTURED = _CAPTURED, []
    try:
        yield _CAPTURED
    finally:
        _CAPTURED = previous


def _has_data(ax) -> bool:
    return bool(ax.lines or ax.images or ax.collections or ax.patches or ax.containers)


def _overlaps(boxes: list) -> bool:
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def label_problems(fig, min_fontsize: float = 6.0) -> list[str]:
    """What makes ``fig`` hard to read, as a list of messages (empty when none).

    Checked on every visible axes that draws something: an x and a y label where that axis
    shows tick labels (axes sharing an axis may leave it to their neighbour with
    ``label_outer``), no overlapping tick labels, tick and label fonts of at least
    ``min_fontsize`` pt, a title that does not run into the axes' tick labels, non-empty legend
    entries; and a label on every colour bar. Axes switched off (``ax.axis('off')``) are
    reported unless they only hold text.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or not hasattr(fig.canvas, "get_renderer"):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    problems = []
    tick_boxes = [t.get_window_extent(renderer) for ax in fig.axes if ax.get_visible()
                  for axis in (ax.xaxis, ax.yaxis) for t in axis.get_ticklabels()
                  if t.get_visible() and t.get_text().strip()]
    for i, ax in enumerate(fig.axes):
        name = f"axes {i} ({ax.get_title() or ax.get_label() or 'untitled'})"
        colorbar = getattr(ax, "_colorbar", None)
        if colorbar is not None:
            axis = ax.yaxis if colorbar.orientation == "vertical" else ax.xaxis
            if not axis.get_label_text().strip():
                problems.append(f"{name}: colour bar without a label")
            continue
        if not ax.get_visible() or not _has_data(ax):
            continue
        if not ax.axison:
            problems.append(f"{name}: axes switched off (no scale for the data)")
            continue
        for axis, letter in ((ax.xaxis, "x"), (ax.yaxis, "y")):
            ticks = [t for t in axis.get_ticklabels() if t.get_visible() and t.get_text().strip()]
            if ticks and not axis.get_label_text().strip():
                problems.append(f"{name}: {letter} axis has tick labels but no label")
            if _overlaps([t.get_window_extent(renderer) for t in ticks]):
                problems.append(f"{name}: overlapping {letter} tick labels")
            for text in ticks[:1] + [axis.label]:
                if text.get_text().strip() and text.get_fontsize() < min_fontsize:
                    problems.append(f"{name}: {letter} text {text.get_text()!r} smaller than "
                                    f"{min_fontsize:g} pt")
        if ax.get_title():
            box = ax.title.get_window_extent(renderer)
            if any(box.overlaps(b) for b in tick_boxes):
                problems.append(f"{name}: title runs into tick labels")
        legend = ax.get_legend()
        if legend is not None:
            empty = [t for t in legend.get_texts() if not t.get_text().strip()]
            if empty:
                problems.append(f"{name}: legend has {len(empty)} entries without text")
    return problems
