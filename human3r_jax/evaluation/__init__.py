"""Evaluation protocols of the paper's benchmarks, reimplemented from the official code's facts (NumPy, float64)."""
