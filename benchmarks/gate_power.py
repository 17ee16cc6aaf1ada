"""The gate's power curve: the chance that a harmless candidate (true difference 0) passes one task, by documents
planned, discordance (the share of documents where baseline and candidate disagree) and margin, for the sequential
gate (looks of 100 documents) — the normal approximation that `tests/test_gate_error_rates.py` checks against
simulation. docs/gate.md carries this table; tests/test_gate_power_doc.py fails when they drift apart.

    .venv/bin/python benchmarks/gate_power.py
"""

from __future__ import annotations

from enginewright.paired_stats import documents_for_power, sequential_power

DOCUMENTS = (250, 500, 800, 1000, 2000, 4000, 8000)
DISCORDANCE = (0.02, 0.05, 0.10)
MARGINS_POINTS = (1.0, 2.0, 3.0)
LOOK = 100
ALPHA = 0.025


def power_table() -> str:
    header = "| margin | discordance | " + " | ".join(f"n = {n}" for n in DOCUMENTS) + " | n for 80 % (fixed n) |"
    rule = "|---|---|" + "---|" * len(DOCUMENTS) + "---|"
    rows = []
    for margin in MARGINS_POINTS:
        for discordance in DISCORDANCE:
            if margin / 100 >= discordance:
                continue
            powers = [sequential_power(n, LOOK, discordance, 0.0, margin / 100, ALPHA) for n in DOCUMENTS]
            needed = documents_for_power(discordance, margin / 100, ALPHA)
            rows.append(f"| {margin:.0f} pt | {100 * discordance:.0f} % | "
                        + " | ".join(f"{100 * p:.0f} %" for p in powers) + f" | {needed:,} |")
    return "\n".join([header, rule, *rows])


if __name__ == "__main__":
    print(power_table())
