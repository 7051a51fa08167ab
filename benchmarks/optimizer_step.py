"""Time and peak memory of one optimizer step: ScheduleFree+ against fused AdamW and SF-AdamW.

    python benchmarks/optimizer_step.py --sizes 1m 15m 100m --out benchmarks/results/step_cpu.json

The code lives in ``sfplus_lab.bench.step`` (also ``python -m sfplus_lab.bench.step``) so that it is
tested with the package; this file is the entry point RESULTS.md cites.
"""

import sys

from sfplus_lab.bench.step import main

if __name__ == "__main__":
    sys.exit(main())
