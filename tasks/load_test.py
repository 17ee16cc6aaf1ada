"""The verify step's load test: NVIDIA AIPerf (PyPI `aiperf`, GenAI-Perf's successor) at a fixed concurrency against
the endpoint's streaming completions, synthetic prompts, the bundle's own tokenizer.

`aiperf profile` writes `profile_export_aiperf.json` into its artifact folder; what we read of it (aiperf 0.13.0,
read from a real run against the stand-in): `output_token_throughput.avg` (tokens/s), `time_to_first_token` and
`inter_token_latency` with `p50`/`p99` (unit "ms"), `request_count.avg`, `error_request_count.avg` (absent when no
request failed).

AIPerf's offline mode resolves a tokenizer as a Hub snapshot and refuses a local path
(aiperf/common/tokenizer.py `_from_pretrained_local`), so it runs with HF_HUB_OFFLINE unset; the tokenizer is the
bundle's local checkpoint folder, so nothing is fetched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from enginewright.serving.openai_endpoint import Endpoint, EndpointError
from enginewright.serving.targets import VerifyPolicy

PROMPT_TOKENS = 64
TIMEOUT_S = 600
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def aiperf_command(endpoint: Endpoint, model_id: str, tokenizer_dir: Path, policy: VerifyPolicy,
                   artifacts: Path) -> list[str]:
    aiperf = shutil.which("aiperf") or str(Path(sys.executable).with_name("aiperf"))
    return [aiperf, "profile", "--model", model_id, "--url", endpoint.base_url, "--endpoint-type", "completions",
            "--streaming", "--concurrency", str(policy.load_concurrency), "--request-count",
            str(policy.load_requests), "--tokenizer", str(tokenizer_dir), "--isl", str(PROMPT_TOKENS),
            "--osl", str(policy.load_max_tokens), "--artifact-dir", str(artifacts), "--ui-type", "none"]


def read_profile(report: dict[str, Any], concurrency: int) -> dict[str, float]:
    def stat(name: str, key: str, scale: float = 1.0) -> float:
        return float((report.get(name) or {}).get(key) or 0.0) * scale

    return {"concurrency": float(concurrency), "requests": stat("request_count", "avg"),
            "errors": stat("error_request_count", "avg"),
            "output_tokens_per_s": stat("output_token_throughput", "avg"),
            "ttft_p50_s": stat("time_to_first_token", "p50", 1e-3), "ttft_p99_s": stat("time_to_first_token", "p99", 1e-3),
            "itl_p50_s": stat("inter_token_latency", "p50", 1e-3), "itl_p99_s": stat("inter_token_latency", "p99", 1e-3)}


def run_load_test(endpoint: Endpoint, model_id: str, tokenizer_dir: Path, policy: VerifyPolicy) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARIABLES}
    with tempfile.TemporaryDirectory(prefix="enginewright-aiperf-") as tmp:
        artifacts = Path(tmp)
        command = aiperf_command(endpoint, model_id, tokenizer_dir, policy, artifacts)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp)
        report_file = artifacts / "profile_export_aiperf.json"
        if done.returncode != 0 or not report_file.is_file():
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            raise EndpointError(f"aiperf exited {done.returncode}: {' / '.join(tail)}")
        return read_profile(json.loads(report_file.read_text()), policy.load_concurrency)
