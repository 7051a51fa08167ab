"""Framework integrations for ScheduleFree+.

Each submodule imports its framework when it is imported, never before, so ``import sfplus`` needs torch
alone:

- :mod:`sfplus.integrations.transformers`: ``ScheduleFreePlusTrainer``, a drop-in ``transformers.Trainer``.
- :mod:`sfplus.integrations.lightning`: ``ScheduleFreePlusCallback`` for PyTorch Lightning.

Frameworks call ``optimizer.step()`` without the loss and evaluate or save whatever the parameters hold;
these integrations hand the optimizer each step's loss and put the average x into the parameters
whenever the model is evaluated, used for prediction or saved.
"""

__all__: list[str] = []
