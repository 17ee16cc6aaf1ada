"""What a finished build prints for a person: the version, where its bundle and runs are, the gate's table, and a
note where the version's verdict was not this run's to make."""

from __future__ import annotations

from typing import Any

from enginewright.config.redact import redact_url


def build_summary(outcome: Any, tracking_uri: str) -> str:
    """The summary of a flows.build.BuildOutcome (no secret of the tracking URI in it)."""
    reg = outcome.registered
    state = "registered by this run" if outcome.registered_now else "already registered (same build key)"
    aliases = f" @{', @'.join(reg.aliases)}" if reg.aliases else ""
    runs = f"run {reg.run_id}" if outcome.evaluation_run_id in ("", reg.run_id) else \
        f"the version's run {reg.run_id}; this evaluation's run {outcome.evaluation_run_id}"
    engine = outcome.engine
    lines = [f"\nmodel version: {reg.name} v{reg.version}{aliases} — {state}",
             f"build key:     {outcome.build_key}",
             f"bundle:        {reg.source}",
             f"mlflow:        {redact_url(tracking_uri)} ({runs})",
             f"engine:        {engine['status']}" + (f" — {engine['reason']}" if engine.get("reason") else ""),
             f"\n{'task':<15}{'metric':<10}{'docs':>11}{'baseline':>10}{'candidate':>11}{'Δ points':>10}"
             f"{'interval':>16}{'allowed':>9}{'p (pass at)':>20}  verdict"]
    gate = outcome.gate
    for row in gate["tasks"]:
        ci = f"[{row['ci_low_points']:+.1f}, {row['ci_high_points']:+.1f}]"
        docs = f"{row['n']}/{row['documents_planned']}"
        p = f"{row['p_noninferiority']:.2g} (≤{row['alpha_at_look']:.2g})"
        lines.append(f"{row['task']:<15}{row['metric']:<10}{docs:>11}{100 * row['baseline']:>10.2f}"
                     f"{100 * row['candidate']:>11.2f}{row['difference_points']:>+10.2f}{ci:>16}"
                     f"{-row['allowed_drop_points']:>9.2f}{p:>20}  {row['verdict']}")
    lines.append(f"\n{gate['message']}")
    return "\n".join(lines)


def build_note(outcome: Any) -> str | None:
    """What a person should know beside the summary (printed to stderr): a verdict left as it was, or an
    inconclusive gate and what (not) to do about it."""
    if outcome.evaluated_again:
        return f"note: {outcome.evaluated_again}"
    if outcome.gate["overall"] == "inconclusive":
        return ("warning: the gate is inconclusive: the plan ran out of documents before the test decided; the "
                "version has no `candidate` alias. Raising evaluation.limit afterwards is a second look at the same "
                "data (docs/gate.md); plan a larger one up front, or allow a larger drop")
    return None
