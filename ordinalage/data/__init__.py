"""The shared dataset layer: sources, age groups, splits, sampling, augmentation, Dataset."""
