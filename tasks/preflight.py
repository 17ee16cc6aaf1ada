"""Check every input before any work starts: a bad value fails in a second, with nothing written or registered."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from enginewright.bundle.s3 import S3Location, s3_client
from enginewright.config.settings import Settings
from enginewright.config.spec import BuildSpec, QuantizationSpec
from enginewright.errors import CheckpointError, InputError, RegistryError, StoreError
from enginewright.ops.disk import require_writable_dir
from enginewright.quant.devices import check_format_supported
from enginewright.quant.effective_bits import minimum_effective_bits
from enginewright.quant.memory_plan import MemoryPlan
from tasks.calibration import calibration_files, check_enough_text, check_fits_context
from tasks.checkpoint_sources import source_context
from tasks.eval_data import EvalData, check_eval_data, document_count
from tasks.plan import plan_memory
from tasks.sources import check_checkpoint_dir, locate_source


@dataclass(frozen=True)
class TaskPower:
    task: str
    planned: int  # documents the plan evaluates at most
    available: int
    power_pass: float  # chance a harmless candidate (no true difference) passes this task
    power_fail: float  # chance a candidate that drops `worse_points` fails it
    needed: int  # documents for 80 % power to pass a harmless candidate (fixed n)
    worse_points: float  # the drop power_fail is computed at: twice the margin, capped below the discordance


def gate_power(spec: BuildSpec, data: EvalData) -> list[TaskPower]:
    """Before any work: what the spec's plan can decide, at the spec's planning discordance (the baseline accuracy
    for a min_recovery margin is not known yet: a 50 % baseline is assumed)."""
    from enginewright.gate.gate_decision import allowed_drop, alphas, task_plan
    from enginewright.gate.paired_stats import documents_for_power, sequential_power

    rows = []
    alpha_pass, alpha_fail = alphas(spec.gate, len(spec.evaluation.tasks))
    discordance = spec.gate.planning_discordance
    for task in spec.evaluation.tasks:
        plan = task_plan(task, document_count(data, task), spec.evaluation)
        margin = allowed_drop(*spec.gate.criteria_for(task), 0.5)
        look = plan.looks[0]
        if margin <= 0 or margin >= discordance:
            rows.append(TaskPower(task, plan.planned, plan.available, 0.0 if margin <= 0 else 1.0, 0.0, 0,
                                  100 * 2 * margin))
            continue
        worse = min(2 * margin, 0.95 * discordance)
        rows.append(TaskPower(
            task, plan.planned, plan.available,
            sequential_power(plan.planned, look, discordance, 0.0, margin, alpha_pass),
            sequential_power(plan.planned, look, discordance, -worse, margin, alpha_fail, side="fail"),
            documents_for_power(discordance, margin, alpha_pass), 100 * worse))
    return rows


def power_markdown(rows: list[TaskPower], spec: BuildSpec) -> str:
    lines = [f"gate power at {100 * spec.gate.planning_discordance:.0f} % discordance (gate.planning_discordance):",
             f"{'task':<15}{'planned':>9}{'available':>11}{'pass if harmless':>18}{'fail if it drops':>22}"
             f"{'80 % needs':>12}"]
    for r in rows:
        fail = f"{100 * r.power_fail:.0f}% at {r.worse_points:.2f} pts"
        lines.append(f"{r.task:<15}{r.planned:>9}{r.available:>11}{100 * r.power_pass:>17.0f}%"
                     f"{fail:>22}{r.needed:>12}")
    overall = 1.0
    for r in rows:
        overall *= r.power_pass
    lines.append(f"a harmless candidate passes every task with ~{100 * overall:.0f} % power")
    return "\n".join(lines)


def underpowered(rows: list[TaskPower]) -> str | None:
    """The warning for a plan under 80 % power to pass a harmless candidate, or None."""
    weak = [r for r in rows if r.power_pass < 0.8]
    if not weak:
        return None
    return "the gate is underpowered: " + "; ".join(
        f"{r.task} passes a harmless candidate with {100 * r.power_pass:.0f} % power at {r.planned} documents "
        f"(80 % needs ~{r.needed}, {r.available} available)" for r in weak
    ) + "; plan more documents (evaluation.limit) or allow a larger drop (gate.max_drop_points)"


def check_inputs(spec: BuildSpec, settings: Settings) -> EvalData:
    from enginewright.quant.models import preflight_tokenizer

    for fmt in spec.quantization.candidate_formats:
        check_format_supported(fmt, field="quantization.auto.formats" if spec.quantization.auto else "quantization.format")
    _, path, _ = locate_source(spec.source, source_context(settings))
    if spec.quantization.auto is not None:
        check_scores_logits(path, spec.quantization.auto.method)
    check_checkpoint_dir(path, spec.source)
    check_budget_reachable(path, spec.quantization)
    data = check_eval_data(spec.evaluation.data_dir, list(spec.evaluation.tasks), spec.evaluation.num_fewshot)
    calibration_files(spec.calibration)
    check_fits_context(spec.calibration, path)
    try:
        tokenizer = preflight_tokenizer(path, spec.source.trust_remote_code)
    except Exception as exc:  # transformers raises several types, with many-line messages
        raise CheckpointError(f"checkpoint {str(path)!r}: its tokenizer does not load ({type(exc).__name__}); add "
                              "tokenizer.json (a fast tokenizer) beside tokenizer_config.json") from None
    check_enough_text(spec.calibration, tokenizer)
    return data


def check_scores_logits(path: Path, method: str) -> None:
    """AutoQuantize scores a layer group by the model's logits (kl_div: their divergence; gradient: the loss over
    them): a checkpoint without a causal-LM head returns none. Said in those terms, before the generic check."""
    import json

    from enginewright.quant.models import causal_lm_model_types

    config_file = path / "config.json"
    if not config_file.is_file():
        return  # check_checkpoint_dir says what is missing
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return
    if model_type is not None and model_type not in causal_lm_model_types():
        raise InputError(f"quantization.auto.method={method!r} scores layers by the model's logits, and checkpoint "
                         f"{str(path)!r} (model_type {model_type!r}) has no causal-LM head that returns them; "
                         "AutoQuantize needs a causal language model (for example llama, mistral, qwen2)")


def check_budget_reachable(path: Path, quantization: QuantizationSpec) -> None:
    """An AutoQuantize budget below the fewest bits its candidates can reach on this checkpoint (from its headers:
    enginewright/quant/effective_bits.py), refused before the search, naming the minimum."""
    auto = quantization.auto
    if auto is None:
        return
    floor = minimum_effective_bits(path, list(auto.formats), list(auto.keep_unquantized))
    if auto.effective_bits < floor - 1e-9:
        raise InputError(f"quantization.auto.effective_bits={auto.effective_bits:g} is below what {', '.join(auto.formats)} "
                         f"can reach on {str(path)!r}: at least {floor:.2f} ("
                         + ("lm_head and " + ", ".join(auto.keep_unquantized) + " stay" if auto.keep_unquantized
                            else "lm_head stays") + " 16-bit)")


def check_matrix_budgets(spec: BuildSpec, variants: list[str], settings: Settings) -> None:
    """check_budget_reachable for every auto-<bits> variant of a matrix, before any work."""
    from enginewright.config.spec import AUTO_VARIANT_PREFIX, variant_quantization

    _, path, _ = locate_source(spec.source, source_context(settings))
    for variant in variants:
        if variant.startswith(AUTO_VARIANT_PREFIX):
            check_budget_reachable(path, variant_quantization(spec.quantization, variant))


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

    from enginewright.config.redact import redact_url

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


@dataclass(frozen=True)
class Preflight:
    power: str  # the gate's power table, markdown
    warning: str | None  # set when the plan is under 80 % power to pass a harmless candidate


def check_before_work(spec: BuildSpec, settings: Settings) -> Preflight:
    """Every input checked before anything is written (InputError, exit 2); offline mode when nothing is on the Hub."""
    require_writable_dir(settings.home, f"ENGINEWRIGHT_HOME {str(settings.home)!r}:",
                         "set ENGINEWRIGHT_HOME to a directory you can write in")
    check_default_model(spec, settings)
    if uses_only_local_inputs(spec):
        # Nothing this build reads is on the Hub: never try to reach it (libraries read these at import).
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    data = check_inputs(spec, settings)
    check_stores(settings)
    power = gate_power(spec, data)
    return Preflight(power_markdown(power, spec), underpowered(power))


def plan_memory_before_work(spec: BuildSpec, settings: Settings) -> MemoryPlan | None:
    """The memory plan of a local checkpoint, refusing a model that fits no plan (exit 2) before anything is
    written; None for a checkpoint not downloaded yet (the build plans it after the download)."""
    checkpoint = Path(spec.source.model).expanduser()
    if not checkpoint.is_dir():
        return None
    return plan_memory(checkpoint, spec, settings.device_memory_limit, settings.builds_dir)


def uses_only_local_inputs(spec: BuildSpec) -> bool:
    return Path(spec.source.model).expanduser().is_dir() and Path(spec.calibration.source).expanduser().exists()


def check_default_model(spec: BuildSpec, settings: Settings) -> None:
    if spec.source.model == str(settings.default_model_dir) and not settings.default_model_dir.exists():
        raise InputError(
            f"default model {settings.default_model_dir} does not exist yet; run `enginewright convert-gguf` "
            "first, or pass --model"
        )
