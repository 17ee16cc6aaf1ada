"""Every environment knob in one place: where the work directory, the MLflow store and the shared data live.

Each field is read from `ENGINEWRIGHT_<FIELD>` (for example `ENGINEWRIGHT_HOME`).
"""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

_REPO_ROOT = Path(__file__).resolve().parents[1]


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
    shared_data_dir: Path = Field(
        default=_REPO_ROOT.parent / "shared" / "data",
        description="Offline copies of the evaluation and calibration data (defaults of the embedded spec).",
    )

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def builds_dir(self) -> Path:
        return self.home / "builds"

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
    def default_model_dir(self) -> Path:
        """Where `enginewright convert-gguf` puts SmolLM2-135M-Instruct, the embedded default model."""
        return self.models_dir / "SmolLM2-135M-Instruct"
