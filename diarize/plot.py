"""A picture of who spoke when: one row per speaker, reference rows above hypothesis rows."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .writers import Turn, atomic_write


def plot_timeline(turns: Iterable[Turn], path: str | Path, reference: Iterable[Turn] | None = None,
                  title: str | None = None, duration: float | None = None):
    """Draw `turns` as horizontal bars, one row per speaker, time in seconds on the x axis, and save a
    PNG at `path` (atomically). With `reference`, its speakers get rows labelled "ref <speaker>" above
    the hypothesis rows, below them a separating line. `duration` sets the time axis (default: the last
    turn's end). Returns the matplotlib Figure."""
    # the object-oriented Agg canvas: no pyplot, no display, no global backend switch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    turns, reference = list(turns), list(reference or [])
    ref_speakers = sorted({t.speaker for t in reference})
    rows = [("ref " + s, s, reference) for s in ref_speakers]
    rows += [(s, s, turns) for s in sorted({t.speaker for t in turns})]
    end = duration or max((t.end for t in turns + reference), default=1.0)

    fig = Figure(figsize=(10, 1.0 + 0.45 * max(len(rows), 1)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours: dict[str, str] = {}  # one colour per speaker name, shared by its ref and hyp rows
    for hyp, ref in _matching(turns, reference).items():  # a found speaker takes its reference's colour
        colours[hyp] = colours.setdefault(ref, f"C{len(colours) % 10}")
    for y, (_, speaker, source) in enumerate(rows):
        colour = colours.setdefault(speaker, f"C{len(colours) % 10}")
        bars = [(t.start, t.end - t.start) for t in source if t.speaker == speaker]
        ax.broken_barh(bars, (y - 0.35, 0.7), color=colour)
    if ref_speakers and len(rows) > len(ref_speakers):
        ax.axhline(len(ref_speakers) - 0.5, color="black", linewidth=1)
    ax.set_yticks(range(len(rows)), [label for label, _, _ in rows])
    ax.set_ylim(max(len(rows), 1) - 0.5, -0.5)  # first row on top
    ax.set_xlim(0, end)
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    return fig


def _matching(turns: list[Turn], reference: list[Turn]) -> dict[str, str]:
    """Hypothesis speaker -> the reference speaker it overlaps most, one to one (Hungarian)."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    hyp, ref = sorted({t.speaker for t in turns}), sorted({t.speaker for t in reference})
    overlap = np.zeros((len(hyp), len(ref)))
    for h in turns:
        for r in reference:
            overlap[hyp.index(h.speaker), ref.index(r.speaker)] += max(0.0, min(h.end, r.end) - max(h.start, r.start))
    rows, cols = linear_sum_assignment(-overlap)
    return {hyp[i]: ref[j] for i, j in zip(rows, cols) if overlap[i, j] > 0}
