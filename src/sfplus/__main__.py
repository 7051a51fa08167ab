"""``sfplus`` / ``python -m sfplus``: the command line lives in the training lab (``sfplus_lab.cli``).

The library itself needs torch alone; the lab is imported only when the command line runs.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    try:
        from sfplus_lab.cli import main as lab_main
    except ImportError as exc:  # pragma: no cover - only without the lab's extras
        print(f"sfplus: the command line needs the training lab's extras: pip install 'sfplus[train]' ({exc})",
              file=sys.stderr)
        return 2
    return lab_main(argv)


if __name__ == "__main__":
    sys.exit(main())
