"""Summarise a folder of alternating runs: per tree and size, sfplus-default / adamw-fused of each run (median ms
of the same run), and sfplus-default's median ms. Usage: python summarize.py FOLDER [TREE ...]"""
import json
import statistics as st
import sys
from pathlib import Path

folder = Path(sys.argv[1])
for which in sys.argv[2:] or ("before", "after"):
    for size in ("15m", "1m"):
        ratios, ms, commits, loads = [], [], set(), []
        for path in sorted(folder.glob(f"{which}_run*.json")):
            doc = json.loads(path.read_text())
            rows = {(r["size"], r["method"]): r for r in doc["results"]}
            adamw, sfplus = rows[(size, "adamw-fused")]["median_ms"], rows[(size, "sfplus-default")]["median_ms"]
            ratios.append(sfplus / adamw)
            ms.append(sfplus)
            commits.add(doc["meta"]["commit"][:7] + ("+dirty" if doc["meta"]["src_dirty"] else ""))
            loads.append(doc["meta"]["load_avg_1m"])
        print(f"{which:6} {size:4} ratios {', '.join(f'{r:.2f}' for r in ratios)} (median {st.median(ratios):.2f}); "
              f"sfplus ms {', '.join(f'{m:.2f}' for m in ms)} (median {st.median(ms):.2f}); "
              f"commits {sorted(commits)}; load {min(loads):.2f}-{max(loads):.2f}")
