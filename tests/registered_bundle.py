"""A registered version whose bundle has the real layout (checkpoint/, llm_api.yaml written by the build's own
writer, MODEL_CARD.md, manifest.json) but a few KB of stand-in weights: for tests of what happens *after*
registration (deploy, promotion), where a real quantization would only cost minutes."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from PIL import Image

from enginewright.bundle.bundle_store import bundle_location, store_bundle
from enginewright.bundle.manifest import write_manifest
from enginewright.config.settings import Settings
from enginewright.config.spec import RuntimeSpec
from tasks.register import RegisteredVersion, RunRecord, log_build_run, register_version
from tasks.runtime_config import write_llm_api_yaml


def register_bundle(settings: Settings, work: Path, name: str, fmt: str = "fp8", verdict: str = "pass",
                    engine: dict | None = None, checkpoint: Path | None = None,
                    golden_data: Path | None = None) -> RegisteredVersion:
    """`checkpoint`: a real (tiny) checkpoint to ship instead of stand-in bytes; with `golden_data` (the evaluation
    data folder) its golden records are computed from it as a build records them (tasks/golden.py)."""
    key = uuid.uuid4().hex * 2
    bundle = work / key[:12]
    if checkpoint is None:
        (bundle / "checkpoint").mkdir(parents=True)
        (bundle / "checkpoint" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}\n')
        (bundle / "checkpoint" / "model.safetensors").write_bytes(uuid.uuid4().bytes * 256)
    else:
        shutil.copytree(checkpoint, bundle / "checkpoint")
    write_llm_api_yaml(RuntimeSpec(), fmt == "fp8", bundle / "llm_api.yaml")
    (bundle / "MODEL_CARD.md").write_text(f"# {name}\n")
    fields = {"bundle_id": key, "build_key": {"digest": key, "parts": {}}, "quantization": {"format": fmt},
              "engine": engine or {"status": "skipped", "reason": "test"}}
    if checkpoint is not None and golden_data is not None:
        fields["golden"] = record_golden_of(bundle, golden_data)
    manifest = write_manifest(bundle, fields)
    plot = work / f"{key[:12]}-gate" / "gate_plot.png"  # the evidence a build logs: a (1 × 1) gate plot
    plot.parent.mkdir(parents=True)
    Image.new("RGB", (1, 1), "white").save(plot)
    record = RunRecord(model_name=name, build_key=key, evidence={"gate": [plot]}, params={}, metrics={},
                       tags={"build_key": key, "gate.verdict": verdict, "quantization.format": fmt},
                       description=f"{fmt} bundle for tests")
    run = log_build_run(record, settings.tracking_uri, settings.artifact_root)
    uri = store_bundle(bundle, manifest, bundle_location(settings.bundle_root, key, run.run_id),
                       settings.s3_endpoint_url, settings.transfer)
    return register_version(record, run.run_id, uri, verdict == "pass", settings.tracking_uri)


def record_golden_of(bundle: Path, data_dir: Path, max_new_tokens: int = 12) -> str:
    """Recorded as a build records them for a runtime that can generate: by the computation that will serve them —
    here the serving stand-ins' (a ModelOpt export dequantized from its codes, its inputs quantized with the exported
    scales; a plain checkpoint as it is)."""
    from enginewright.quant.models import load_tokenizer
    from enginewright.serving.golden import GOLDEN_PROMPTS, write_golden
    from tasks.golden import record_golden
    from tests.standins.openai_server import load_served_model

    checkpoint = bundle / "checkpoint"
    golden = record_golden(load_served_model(checkpoint), load_tokenizer(checkpoint), list(GOLDEN_PROMPTS),
                           max_new_tokens, data_dir, ["arc_easy"])
    write_golden(bundle, golden)
    return golden.digest
