"""Training: run configs, the training loop shared by every task, checkpoints, evaluation."""
