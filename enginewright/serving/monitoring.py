"""Monitoring rendered with each release: a Prometheus scrape config and alerting rules for the runtime's own metrics.

    releases/v3-…/prometheus/scrape.yml    one scrape job for the release's endpoint (the runtime's metrics path)
    releases/v3-…/prometheus/alerts.yml    alerting rules, each summary naming the model and version
    releases/v3-…/prometheus/alerts_test.yml   `promtool test rules` cases on synthetic series (CI runs them)

Every metric name comes from the runtime's source (each runtime module's `METRICS`, cited there). Thresholds:
- p99 time per output token above the target's `alerts.tpot_p99_s` (each reply streaming too slowly). There is no
  rule on total tokens/s: live traffic's tokens/s follows the traffic, and the build's trtllm-bench figure is a
  saturation ceiling (unbounded concurrency), so "below the benchmark" would page on every quiet hour;
- p99 time to first token above the target's `alerts.ttft_p99_s`;
- requests waiting above `alerts.queue_depth`; error share above `alerts.error_rate`; share of requests finishing on
  `length` (the reply cut off at max_tokens) above `alerts.length_share`.
Each rule's rate window is `alerts.window`, and it must hold that long (`for`) before it fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from enginewright.serving.runtimes import RUNTIMES
from enginewright.serving.runtimes.tensorrt_llm import OUTPUT_THROUGHPUT
from enginewright.serving.targets import AlertPolicy


@dataclass(frozen=True)
class ReleaseLabels:
    model: str
    version: str
    target: str
    job: str

    def summary_suffix(self) -> str:
        return f"{self.model} version {self.version} on {self.target}"


def build_throughput(manifest: dict[str, Any]) -> float | None:
    """The build's GPU-measured output tokens/s (trtllm-bench, engine lane), or None."""
    value = ((manifest.get("engine") or {}).get("bench") or {}).get(OUTPUT_THROUGHPUT)
    return float(value) if isinstance(value, int | float) and value > 0 else None


def scrape_config(runtime: str, labels: ReleaseLabels, address: str, interval: str = "15s") -> dict[str, Any]:
    metrics = RUNTIMES[runtime].metrics
    job: dict[str, Any] = {
        "job_name": labels.job, "metrics_path": metrics.metrics_path, "scrape_interval": interval,
        "static_configs": [{"targets": [address], "labels": {"model": labels.model, "version": labels.version,
                                                              "deploy_target": labels.target}}],
    }
    if metrics.relabel:
        job["metric_relabel_configs"] = [dict(r) for r in metrics.relabel]
    return {"scrape_configs": [job]}


def alert_rules(runtime: str, labels: ReleaseLabels, thresholds: AlertPolicy) -> dict[str, Any]:
    m, t, w = RUNTIMES[runtime].metrics, thresholds, thresholds.window
    sel = f'job="{labels.job}"'
    who = labels.summary_suffix()
    finished = f"sum(rate({m.success}{{{sel}}}[{w}]))"
    failed = (f"sum(rate({m.errors}{{{sel}}}[{w}]))" if m.errors
              else f'sum(rate({m.success}{{{sel},finished_reason=~"abort|error"}}[{w}]))')
    rules: list[dict[str, Any]] = [
        # Blind monitoring is an outage of monitoring: the target down or unscraped (`up` 0 or absent), or up but
        # without the runtime's request counter (e.g. trtllm-serve without `return_perf_metrics` mounts no
        # /prometheus/metrics, and an endpoint may answer with some other exporter's page).
        _rule("ReleaseMetricsMissing", f"up{{{sel}}} == 0 or absent(up{{{sel}}}) or absent({m.success}{{{sel}}})",
              t.window, f"no {m.success} scraped from the endpoint (down, unscraped, or its metrics are off): {who}",
              labels),
        _rule("ReleaseTTFTHigh",
              f"histogram_quantile(0.99, sum by (le) (rate({m.ttft}_bucket{{{sel}}}[{w}]))) > {t.ttft_p99_s:g}",
              t.window, f"p99 time to first token above {t.ttft_p99_s:g} s: {who}", labels),
        _rule("ReleaseTokenLatencyHigh",
              f"histogram_quantile(0.99, sum by (le) (rate({m.time_per_output_token}_bucket{{{sel}}}[{w}]))) "
              f"> {t.tpot_p99_s:g}", t.window, f"p99 time per output token above {t.tpot_p99_s:g} s: {who}", labels),
        _rule("ReleaseQueueDeep", f"max({m.waiting}{{{sel}}}) > {t.queue_depth}", t.window,
              f"more than {t.queue_depth} requests waiting: {who}", labels),
        _rule("ReleaseErrorRate", f"{failed} / clamp_min({failed} + {finished}, 1e-9) > {t.error_rate:g}", t.window,
              f"more than {100 * t.error_rate:g} % of requests failing: {who}", labels),
        _rule("ReleaseRepliesCutOff",
              f'sum(rate({m.success}{{{sel},finished_reason="length"}}[{w}])) / clamp_min({finished}, 1e-9) '
              f"> {t.length_share:g}", t.window,
              f"more than {100 * t.length_share:g} % of replies cut off at max_tokens: {who}", labels),
    ]
    return {"groups": [{"name": f"enginewright-{labels.job}", "rules": rules}]}


def _rule(name: str, expr: str, for_: str, summary: str, labels: ReleaseLabels) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": for_,
            "labels": {"severity": "page", "model": labels.model, "version": labels.version},
            "annotations": {"summary": summary}}


def rules_test(runtime: str, labels: ReleaseLabels, thresholds: AlertPolicy) -> dict:
    """`promtool test rules` cases on synthetic series: a healthy release alerts nothing; a sick one fires every
    rendered rule, each with its summary naming the version. Counters grow per minute; the window is 5 minutes."""
    m, t = RUNTIMES[runtime].metrics, thresholds
    job = f'job="{labels.job}"'
    slow_bucket = f"{t.ttft_p99_s * 4:g}"
    fast_bucket = f"{t.ttft_p99_s / 4:g}"
    # GPU-shaped per-token latencies: vLLM 0.26.0 on an H100 streamed at ITL p99 3.5 ms (concurrency 4) to 44 ms
    # (256) (docs/results.md); a sick release at four times the threshold
    quick_token, slow_token = "0.005", f"{t.tpot_p99_s * 4:g}"

    def series(healthy: bool) -> list[dict[str, str]]:
        out = [
            {"series": f"up{{{job}}}", "values": "1x30" if healthy else "0x30"},
            {"series": f'{m.success}{{{job},finished_reason="stop"}}', "values": "0+100x30" if healthy else "0+50x30"},
            {"series": f'{m.success}{{{job},finished_reason="length"}}', "values": "0+1x30" if healthy else "0+50x30"},
            {"series": f'{m.ttft}_bucket{{{job},le="{fast_bucket}"}}', "values": "0+101x30" if healthy else "0+1x30"},
            {"series": f'{m.ttft}_bucket{{{job},le="{slow_bucket}"}}', "values": "0+101x30" if healthy else "0+1x30"},
            {"series": f'{m.ttft}_bucket{{{job},le="+Inf"}}', "values": "0+101x30" if healthy else "0+100x30"},
            {"series": f"{m.waiting}{{{job}}}", "values": f"{max(t.queue_depth // 2, 0)}x30" if healthy
             else f"{t.queue_depth * 3}x30"},
            {"series": f'{m.time_per_output_token}_bucket{{{job},le="{quick_token}"}}',
             "values": "0+100x30" if healthy else "0+1x30"},
            {"series": f'{m.time_per_output_token}_bucket{{{job},le="{slow_token}"}}',
             "values": "0+100x30" if healthy else "0+1x30"},
            {"series": f'{m.time_per_output_token}_bucket{{{job},le="+Inf"}}', "values": "0+100x30"},
        ]
        if m.errors:
            out.append({"series": f"{m.errors}{{{job}}}", "values": "0+0x30" if healthy else "0+30x30"})
        else:
            out.append({"series": f'{m.success}{{{job},finished_reason="abort"}}',
                        "values": "0+0x30" if healthy else "0+30x30"})
        return out

    rules = alert_rules(runtime, labels, thresholds)["groups"][0]["rules"]
    # The missing-metrics alert keeps the series' `job` (from `up`, or absent()'s equality matcher); the others
    # aggregate it away.
    sick = [{"eval_time": "20m", "alertname": rule["alert"],
             "exp_alerts": [{"exp_labels": {**rule["labels"], **({"job": labels.job} if rule["alert"] ==
                                                                  "ReleaseMetricsMissing" else {})},
                             "exp_annotations": rule["annotations"]}]} for rule in rules]
    calm = [{"eval_time": "20m", "alertname": rule["alert"], "exp_alerts": []} for rule in rules]
    # A scrape that never happened: nothing at all for the job; only the missing-metrics rule can see that.
    missing = next(rule for rule in rules if rule["alert"] == "ReleaseMetricsMissing")
    unscraped = [{"eval_time": "20m", "alertname": "ReleaseMetricsMissing",
                  "exp_alerts": [{"exp_labels": {**missing["labels"], "job": labels.job},
                                  "exp_annotations": missing["annotations"]}]}]
    return {"rule_files": ["alerts.yml"], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series(True), "alert_rule_test": calm},
                      {"interval": "1m", "input_series": series(False), "alert_rule_test": sick},
                      {"interval": "1m", "input_series": [{"series": 'up{job="another-release"}', "values": "1x30"}],
                       "alert_rule_test": unscraped}]}


def render_monitoring(runtime: str, labels: ReleaseLabels, address: str, thresholds: AlertPolicy) -> dict[str, str]:
    """File name → YAML text of the release's prometheus/ folder."""
    head = f"# Rendered by enginewright deploy for {labels.summary_suffix()}; metric names: {RUNTIMES[runtime].metrics.source}\n"
    return {
        "scrape.yml": head + yaml.safe_dump(scrape_config(runtime, labels, address), sort_keys=False),
        "alerts.yml": head + yaml.safe_dump(alert_rules(runtime, labels, thresholds), sort_keys=False, width=200),
        "alerts_test.yml": head + yaml.safe_dump(rules_test(runtime, labels, thresholds), sort_keys=False, width=200),
    }
