"""The merge arithmetic the lab's ``sfplus merge`` uses: the library's, plus when to warn.

The merge itself (the three modes, W from an optimizer state, x from weights saved in train mode) is
``sfplus.merge``, a library module a user can call without the lab; it says why averaging checkpoints is
sound. The names the lab used before are kept here: ``weight_sums_by_name`` is
``sfplus.merge.averaging_weights`` and ``x_from_train_state`` is ``sfplus.merge.weights_at_x``. What stays
lab-only is :func:`merge_warnings`, which cites the lab's measurements (docs/averaging.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from sfplus.merge import (
    MERGE_MODES,
    averaging_weights,
    combine,
    merge_coefficients,
    saved_in_eval_mode,
    weights_at_x,
)

__all__ = [
    "MERGE_MODES",
    "SPREAD_WARNING",
    "combine",
    "merge_coefficients",
    "merge_warnings",
    "saved_in_eval_mode",
    "weight_sums_by_name",
    "x_from_train_state",
]

weight_sums_by_name = averaging_weights
x_from_train_state = weights_at_x


#: A merge of one run's checkpoints whose oldest is before this fraction of the newest's step gets a warning.
SPREAD_WARNING = 0.9


def merge_warnings(mode: str, steps: Sequence[int], weight_sums: Sequence[float | None], one_run: bool) -> list[str]:
    """Why a merge is likely worse than its newest input (measured in docs/averaging.md, "What merging did").

    A warning for a ``window`` merge that starts after the warm start (it averages z, the noisy base iterate,
    over the window only), and for other merges of one run whose oldest checkpoint is before
    ``SPREAD_WARNING`` of the newest's step. ``weight_sums`` holds each checkpoint's W when all parameter
    groups share one (else None).
    """
    out: list[str] = []
    if mode == "window" and len(steps) >= 2:
        w_first, w_last = weight_sums[0], weight_sums[-1]
        if w_first is None or w_last is None or w_first > 0:
            share = "" if not w_last or w_first is None else f", {1 - w_first / w_last:.0%} of the averaging weight"
            out.append(
                f"a window merge averages the base iterate z over steps {steps[0]}-{steps[-1]} only{share}; it was "
                "worse than the last checkpoint in every measured case (much worse for a window of few steps); "
                "the last checkpoint alone already averages the whole run (docs/averaging.md)"
            )
    elif one_run and len(set(steps)) > 1 and min(steps) < SPREAD_WARNING * max(steps):
        out.append(
            f"these checkpoints of one run span steps {min(steps)}-{max(steps)}: averaging checkpoints far apart "
            f"(the oldest before {SPREAD_WARNING:.0%} of the newest's step) was worse than the newest checkpoint "
            "alone in every measured case, which already averages the whole run (docs/averaging.md)"
        )
    return out
