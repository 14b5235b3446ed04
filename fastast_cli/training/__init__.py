"""Training: configuration, losses, reproducible sampling, DDP and the shared loop."""
