#!/usr/bin/env bash
# The exact commands behind benchmarks/RESULTS.md. Run from the repository root after
# `pip install -e ".[bench]"`. On this project's 2-core CPU box the quality benchmark takes about an hour;
# rerunning a command resumes it (finished runs are read back from --out/runs/).
set -euo pipefail

# 1. The corpus: six public-domain texts from pinned Debian packages (~30 MB of bytes).
sfplus data fetch

# 2. The quality benchmark: ScheduleFree+ (the lab's fixed default) against swept AdamW-WSD / cosine /
#    linear decay and Schedule-Free AdamW at 20, 100 and 1000 tokens per parameter.
sfplus bench --data debian --out benchmarks/results/quality_cpu_debian

# 3. The step benchmark: one optimizer step at ~1M, 15M and 100M parameters in GPT-like shapes.
python benchmarks/optimizer_step.py --sizes 1m 15m 100m --repeats 15 \
    --out "benchmarks/results/step_cpu_$(date -u +%Y%m%dT%H%M).json"
