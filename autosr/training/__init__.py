"""Training: patch data pipeline, augmentation, losses, trainers (registry `TRAINERS`), end-of-fold validation,
and `train_fold` (the function behind `autosr train`)."""
