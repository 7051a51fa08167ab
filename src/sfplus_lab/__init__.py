"""sfplus_lab: the training lab (small GPT, real text, `sfplus train`, checkpoints, benchmarks).

Depends on the ``sfplus`` library and torch (plus numpy, matplotlib and tqdm from the ``train`` extra).
"""
