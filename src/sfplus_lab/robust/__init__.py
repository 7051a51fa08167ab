"""The robustness suite: ScheduleFree+ with no arguments on problems where a step-size rule can fail.

``python -m sfplus_lab.robust --out DIR`` runs every problem of ``problems.PROBLEMS`` for several seeds
under each configuration (the library's default, the paper's exact update, safeguard ablations, AdamW with
a learning rate tuned on a short sweep) and writes ``results.json`` and ``summary.md``.
"""
