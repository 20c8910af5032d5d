"""The plots of ``tlsleak report --html``: a campaign's figures over time, as inline SVG.

Drawn with pygal (the ``report`` extra): pure Python, no dependency of its
own beyond the standard library, and it writes plain SVG with its styles
inside, which goes into the page as it is.  Its tooltips need a script that
it would load from the web: they are turned off (``js=[]``), and the inline
script of their configuration is taken out, so a plot loads and runs
nothing at view time.  Text given to pygal (titles, series names, one
of which may be a finding kind read from ``stats.jsonl``) is put into the SVG
as XML text by its ElementTree writer, so it is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tlsleak.reports._html_stats import Point

__all__ = ["INSTALL_HINT", "Plot", "PlottingMissing", "plots", "require_pygal", "time_unit"]

#: The one line said when pygal is not installed.
INSTALL_HINT = "tlsleak report --html needs pygal: pip install 'tlsleak[report]'"


class PlottingMissing(Exception):
    """pygal is not installed (the message says how to install it)."""


def require_pygal() -> Any:
    """The pygal module, or :class:`PlottingMissing`."""
    try:
        import pygal
    except ImportError:
        raise PlottingMissing(INSTALL_HINT) from None
    return pygal


@dataclass(frozen=True)
class Plot:
    """One plot of the page: its title, a note under it, and its SVG."""

    title: str
    note: str
    svg: str


RATE = "Executions per second"

#: (seconds in the unit, its name) for the x axis, by the run's length.
_UNITS = ((1.0, "seconds"), (60.0, "minutes"), (3600.0, "hours"), (86400.0, "days"))


def time_unit(span: float) -> tuple[float, str]:
    """The unit that gives a run of ``span`` seconds an axis of about 3 to 180 of it."""
    chosen = _UNITS[0]
    for unit in _UNITS:
        if span >= 3 * unit[0]:
            chosen = unit
    return chosen


def plots(points: Sequence[Point]) -> list[Plot]:
    """The plots of one run's (downsampled) points: rate, corpus, coverage, findings."""
    pygal = require_pygal()
    seconds, unit = time_unit(points[-1].elapsed if points else 0.0)
    xs = [p.elapsed / seconds for p in points]

    def chart(title: str, series: dict[str, list[float]], note: str = "") -> Plot:
        top = max((v for values in series.values() for v in values), default=0)
        # Counts under 10: whole-number ticks, not 0.1 steps of a count.
        ticks = {"y_labels": list(range(int(top) + 2))} if title != RATE and top < 10 else {}
        graph = pygal.XY(
            **ticks,
            js=[],  # pygal's tooltips are a script from the web: none, the page is offline
            disable_xml_declaration=True,
            show_dots=False,
            stroke_style={"width": 2.5},
            show_legend=len(series) > 1,
            legend_at_bottom=True,
            width=640,
            height=300,
            x_title=f"{unit} since the campaign started",
            x_value_formatter=_short,
            value_formatter=_short,
            no_data_text="no data",
            truncate_legend=-1,
            dynamic_print_values=False,
            include_x_axis=True,
        )
        graph.add_xml_filter(_without_scripts)
        for name, values in series.items():
            graph.add(name, list(zip(xs, values, strict=True)))
        return Plot(title, note, str(graph.render(is_unicode=True)))

    def counts(*names: str) -> dict[str, list[float]]:
        return {name.replace("_", " "): [p.counts[name] for p in points] for name in names}

    coverage = ["error_pairs", "alloc_buckets"]
    sites = [n for n in ("alloc_sites", "alloc_paths") if any(p.counts[n] for p in points)]
    kinds = sorted({k for p in points for k in p.findings})
    result = [
        chart(RATE, {"executions/s": [p.exec_per_s for p in points]}),
        chart("Corpus size", counts("corpus"), "inputs in the corpus"),
        chart(
            "Coverage",
            counts(*coverage, *sites),
            "distinct (step, OpenSSL error) pairs and allocation-count buckets"
            + (", allocation sites and paths" if sites else " (no allocation sites recorded)"),
        ),
        chart(
            "Distinct findings",
            {k: [p.findings.get(k, 0) for p in points] for k in kinds} or {"findings": _zeros(xs)},
            "by kind",
        ),
    ]
    if any(p.counts["restarts"] for p in points):
        result.append(chart("Worker restarts", counts("restarts"), "a crash, a hang or OOM each"))
    return result


def _without_scripts(root: Any) -> Any:
    """``root`` without pygal's inline script (its tooltips' configuration, unused with ``js=[]``).

    The page runs no script: its Content-Security-Policy would refuse this
    one, and the browser would say so on its console.
    """
    for parent in list(root.iter()):
        for child in list(parent):
            if isinstance(child.tag, str) and child.tag.rsplit("}", 1)[-1] == "script":
                parent.remove(child)
    return root


def _zeros(xs: Sequence[float]) -> list[float]:
    return [0.0] * len(xs)


def _short(value: float) -> str:
    """``1234567`` -> ``1.23M``: axis labels that fit."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"

