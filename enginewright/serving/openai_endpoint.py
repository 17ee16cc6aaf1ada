"""A small client of an OpenAI-compatible serving endpoint (trtllm-serve, vLLM): readiness and greedy completions.

Readiness is what the runtime itself reports: `GET /health` answers 200, `GET /v1/models` lists the model id the
release's serving command gives (trtllm-serve: the name of the directory it was given, the release's
`<model>-v<version>` link, enginewright.serving.runtimes.tensorrt_llm `served_model_id`; `vllm serve --served-model-name NAME`: NAME), and trtllm-serve's `GET /version` the runtime
version the target names. Neither runtime reports the quantization it serves; the golden replay is what tells one
checkpoint from another.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

REQUEST_TIMEOUT_S = 120.0


class EndpointError(Exception):
    """The endpoint did not answer, or answered something else than the API's shape."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # http://host:port, no trailing slash

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=timeout) as response:  # noqa: S310 (http only)
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise EndpointError(f"{self.base_url}{path}: {getattr(exc, 'reason', exc)}") from None
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")

    def complete(self, model: str, prompt: str, max_tokens: int, stop: list[str] | None = None) -> str:
        """One greedy completion's text."""
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        if stop:
            body["stop"] = stop
        request = urllib.request.Request(self.base_url + "/v1/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:  # noqa: S310
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:200]
            raise EndpointError(f"POST {self.base_url}/v1/completions: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise EndpointError(f"POST {self.base_url}/v1/completions: {getattr(exc, 'reason', exc)}") from None
        try:
            return str(payload["choices"][0]["text"])
        except (KeyError, IndexError, TypeError):
            raise EndpointError(f"POST {self.base_url}/v1/completions: no choices[0].text in the answer") from None


@dataclass(frozen=True)
class Readiness:
    ready: bool
    seconds: float
    detail: str  # what was last seen: the served model id and version, or why it is not ready


def serving_state(endpoint: Endpoint, model_id: str, runtime_version: str | None) -> tuple[bool, str]:
    """(serving the expected model, what was seen)."""
    try:
        status, _ = endpoint.get("/health")
        if status != 200:
            return False, f"/health answered {status}"
        status, models = endpoint.get("/v1/models")
        ids = [m.get("id") for m in (models or {}).get("data", [])] if status == 200 and isinstance(models, dict) else []
        if model_id not in ids:
            return False, f"it serves {', '.join(map(repr, ids)) or 'no model'}, not {model_id!r} (/v1/models)"
        if runtime_version is not None:
            status, version = endpoint.get("/version")
            seen = version.get("version") if isinstance(version, dict) else None
            if seen != runtime_version:
                return False, f"it runs version {seen!r}, the target names {runtime_version!r} (/version)"
    except EndpointError as exc:
        return False, str(exc)
    return True, f"serves {model_id!r}" + (f" on version {runtime_version}" if runtime_version else "")


def wait_until_serving(endpoint: Endpoint, model_id: str, runtime_version: str | None, timeout_s: float,
                       poll_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
                       sleep: Callable[[float], None] = time.sleep) -> Readiness:
    """Poll until the endpoint serves `model_id` (and `runtime_version`), or `timeout_s` passes."""
    started = clock()
    while True:
        ok, detail = serving_state(endpoint, model_id, runtime_version)
        waited = clock() - started
        if ok or waited >= timeout_s:
            return Readiness(ok, waited, detail)
        sleep(min(poll_s, max(timeout_s - waited, 0.0)))
