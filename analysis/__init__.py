"""Figures and the reproduction report, drawn from the tidy CSVs under ``results/``.

``analysis.load`` is the only place that reads files; notebooks and ``analysis.report`` only reshape and plot
what it returns, so every figure and every verdict sees the same data (see ARCHITECTURE.md).
"""
