"""The gate's figures in docs/gate.md, computed: the power table — the chance that a harmless candidate (true
difference 0) passes one task, by documents planned, discordance (the share of documents where baseline and
candidate disagree) and margin, for the sequential gate (looks of 100 documents), **exact** (the dynamic program of
enginewright/gate/gate_exact.py; a statistician's independent computation found the normal approximation 2–3 points
high at small n) — and the main job's boundary and error figures. tests/test_gate_power_doc.py fails when the
document and this drift apart.

    .venv/bin/python benchmarks/gate_power.py
"""

from __future__ import annotations

from enginewright.gate.gate_exact import rates_at
from enginewright.gate.paired_stats import documents_for_power, look_plan, spending_boundaries

DOCUMENTS = (250, 500, 800, 1000, 2000, 4000, 8000)
DISCORDANCE = (0.02, 0.05, 0.10)
MARGINS_POINTS = (1.0, 2.0, 3.0)
LOOK = 100
ALPHA = 0.025


MAIN_JOB = {"planned": 800, "look": 100, "margin": 0.03, "discordance": 0.05, "tasks": 3, "bad_drop": 0.0475}


def power_table() -> str:
    header = ("| margin | discordance | " + " | ".join(f"n = {n}" for n in DOCUMENTS)
              + " | n for 80 % (fixed n, normal approx.) |")
    rule = "|---|---|" + "---|" * len(DOCUMENTS) + "---|"
    rows = []
    for margin in MARGINS_POINTS:
        for discordance in DISCORDANCE:
            if margin / 100 >= discordance:
                continue
            powers = [rates_at(look_plan(n, LOOK), discordance, 0.0, margin / 100, ALPHA).passed for n in DOCUMENTS]
            needed = documents_for_power(discordance, margin / 100, ALPHA)
            rows.append(f"| {margin:.0f} pt | {100 * discordance:.0f} % | "
                        + " | ".join(f"{100 * p:.0f} %" for p in powers) + f" | {needed:,} |")
    return "\n".join([header, rule, *rows])


def first_boundary_sentence() -> str:
    plan = look_plan(MAIN_JOB["planned"], MAIN_JOB["look"])
    first = spending_boundaries(tuple(n / plan[-1] for n in plan), ALPHA)[0]
    return f"a pass at look 1 of {len(plan)} needs Z ≥ {first:.2f}"


def main_job_sentence() -> str:
    m = MAIN_JOB
    plan = look_plan(m["planned"], m["look"])
    harmless = rates_at(plan, m["discordance"], 0.0, m["margin"], ALPHA).passed
    bad = rates_at(plan, m["discordance"], -m["bad_drop"], m["margin"], ALPHA).failed
    return (f"At {100 * m['discordance']:.0f} % discordance a harmless candidate passes each task with "
            f"{100 * harmless:.1f} % probability and all {m['tasks']} with {100 * harmless ** m['tasks']:.1f} %; a "
            f"candidate that drops {100 * m['bad_drop']:.2f} points fails a task with {100 * bad:.1f} % (exact, "
            "independent documents).")


if __name__ == "__main__":
    print(power_table())
    print(first_boundary_sentence())
    print(main_job_sentence())
