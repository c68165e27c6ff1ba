"""Reports from result rows: pandas tables, seaborn plots, Markdown and self-contained HTML."""

from ulbench.report.build import build_report

__all__ = ["build_report"]
