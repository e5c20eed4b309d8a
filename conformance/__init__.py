"""Conformance suite: every backend shows the gradient decay the core predicts."""
