"""Evaluation: inference throughput and FLOPs (metrics arrive with the training milestone)."""
