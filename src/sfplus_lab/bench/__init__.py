"""Benchmarks: the cost of one optimizer step (``step``) and the quality benchmark behind ``sfplus bench``."""
