"""Training: patch data pipeline, augmentation, losses, trainers (registry `TRAINERS`), 5-fold splits, and
`train_fold` (the function behind `autosr train`)."""
