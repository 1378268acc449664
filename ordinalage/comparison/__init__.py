"""The bake-off (`ordinalage bakeoff`, `ordinalage.bakeoff(...)`): methods compared on the same
faces, cell by cell, with paired statistics.

`spec.py` says what is compared, `runner.py` runs the cells (an Optuna grid study on the tune
storages), `analysis.py` turns finished cells into paired differences and tests, `outputs.py`
writes the tables and plots, `bakeoff.py` ties them together (`run_bakeoff`, `write_report`).
"""
