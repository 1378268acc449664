"""Simulated bake-offs with a known answer, to test the verdict statistics (numpy only).

Absolute errors of method ``m``, run ``r`` (a seed, or a fold) on image ``i``:

    err[m, r, i] = difficulty[i] * (persistent[m, i] + noise[m, r, i]) / 2 + offset[m] + training[m, r]

``difficulty`` is a right-skewed per-image hardness shared by every method (so paired differences
are correlated and heavy-tailed, like real ones); ``persistent`` (how hard this face is for this
method, whatever the seed) and ``noise`` (this run's luck on this face) have mean 1, so the seeds of
one test set share part of their image noise; ``offset[m]`` is the method's
true effect and ``training[m, r]`` the per-run training noise (a normal with sd ``run_sd``). The
expected MAE difference between methods ``a`` and ``b`` over new faces and new seeds is exactly
``offset[a] - offset[b]``: the truth every verdict is judged against.

With ``folds`` each run tests its own images (``images`` split into folds); with ``fold_corr`` the
training noise of one method's folds is correlated (overlapping training sets), as the
Nadeau-Bengio correction assumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ordinalage.evaluation.verdicts import PairedRun


def simulate_errors(offsets: Sequence[float], *, runs: int, images: int, run_sd: float, folds: int = 0,
                    fold_corr: float = 0.0, rng: np.random.Generator) -> tuple[np.ndarray, list[str], list[np.ndarray]]:
    """(errors (methods, runs, images per run), the runs' test-set names, each run's image indices).

    Seeds design (``folds`` 0): every run tests all ``images``. Folds design: ``runs`` = folds x repeats,
    run ``r`` tests fold ``r % folds``."""
    k = len(offsets)
    difficulty = rng.gamma(2.0, 2.5, images)  # mean 5 years, right-skewed
    if folds:
        fold_of = np.arange(images) % folds
        rng.shuffle(fold_of)
        members = [np.flatnonzero(fold_of == f) for f in range(folds)]
        index = [members[r % folds] for r in range(runs)]
        names = [f"fold{r % folds}" for r in range(runs)]
    else:
        index = [np.arange(images)] * runs
        names = ["test"] * runs
    shared = rng.normal(0, run_sd, (k, 1)) * np.sqrt(fold_corr)
    training = shared + rng.normal(0, run_sd, (k, runs)) * np.sqrt(1 - fold_corr)
    size = max(len(ix) for ix in index)
    errors = np.full((k, runs, size), np.nan)
    persistent = rng.gamma(4.0, 0.25, (k, images))  # mean 1
    for r, ix in enumerate(index):
        noise = rng.gamma(4.0, 0.25, (k, ix.size))  # mean 1
        errors[:, r, : ix.size] = (difficulty[ix] * (persistent[:, ix] + noise) / 2 + np.asarray(offsets)[:, None]
                                   + training[:, r : r + 1])
    return errors, names, index


def simulated_pair(errors: np.ndarray, names: list[str], index: list[np.ndarray], a: int, b: int
                   ) -> list[PairedRun]:
    """The paired runs of methods ``a`` and ``b`` from :func:`simulate_errors`."""
    runs = []
    for r, ix in enumerate(index):
        diffs = errors[a, r, : ix.size] - errors[b, r, : ix.size]
        runs.append(PairedRun(names[r], tuple(f"img{i}" for i in ix), diffs))
    return runs
