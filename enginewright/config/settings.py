"""Every environment knob in one place: where the work directory, the MLflow store, the bundles and the shared
data live, and what `enginewright stack up` starts.

Each field is read from `ENGINEWRIGHT_<FIELD>` (for example `ENGINEWRIGHT_HOME`).

Two modes, chosen by these settings alone:
- embedded (nothing set): MLflow on a SQLite file, bundles in a directory, both under `home`;
- production: `ENGINEWRIGHT_MLFLOW_TRACKING_URI=http://…` (an MLflow server on PostgreSQL) and
  `ENGINEWRIGHT_BUNDLE_STORE=s3://bucket/prefix` (+ `ENGINEWRIGHT_S3_ENDPOINT_URL` for S3-compatible stores).
  Bundles then go straight to S3, never through the MLflow server. S3 credentials come from boto3's usual
  chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, roles) and are never settings, so they are never
  printed or logged. `enginewright stack up` writes these variables for its local stack to `<home>/stack/env`.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import ByteSize, Field, SecretStr, ValidationError, field_serializer, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from enginewright.config.redact import redact_url
from enginewright.errors import InputError, describe_validation_error

MiB = 1024 * 1024


@dataclass(frozen=True)
class TransferSettings:
    part_size: int = 64 * MiB
    concurrency: int = 8
    attempts: int = 3  # boto3's attempts per request: 1 + Settings.server_retries


_REPO_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENGINEWRIGHT_", extra="ignore")

    home: Path = Field(
        default=Path.home() / ".enginewright",
        description="Work directory: converted models, build work dirs, Prefect results, the local MLflow store.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI. Unset: a SQLite file under `home` (the embedded default).",
    )
    mlflow_artifact_root: str | None = Field(
        default=None,
        description="Artifact root for new MLflow experiments. Unset: a directory under `home`.",
    )
    bundle_store: str | None = Field(
        default=None,
        description="Where bundles are stored: s3://bucket/prefix or a local directory. Unset: `home`/bundles.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint of an S3-compatible store (SeaweedFS, MinIO). Unset: AWS."
    )
    upload_part_size_mb: int = Field(default=64, ge=5, le=5120, description="S3 multipart part size, MiB.")
    upload_concurrency: int = Field(default=8, ge=1, le=64, description="Parallel S3 part uploads/downloads.")
    server_retries: int = Field(
        default=2, ge=0, le=8,
        description="The retry budget: retries of each request to MLflow and S3 after a refused connection or a "
        "5xx (exponential backoff, 4, 8, 16 … s for MLflow), inside each of the 3 attempts of a registry or store "
        "step (10 s apart). A server that stays down fails the step after about 3 × 2 × (2^N − 2) + 20 s of "
        "waiting: 32 s at N = 2, 104 s at N = 4 (enginewright/retries.outage_wait_s), plus request timeouts "
        "where it hangs instead of refusing.",
    )
    device: str | None = Field(
        default=None,
        description="Where a build computes: `cpu` (no GPU, even on a GPU worker), `cuda` (every GPU this process "
        "sees) or `cuda:N[,M…]` (those GPUs only; CUDA_VISIBLE_DEVICES is set before torch starts). Unset: every GPU, "
        "else the CPU. `build --device` sets it for one build.",
    )
    device_memory_limit: ByteSize | None = Field(
        default=None,
        description="Most memory a build may plan to use on each GPU (on a CPU worker: of host memory), e.g. `12GiB`; "
        "on a GPU it is also enforced (torch's per-process memory fraction). Unset: what each device has free. "
        "The memory plan (enginewright/quant/memory_plan.py) picks one device, a device map or layer-at-a-time "
        "calibration within it.",
    )
    stack_s3_port: int = Field(default=8333, description="`stack up`: S3 port of SeaweedFS (it also uses the next 9).")
    stack_mlflow_port: int = Field(default=5000, description="`stack up`: MLflow server port.")
    stack_prefect_port: int = Field(default=4200, description="`stack up`: Prefect server port.")
    stack_relay_port: int = Field(default=8766, description="`stack up`: port of the MLflow webhook relay.")
    stack_postgres_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        description="`stack up`: a PostgreSQL server it creates its databases in (it never starts or stops one).",
    )
    stack_name: str = Field(
        default="enginewright", pattern=r"^[a-z][a-z0-9_]*$",
        description="`stack up`: prefix of its database names (<name>_mlflow, <name>_prefect, <name>_watch).",
    )
    stack_bucket: str = Field(default="enginewright", description="`stack up`: the S3 bucket it creates.")
    stack_mlflow_auth: bool = Field(
        default=False,
        description="`stack up`: run MLflow with basic authentication (users in <name>_mlflow_auth; the admin "
                    "password is generated into the stack's secrets and the client env). Off: MLflow on "
                    "127.0.0.1 without logins.",
    )
    watch_db: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the watch store (what is watched, which revisions were announced). "
        "Unset: a SQLite file under `home`; production: the stack's PostgreSQL.",
    )
    hub_endpoint: str | None = Field(
        default=None, description="Hugging Face Hub endpoint the watcher polls. Unset: huggingface_hub's default."
    )
    # Secrets are SecretStr: hidden in reprs and in every serialization (a flow run's parameters on the Prefect
    # server included); `revealed()` gives the text where they are used.
    hub_webhook_secret: SecretStr | None = Field(
        default=None, description="Secret the Hub webhook relay requires in X-Webhook-Secret."
    )
    mlflow_webhook_secret: SecretStr | None = Field(
        default=None,
        description="Secret MLflow signs its registry webhooks with; the promotion relay checks X-MLflow-Signature.",
    )
    deploy_alias: str = Field(
        default="production", pattern=r"^[A-Za-z0-9_-]+$",
        description="The alias whose change deploys a version (set in the MLflow UI).",
    )
    deploy_target: Path = Field(
        default=_REPO_ROOT / "specs" / "targets" / "h100.yaml",
        description="The deploy target file (GPU, compute capability, ports) deploys render for.",
    )
    serving_root: Path | None = Field(
        default=None, description="Where rendered serving configs and deployed bundles live. Unset: `home`/serving.",
    )
    watch_timeout_s: float = Field(default=10, gt=0, description="Seconds the watcher waits for a source to answer.")
    trust_remote_code_allow: Annotated[list[str], NoDecode] = Field(
        default=[],
        description="Repositories (Hub ids or local paths, comma-separated) whose specs may set "
        "source.trust_remote_code: true. Empty: no checkpoint's custom code is ever run.",
    )
    vllm_python: Path | None = Field(
        default=None, description="A GPU worker's vLLM environment (its python; scripts/gpu_worker/install.sh): where "
        "set and TensorRT-LLM is absent, the gate scores the candidate as vLLM computes it (tasks/runtimes/vllm.py).")
    shared_data_dir: Path = Field(
        default=_REPO_ROOT.parent / "shared" / "data",
        description="Offline copies of the evaluation and calibration data (defaults of the embedded spec).",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"cpu|cuda(:\d+(,\d+)*)?", value):
            raise ValueError("expected cpu, cuda or cuda:N[,M…], e.g. cuda:0")
        return value

    @field_validator("bundle_store")
    @classmethod
    def _a_store_not_a_typo(cls, value: str | None) -> str | None:
        """`s3:/bucket` (one slash) was taken for a relative directory and the bundle copied into the working
        directory: a store is an s3:// URI or an absolute directory."""
        if value is None:
            return value
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", value):
            if not value.startswith("s3://") or not value[5:].split("/", 1)[0]:
                raise ValueError(f"{value!r} is not s3://<bucket>[/<prefix>] or an absolute directory")
            return value
        if not Path(value).expanduser().is_absolute():
            raise ValueError(f"{value!r} is a relative path; give s3://<bucket>[/<prefix>] or an absolute directory")
        return str(Path(value).expanduser())

    @field_serializer("mlflow_tracking_uri", "stack_postgres_url", "watch_db", when_used="json")
    @classmethod
    def _without_passwords(cls, value: str | None) -> str | None:
        """Serialized settings (a flow run's parameters on the Prefect server) never carry a password."""
        return redact_url(value) if value else value

    @field_validator("trust_remote_code_allow", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return [item.strip() for item in value.split(",") if item.strip()] if isinstance(value, str) else value

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def builds_dir(self) -> Path:
        return self.home / "builds"

    @property
    def sources_dir(self) -> Path:
        """Checkpoints downloaded from S3, one folder per revision."""
        return self.home / "sources"

    @property
    def calibration_dir(self) -> Path:
        return self.home / "calibration"

    @property
    def auto_quantize_dir(self) -> Path:
        """AutoQuantize search states, one folder per content address of what a search depends on."""
        return self.home / "auto-quantize"

    @property
    def eval_cache_dir(self) -> Path:
        return self.home / "eval-data"

    @property
    def baselines_dir(self) -> Path:
        return self.home / "baselines"

    @property
    def results_dir(self) -> Path:
        """Prefect task results (the cache). Lives beside the build work dirs it points into."""
        return self.home / "prefect-results"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> str:
        return self.mlflow_artifact_root or (self.home / "mlartifacts").resolve().as_uri()

    @property
    def bundle_root(self) -> str:
        return self.bundle_store or str((self.home / "bundles").resolve())

    @property
    def serving_dir(self) -> Path:
        return self.serving_root or self.home / "serving"

    @property
    def watch_db_url(self) -> str:
        return self.watch_db or f"sqlite:///{(self.home / 'watch.db').resolve()}"

    @property
    def transfer(self) -> TransferSettings:
        return TransferSettings(part_size=self.upload_part_size_mb * MiB, concurrency=self.upload_concurrency,
                                attempts=1 + self.server_retries)

    @property
    def stack_dir(self) -> Path:
        return self.home / "stack"

    @property
    def default_model_dir(self) -> Path:
        """Where `enginewright convert-gguf` puts SmolLM2-135M-Instruct, the embedded default model."""
        return self.models_dir / "SmolLM2-135M-Instruct"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (and `overrides`, from command-line flags that are settings); a bad value is one
    InputError naming the variable's field and the value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # validated here, like the environment's values
    except ValidationError as exc:
        raise InputError(describe_validation_error(exc, "setting (ENGINEWRIGHT_<FIELD>)")) from None


def _shown_default(value: object) -> str:
    """A default as a reader should see it: paths relative to the home directory or the checkout."""
    if value is None:
        return "unset"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "empty"
    text = str(value)
    text = text.replace(str(_REPO_ROOT), "<checkout>").replace(str(_REPO_ROOT.parent), "<checkout>/..")
    return text.replace(str(Path.home()), "~")


def env_name(field: str) -> str:
    """The environment variable of a setting (`home` → ENGINEWRIGHT_HOME): the one place such a name is made."""
    if field not in Settings.model_fields:
        raise KeyError(f"no setting {field!r}")
    return f"{Settings.model_config.get('env_prefix', '')}{field.upper()}"


def env_of(**values: str) -> dict[str, str]:
    """Settings as the environment a child process reads them from: {ENGINEWRIGHT_<FIELD>: value}."""
    return {env_name(field): value for field, value in values.items()}


def settings_markdown() -> str:
    """The README's settings table, generated from the fields (tests/test_settings_doc.py keeps them equal)."""
    rows = ["| variable | default | |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        rows.append(f"| `{env_name(name)}` | `{_shown_default(info.default)}` | "
                    f"{(info.description or '').replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def revealed(secret: SecretStr | None) -> str:
    """The text of an optional secret setting ("" when unset), for the one place that uses it."""
    return secret.get_secret_value() if secret is not None else ""
