"""The step benchmark's arithmetic: the GPT parameter shapes it times, quantiles, ratios, targets, the table.

Pure functions (no timing, no files); ``step.py`` measures and is the command. The shapes are a
nanoGPT-style model's (learned position table, fused qkv), not the lab's GPT (``sfplus_lab.model``: rotary
positions, separate projections) and not its size presets: they stay as they are so that step results
remain comparable with the ones benchmarks/RESULTS.md quotes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["SHAPES", "TARGETS", "GPTShape", "add_ratios", "check_targets", "format_table", "gpt_param_shapes",
           "quantile"]


@dataclass(frozen=True, slots=True)
class GPTShape:
    """The tensor shapes of a GPT with a tied embedding: vocabulary, width, depth, context."""

    vocab_size: int
    d_model: int
    n_layer: int
    seq_len: int


#: Named sizes: about 10k (tests), 1M, 15M (where ``TARGETS`` are checked) and 100M parameters.
SHAPES: dict[str, GPTShape] = {
    "tiny": GPTShape(vocab_size=256, d_model=16, n_layer=2, seq_len=32),
    "1m": GPTShape(vocab_size=2048, d_model=128, n_layer=4, seq_len=256),
    "15m": GPTShape(vocab_size=8192, d_model=384, n_layer=7, seq_len=256),
    "100m": GPTShape(vocab_size=32768, d_model=768, n_layer=10, seq_len=1024),
}


def gpt_param_shapes(shape: GPTShape) -> list[tuple[int, ...]]:
    """The parameter shapes of a nanoGPT-style model without biases, in module order."""
    d, v = shape.d_model, shape.vocab_size
    shapes: list[tuple[int, ...]] = [(v, d), (shape.seq_len, d)]  # tied token embedding, positions
    for _ in range(shape.n_layer):
        shapes += [(d,), (3 * d, d), (d, d), (d,), (4 * d, d), (d, 4 * d)]  # ln1, qkv, proj, ln2, fc, proj
    shapes.append((d,))  # final norm
    return shapes


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def add_ratios(rows: list[dict[str, Any]]) -> None:
    medians = {row["method"]: row["median_ms"] for row in rows}
    for row in rows:
        for base in ("adamw-fused", "sf-adamw"):
            if base in medians:
                row[f"ratio_to_{base}"] = row["median_ms"] / medians[base]


#: The step-time targets, (method, baseline, limit), for the path a user gets by default: at most twice fused
#: AdamW and no slower than SF-AdamW, stated for the 15M size.
TARGETS = (("sfplus-default", "adamw-fused", 2.0), ("sfplus-default", "sf-adamw", 1.0))


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``TARGETS`` wherever both methods were measured (they are stated for the 15M size)."""
    out = []
    for size in dict.fromkeys(row["size"] for row in rows):
        by_method = {row["method"]: row for row in rows if row["size"] == size}
        for method, base, limit in TARGETS:
            if method in by_method and base in by_method:
                ratio = by_method[method][f"ratio_to_{base}"]
                out.append({"size": size, "method": method, "vs": base, "ratio": ratio, "limit": limit,
                            "met": ratio <= limit})
    return out


def format_table(doc: dict[str, Any]) -> str:
    """A Markdown table of the results (what RESULTS.md quotes)."""
    lines = [
        "| size | params | method | median ms | p25-p75 ms | x fused AdamW | x SF-AdamW | state/param "
        "| peak temp MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        peak = r.get("transient_peak_bytes")
        lines.append(
            f"| {r['size']} | {r['num_params'] / 1e6:.2f}M | {r['method']} | {r['median_ms']:.2f} | "
            f"{r['p25_ms']:.2f}-{r['p75_ms']:.2f} | {r.get('ratio_to_adamw-fused', math.nan):.2f} | "
            f"{r.get('ratio_to_sf-adamw', math.nan):.2f} | {r['state_per_param']:.1f} | "
            f"{'' if peak is None else f'{peak / 2**20:.1f}'} |"
        )
    for s in doc["skipped"]:
        lines.append(f"| {s['size']} | | {s['method']} | skipped: {s['reason']} | | | | | |")
    return "\n".join(lines)
