"""Evaluation: dataset loaders, metrics, runners and reports. Nothing imports this package."""
