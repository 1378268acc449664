"""Pure numpy on predictions: label distributions decoded, adapted to a new age mix, calibrated,
averaged over ensemble members, turned into intervals, and scored. No torch, no run folders."""
