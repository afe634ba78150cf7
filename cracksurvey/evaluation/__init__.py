"""Evaluation helpers that need no model: synthetic cracks with exact ground truth."""
