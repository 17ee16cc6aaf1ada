"""Retries are for what can get better: a timeout, a flaky server. Bad input and bytes that fail verification
are final on the first try (a tampered bundle was downloaded three times before it was refused)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from enginewright.errors import BundleVerificationError, ExportVerificationError, InputError, StoreError
from enginewright.retries import retry_unless_input_error


def failed_with(exc: Exception) -> SimpleNamespace:
    def result() -> None:
        raise exc

    return SimpleNamespace(result=result)


@pytest.mark.parametrize("exc", [InputError("bad"), BundleVerificationError("bundle file x does not match"),
                                 ExportVerificationError("w: expected 1, found 2")])
def test_permanent_failures_are_not_retried(exc: Exception) -> None:
    assert retry_unless_input_error(None, None, failed_with(exc)) is False


def test_transient_failures_are_retried() -> None:
    assert retry_unless_input_error(None, None, failed_with(StoreError("S3 did not answer"))) is True
    assert retry_unless_input_error(None, None, failed_with(TimeoutError())) is True


def test_the_deploy_pull_does_not_retry_a_failed_verification() -> None:
    from tasks.deploy import pull_and_verify

    assert pull_and_verify.retry_condition_fn is retry_unless_input_error


def test_the_build_summary_never_prints_a_password_of_the_tracking_uri(capsys, monkeypatch) -> None:
    from enginewright.cli import print_summary
    from enginewright.settings import Settings

    monkeypatch.setenv("ENGINEWRIGHT_MLFLOW_TRACKING_URI", "http://builder:hunter2@mlflow.internal:5000")
    gate = {"tasks": [], "message": "all tasks pass", "overall": "pass"}
    outcome = SimpleNamespace(registered=SimpleNamespace(name="m", version="1", aliases=[], source="s3://b/k",
                                                         run_id="r"),
                              registered_now=True, build_key="k", engine={"status": "skipped"}, gate=gate,
                              bundle_bytes=1)
    print_summary(outcome, Settings())
    out = capsys.readouterr().out
    assert "hunter2" not in out and "http://builder:***@mlflow.internal:5000" in out
