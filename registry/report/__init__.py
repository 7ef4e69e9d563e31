"""Static HTML report: a leaderboard, a page per submission with plots, a compare page, and
results.json / results.csv, built from the results store alone (read-only)::

    bioprior report --db results.sqlite -o site/

or ``bioprior.registry.report.build_report(db, out)``. ``data`` reads and shapes the rows,
``consistency`` pairs each result with its baseline (error consistency), ``plots`` draws the
matplotlib SVG figures, ``pages`` renders the Jinja2 templates.
"""

from __future__ import annotations

from .data import ReportError
from .pages import Site, build_report

__all__ = ["ReportError", "Site", "build_report"]
