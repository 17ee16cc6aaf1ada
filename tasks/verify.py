"""The verify step's checks of a switched release against its target's endpoint, as plain functions and tasks.

1. ready: the endpoint serves the release's model id (and runtime version) within `verify.ready_timeout_s`;
2. golden replay: the build's greedy continuations (enginewright.serving.golden) asked again, exact-match share;
3. subset: the build's lettered evaluation subset asked through lm-eval's `local-completions` model, answers paired
   per document with the build's (agreement; exact McNemar on correctness) — this checks the deployment, not the
   quantization again (the gate did that);
4. load: a short fixed-concurrency run (tasks/load_test.py), output tokens/s and TTFT/ITL percentiles, compared with
   the build's GPU-measured figure where one exists.

`judge` turns the four into one verdict with every reason; flows/verify.py records it and rolls back a failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from enginewright.errors import InputError
from enginewright.serving.golden import (
    ANSWER_MAX_TOKENS,
    AnswerComparison,
    Golden,
    ReplayReport,
    answers_of,
    compare_answers,
    compare_continuations,
    requests_of,
)
from enginewright.serving.monitoring import build_throughput
from enginewright.serving.openai_endpoint import Endpoint, EndpointError, Readiness, wait_until_serving
from enginewright.serving.runtimes import RUNTIMES
from enginewright.serving.serving_runtimes import simulation_mismatch
from enginewright.serving.targets import DeployTarget


@dataclass
class VerificationReport:
    model: str
    version: str
    target: str
    endpoint: str
    ready: Readiness | None = None
    replay: ReplayReport | None = None
    subset: AnswerComparison | None = None
    load: dict[str, float] | None = None
    reasons: list[str] = field(default_factory=list)  # why it failed; empty: verified
    notes: list[str] = field(default_factory=list)  # what was not checked, and why
    seconds: dict[str, float] = field(default_factory=dict)  # check → wall seconds (ready, replay, subset, load)

    @property
    def passed(self) -> bool:
        return not self.reasons

    def summary(self) -> str:
        if self.passed:
            return "verified: " + "; ".join(self.figures())
        figures = self.figures()
        return "verification failed: " + "; ".join(self.reasons) + (f" [{'; '.join(figures)}]" if figures else "")

    def figures(self) -> list[str]:
        out = []
        if self.ready is not None:
            out.append(f"serving after {self.ready.seconds:.1f} s" if self.ready.ready
                       else f"not serving after {self.ready.seconds:.1f} s")
        if self.replay is not None:
            out.append(f"golden {self.replay.matched}/{self.replay.total} exact, "
                       f"{100 * self.replay.prefix_share:.0f} % shared before diverging")
        if self.subset is not None:
            out.append(f"subset {self.subset.agreeing}/{self.subset.documents} answers agree, McNemar p "
                       f"{self.subset.mcnemar_p:.3g}")
        if self.load is not None:
            out.append(f"{self.load['output_tokens_per_s']:.1f} output tokens/s at concurrency "
                       f"{self.load['concurrency']:g}, TTFT p99 {self.load['ttft_p99_s']:.3f} s")
        return out


def require_endpoint(target: DeployTarget) -> None:
    if target.endpoint is None:
        raise InputError(f"target {target.name!r} names no endpoint: add `endpoint: http://host:port` (where its "
                         "serving host answers the OpenAI API) to verify a release there")


def expected_model_id(deployment: dict[str, Any]) -> str:
    """The id the release's serving command makes the endpoint report on /v1/models."""
    return RUNTIMES[deployment["runtime"]].served_model_id(deployment)


def replay_golden(endpoint: Endpoint, model_id: str, golden: Golden) -> ReplayReport:
    served = [endpoint.complete(model_id, c.prompt, golden.max_new_tokens) for c in golden.continuations]
    return compare_continuations(golden.continuations, served)


def subset_lm(endpoint: Endpoint, model_id: str, tokenizer_dir: Path) -> Any:
    """lm-eval's OpenAI-compatible completions model against the endpoint (prompts sent as text, greedy)."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    return LocalCompletionsAPI(base_url=f"{endpoint.base_url}/v1/completions", model=model_id,
                               tokenizer_backend="huggingface", tokenizer=str(tokenizer_dir),
                               tokenized_requests=False, max_gen_toks=ANSWER_MAX_TOKENS, num_concurrent=1,
                               max_retries=1, timeout=120)


def ask_subset(endpoint: Endpoint, model_id: str, tokenizer_dir: Path, golden: Golden) -> AnswerComparison:
    from tasks.golden import generate_requests

    requests = requests_of(golden.answers)
    served = answers_of(requests, generate_requests(subset_lm(endpoint, model_id, tokenizer_dir), requests))
    return compare_answers(golden.answers, served)


def judge(report: VerificationReport, target: DeployTarget, manifest: dict[str, Any]) -> VerificationReport:
    """Fill `reasons` from the figures and the target's verify policy."""
    policy = target.verify
    if report.ready is not None and not report.ready.ready:
        report.reasons.append(f"the endpoint {report.endpoint} did not serve version {report.version} within "
                              f"{policy.ready_timeout_s:g} s: {report.ready.detail}")
    if report.replay is not None and report.replay.prefix_share < policy.min_golden_prefix:
        report.reasons.append(f"golden replay: the served continuations share {100 * report.replay.prefix_share:.0f} % "
                              f"of the build's before diverging (needs {100 * policy.min_golden_prefix:g} %; "
                              f"{report.replay.matched} of {report.replay.total} equal); furthest: "
                              f"{report.replay.first_mismatch}")
    subset = report.subset
    if subset is not None and subset.agreement < policy.min_subset_agreement:
        report.reasons.append(f"evaluation subset: {subset.agreeing} of {subset.documents} answers equal the "
                              f"build's (needs {100 * policy.min_subset_agreement:g} %)")
    if subset is not None and subset.served_correct < subset.build_correct and subset.mcnemar_p < policy.mcnemar_alpha:
        report.reasons.append(f"evaluation subset: the endpoint answers {subset.served_correct} of {subset.documents} "
                              f"right, the build {subset.build_correct} (McNemar p {subset.mcnemar_p:.3g} < "
                              f"{policy.mcnemar_alpha:g})")
    if report.load is not None:
        if report.load.get("errors", 0) > 0:
            report.reasons.append(f"load test: {report.load['errors']:g} of {report.load['requests']:g} requests "
                                  "failed")
        if report.load["ttft_p99_s"] > policy.max_ttft_p99_s:
            report.reasons.append(f"load test: p99 time to first token {report.load['ttft_p99_s']:.3f} s at "
                                  f"concurrency {report.load['concurrency']:g}, above {policy.max_ttft_p99_s:g} s")
        measured = build_throughput(manifest)
        if measured is not None:  # a saturation figure: shown beside the test's, never a pass/fail yardstick
            report.notes.append(f"the build's trtllm-bench figure, {measured:.1f} output tokens/s, was measured at "
                                "unbounded concurrency: not compared with the load test's")
    return report


@contextmanager
def timed(report: VerificationReport, check: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        report.seconds[check] = time.perf_counter() - started


@task(name="verify-release", cache_policy=NO_CACHE)
def verify_release_task(deployment: dict[str, Any], golden: Golden | None, manifest: dict[str, Any],
                        target: DeployTarget, bundle_dir: Path) -> VerificationReport:
    """Every check, in order; a check that cannot run on a not-ready endpoint is not run (the wait already failed)."""
    from tasks.load_test import run_load_test

    assert target.endpoint is not None  # the flow refuses a target without one first
    endpoint = Endpoint(target.endpoint)
    report = VerificationReport(deployment["model"], deployment["version"], target.name, target.endpoint)
    model_id = expected_model_id(deployment)
    # Both runtimes answer /version with {"version": ...} (vLLM 0.26.0: recorded, tests/test_vllm_recordings.py)
    report.ready = wait_until_serving(endpoint, model_id, target.served_runtime_version, target.verify.ready_timeout_s)
    report.seconds["ready"] = report.ready.seconds
    if not report.ready.ready:
        return judge(report, target, manifest)
    try:
        mismatch = simulation_mismatch(deployment.get("quantization"), target.capability)
        if golden is None:
            report.notes.append("the bundle has no golden records (built before they existed): replay and subset "
                                "not checked")
        elif mismatch is not None:
            report.notes.append(f"golden records not used: {mismatch}; replay and subset not checked")
        else:
            with timed(report, "replay"):
                report.replay = replay_golden(endpoint, model_id, golden)
            if golden.answers:
                with timed(report, "subset"):
                    report.subset = ask_subset(endpoint, model_id, bundle_dir / "checkpoint", golden)
        if target.verify.load_requests > 0:
            with timed(report, "load"):
                report.load = run_load_test(endpoint, model_id, bundle_dir / "checkpoint", target.verify)
    except EndpointError as exc:
        report.reasons.append(f"the endpoint stopped answering: {exc}")
    except Exception as exc:  # a check that cannot finish is no pass: the release must not stay unverified
        report.reasons.append(f"verification could not finish: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return judge(report, target, manifest)
