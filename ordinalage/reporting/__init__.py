"""Rendering: numbers as text, figures, rich tables, model cards and the HTML report.

Nothing here computes a statistic or runs a model: callers hand over what evaluation, the bake-off
or a run folder already hold, and these modules turn it into text, PNGs, Markdown or HTML.
"""
