"""The cross-validated two-stage training loop."""
