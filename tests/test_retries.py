"""Retries are for what can get better: a timeout, a flaky server. Bad input and bytes that fail verification
are final on the first try (a tampered bundle was downloaded three times before it was refused)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from enginewright.errors import BundleVerificationError, ExportVerificationError, InputError, StoreError
from enginewright.ops.retries import retry_unless_input_error


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
    from enginewright.config.settings import Settings
    from tasks.summary import build_summary

    monkeypatch.setenv("ENGINEWRIGHT_MLFLOW_TRACKING_URI", "http://builder:hunter2@mlflow.internal:5000")
    gate = {"tasks": [], "message": "all tasks pass", "overall": "pass"}
    outcome = SimpleNamespace(registered=SimpleNamespace(name="m", version="1", aliases=[], source="s3://b/k",
                                                         run_id="r"),
                              registered_now=True, build_key="k", engine={"status": "skipped"}, gate=gate,
                              bundle_bytes=1, evaluated_again=None, evaluation_run_id="r")
    out = build_summary(outcome, Settings().tracking_uri)
    assert "hunter2" not in out and "http://builder:***@mlflow.internal:5000" in out


class _Unavailable:
    """A real HTTP server on 127.0.0.1 that answers every request 503 and counts them."""

    def __enter__(self) -> _Unavailable:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        counter = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                counter.requests += 1
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_HEAD = do_PUT = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


@pytest.mark.parametrize("retries", [0, 1])
def test_one_setting_is_the_retry_count_of_mlflow_and_s3_requests(retries: int, monkeypatch, tmp_path) -> None:
    """ENGINEWRIGHT_SERVER_RETRIES=N: an MLflow request and an S3 request are each sent 1 + N times, no more
    (MLflow's own default of 7 retries inside the step's 3 attempts made one outage cost 12¾ minutes)."""
    from botocore.exceptions import ClientError
    from mlflow.exceptions import MlflowException

    from enginewright.bundle.s3 import s3_client
    from enginewright.config.settings import Settings
    from enginewright.ops.process_env import prepare_process
    from enginewright.registry.registry_client import registry_client

    monkeypatch.setenv("ENGINEWRIGHT_SERVER_RETRIES", str(retries))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")  # the setting wins over MLflow's own knob
    for name in ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "1" if name.startswith("MLFLOW") else "x")
    settings = Settings(home=tmp_path)
    prepare_process(settings)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")  # count the requests, not the waits
    with _Unavailable() as server:
        with pytest.raises(MlflowException):
            registry_client(server.url).get_registered_model("m")
        assert server.requests == 1 + retries
    with _Unavailable() as server:
        client = s3_client(server.url, attempts=settings.transfer.attempts)
        with pytest.raises(ClientError):
            client.get_object(Bucket="b", Key="k")
        assert server.requests == 1 + retries


def test_the_documented_outage_budget_is_the_formula() -> None:
    from enginewright.config.settings import Settings
    from enginewright.ops.retries import outage_wait_s

    description = Settings.model_fields["server_retries"].description or ""
    assert outage_wait_s(2) == 32 and "32 s at N = 2" in description
    assert outage_wait_s(4) == 104 and "104 s at N = 4" in description
    assert outage_wait_s(0) == outage_wait_s(1) == 20  # two 10-s waits between the step's attempts


def test_the_mlflow_knobs_set_before_mlflow_loads_are_mlflows_own_names() -> None:
    import mlflow.environment_variables as knobs

    from enginewright.ops import mlflow_env

    names = {k: v for k, v in vars(mlflow_env).items() if k.startswith("MLFLOW_")}
    assert len(names) == 5 and all(getattr(knobs, k).name == v for k, v in names.items())


def test_the_stack_names_enginewright_settings_from_the_settings_model() -> None:
    from enginewright.config.settings import env_name, env_of

    assert env_name("mlflow_tracking_uri") == "ENGINEWRIGHT_MLFLOW_TRACKING_URI"
    assert env_of(home="/h") == {"ENGINEWRIGHT_HOME": "/h"}
    with pytest.raises(KeyError, match="no setting 'mlflow_uri'"):
        env_name("mlflow_uri")  # a name the settings do not read is an error, not a variable nobody reads


def test_the_device_setting_picks_the_gpus_this_process_sees() -> None:
    from enginewright.ops.process_env import visible_devices

    assert visible_devices("cpu") == "" and visible_devices("cuda:0,2") == "0,2"
    assert visible_devices("cuda") is None and visible_devices(None) is None  # every GPU: left as it is
