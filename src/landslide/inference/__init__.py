"""Prediction: batched (test-time-augmented) probabilities and the fold ensemble."""
