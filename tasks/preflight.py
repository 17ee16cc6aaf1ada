"""Check every input before any work starts: a bad value fails in a second, with nothing written or registered."""

from __future__ import annotations

from enginewright.devices import check_format_supported, compute_capability
from enginewright.errors import InputError, RegistryError, StoreError
from enginewright.s3 import S3Location, s3_client
from enginewright.settings import Settings
from enginewright.spec import BuildSpec
from tasks.calibration import calibration_files, check_enough_text
from tasks.checkpoint_sources import source_context
from tasks.eval_data import check_eval_data
from tasks.sources import check_checkpoint_dir, locate_source


def check_inputs(spec: BuildSpec, settings: Settings) -> None:
    from enginewright.models import load_tokenizer

    check_format_supported(spec.quantization.format, compute_capability())
    _, path, _ = locate_source(spec.source, source_context(settings))
    check_checkpoint_dir(path, spec.source)
    check_eval_data(spec.evaluation.data_dir, list(spec.evaluation.tasks), spec.evaluation.num_fewshot)
    calibration_files(spec.calibration)
    check_enough_text(spec.calibration, load_tokenizer(path, spec.source.trust_remote_code))


def check_stores(settings: Settings, timeout_s: float = 5.0) -> None:
    """Before any work, in seconds: the registry answers and the S3 bundle store's bucket exists and takes our
    credentials. (Found after the whole build, an unreachable MLflow cost 12¾ minutes of stacked retries.)"""
    if settings.tracking_uri.startswith(("http://", "https://")):
        _check_mlflow(settings.tracking_uri, timeout_s)
    if settings.bundle_root.startswith("s3://"):
        _check_bucket(settings.bundle_root, settings.s3_endpoint_url, timeout_s)


def _check_mlflow(uri: str, timeout_s: float) -> None:
    import urllib.error
    import urllib.request

    from enginewright.redact import redact_url

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as answer:
            answer.read()
    except urllib.error.HTTPError:
        return  # it answered (a server with basic auth may answer 401 here): reachable
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RegistryError(f"MLflow at {redact_url(uri)} does not answer ({reason}); start it or fix "
                            "ENGINEWRIGHT_MLFLOW_TRACKING_URI before building") from None


def _check_bucket(store: str, endpoint_url: str | None, timeout_s: float) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    location = S3Location.parse(store)
    client = s3_client(endpoint_url, timeout_s=timeout_s, attempts=1)
    where = f"S3 at {endpoint_url or 'AWS'}"
    try:
        client.head_bucket(Bucket=location.bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            raise InputError(f"ENGINEWRIGHT_BUNDLE_STORE {store!r}: bucket {location.bucket!r} does not exist at "
                             f"{where}; create it or name another") from None
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise InputError(f"ENGINEWRIGHT_BUNDLE_STORE {store!r}: {where} refuses these credentials ({code}); "
                             "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY") from None
        raise StoreError(f"{where} failed to check bucket {location.bucket!r}: {code or exc}") from None
    except BotoCoreError as exc:
        raise StoreError(f"{where} does not answer ({str(exc).splitlines()[0]}); start it or fix "
                         "ENGINEWRIGHT_S3_ENDPOINT_URL before building") from None
