"""The Determined side of training: the trial, its training step, optimiser, evaluation and checkpoints."""
