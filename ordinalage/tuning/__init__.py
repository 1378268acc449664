"""Hyper-parameter search with Optuna: the tune YAML (`spec`), search spaces (`space`), study
storage (`storage`), the worker loop (`runner`) and the study's output files (`outputs`).
`ordinalage.tuning.study.run_tune` ties them together."""
