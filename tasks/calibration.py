"""Calibration data: deterministic sampling of N sequences × L tokens, saved with their sha256."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task

from enginewright.config.spec import CalibrationSpec
from enginewright.errors import CalibrationError
from enginewright.keys.atomic import written_whole
from enginewright.keys.cache_policies import ChangeDetector, step_policy
from enginewright.keys.hashing import sha256_file, sha256_json, stat_fingerprint
from tasks.sources import looks_like_local_path

if TYPE_CHECKING:  # torch is imported where it is used: the preflight (`build --dry-run`) never needs it
    import torch

TEXT_SUFFIXES = (".txt", ".jsonl")


TOKENIZE_BATCH = 256  # documents per tokenizer call

@dataclass(frozen=True)
class CalibrationSet:
    path: Path  # safetensors file holding `input_ids` [num_samples, seq_len]
    sha256: str  # of the token ids (int64, little endian, row-major)
    num_samples: int
    seq_len: int

    def cache_identity(self) -> str:
        return self.sha256


def read_utf8(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CalibrationError(f"calibration file {str(file)!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} "
                               f"at offset {exc.start}); convert it, e.g. iconv -t UTF-8") from None


def calibration_files(spec: CalibrationSpec) -> list[Path] | None:
    """Local files of the source, or None for a Hugging Face dataset id."""
    path = Path(spec.source).expanduser()
    if path.is_file():
        if path.suffix not in TEXT_SUFFIXES:
            raise CalibrationError(
                f"calibration.source {spec.source!r} has suffix {path.suffix!r}; accepted: {', '.join(TEXT_SUFFIXES)}"
            )
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file())
        if not files:
            raise CalibrationError(f"calibration.source {spec.source!r} holds no .txt or .jsonl files")
        return files
    if looks_like_local_path(spec.source) or spec.source.count("/") != 1:
        raise CalibrationError(
            f"calibration.source {spec.source!r} does not exist; pass a .txt/.jsonl file, a directory of them, "
            "or a Hugging Face dataset id (org/name)"
        )
    return None


def source_fingerprint(spec: CalibrationSpec) -> str:
    """What the build key records about the calibration text itself (contents, not paths)."""
    files = calibration_files(spec)
    if files is None:
        return sha256_json({"hf_dataset": spec.source, "split": spec.split, "field": spec.text_field})
    return sha256_json([sha256_file(f) for f in files])


def iter_documents(spec: CalibrationSpec) -> Iterator[str]:
    files = calibration_files(spec)
    if files is None:
        yield from _hub_documents(spec)
        return
    for file in files:
        if file.suffix == ".txt":
            # Paragraphs (blank-line separated) are the documents of plain text corpora like WikiText.
            yield from (p.strip() for p in read_utf8(file).split("\n\n") if p.strip())
        else:
            for line_no, line in enumerate(read_utf8(file).splitlines(), 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if spec.text_field not in row:
                    raise CalibrationError(
                        f"{file}:{line_no} has no field {spec.text_field!r}; set calibration.text_field "
                        f"to one of {sorted(row)}"
                    )
                yield str(row[spec.text_field])


def _hub_documents(spec: CalibrationSpec) -> Iterator[str]:
    import datasets

    try:
        rows = datasets.load_dataset(spec.source, split=spec.split)
    except Exception as exc:  # datasets raises many types for a missing/offline dataset
        raise CalibrationError(f"calibration.source {spec.source!r}: {str(exc).splitlines()[0]}") from None
    if spec.text_field not in rows.column_names:
        raise CalibrationError(
            f"dataset {spec.source!r} has no column {spec.text_field!r}; columns: {rows.column_names}"
        )
    yield from (str(text) for text in rows[spec.text_field] if text)


def token_stream(spec: CalibrationSpec, tokenizer, stop_after: int | None = None) -> list[int]:
    """Documents tokenized and joined with EOS. Stops early once `stop_after` tokens are collected.

    Documents are tokenized in batches (a fast tokenizer encodes a batch on all cores); the stream is the same
    as tokenizing them one by one."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    documents = iter_documents(spec)
    while batch := list(itertools.islice(documents, TOKENIZE_BATCH)):
        for encoded in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            ids.extend(encoded)
            if eos is not None:
                ids.append(eos)
            if stop_after is not None and len(ids) >= stop_after:
                return ids
    return ids


def require_enough_tokens(spec: CalibrationSpec, tokens: int) -> None:
    if tokens // spec.seq_len < spec.num_samples:
        raise CalibrationError(
            f"calibration.source {spec.source!r} gives {tokens // spec.seq_len} sequences of {spec.seq_len} tokens, "
            f"fewer than calibration.num_samples={spec.num_samples}; lower num_samples or seq_len "
            f"(at most {tokens} tokens in all), or add text"
        )


def check_fits_context(spec: CalibrationSpec, checkpoint_dir: Path) -> None:
    """A calibration sequence longer than the model's context (config.json max_position_embeddings) calibrates
    positions the model never serves, and may not fit in memory: refused before any work."""
    config = json.loads((checkpoint_dir / "config.json").read_text())
    context = config.get("max_position_embeddings") or config.get("text_config", {}).get("max_position_embeddings")
    if isinstance(context, int) and spec.seq_len > context:
        raise CalibrationError(f"calibration.seq_len={spec.seq_len} is longer than the model's context "
                               f"({context} tokens, config.json max_position_embeddings); use {context} or less")


def check_enough_text(spec: CalibrationSpec, tokenizer) -> None:
    """The preflight version: tokenizes only until enough text is found."""
    needed = spec.num_samples * spec.seq_len
    require_enough_tokens(spec, len(token_stream(spec, tokenizer, stop_after=needed)))


def sample_windows(ids: list[int], spec: CalibrationSpec) -> torch.Tensor:
    """N non-overlapping windows of L tokens, chosen by a seeded permutation, in stream order."""
    import torch

    require_enough_tokens(spec, len(ids))
    windows = len(ids) // spec.seq_len
    generator = torch.Generator().manual_seed(spec.seed)
    chosen = torch.randperm(windows, generator=generator)[: spec.num_samples].sort().values
    stream = torch.tensor(ids[: windows * spec.seq_len], dtype=torch.int64).view(windows, spec.seq_len)
    return stream[chosen].contiguous()


def token_ids_sha256(input_ids: torch.Tensor) -> str:
    import torch

    return hashlib.sha256(input_ids.to(torch.int64).contiguous().numpy().tobytes()).hexdigest()


def build_calibration_set(spec: CalibrationSpec, tokenizer_dir: Path, out_file: Path) -> CalibrationSet:
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    input_ids = sample_windows(token_stream(spec, tokenizer), spec)
    digest = token_ids_sha256(input_ids)
    with written_whole(out_file) as tmp:
        save_file({"input_ids": input_ids}, str(tmp), metadata={"sha256": digest})
    return CalibrationSet(path=out_file, sha256=digest, num_samples=spec.num_samples, seq_len=spec.seq_len)


def load_calibration_ids(calib: CalibrationSet) -> torch.Tensor:
    """The saved token ids, refusing a file whose contents no longer match their recorded sha256."""
    from safetensors.torch import load_file

    input_ids = load_file(str(calib.path))["input_ids"]
    if token_ids_sha256(input_ids) != calib.sha256:
        raise CalibrationError(f"calibration tokens {calib.path} changed since they were sampled; delete the build dir")
    return input_ids


def _fingerprint_change(inputs: dict[str, Any]) -> Any:
    spec: CalibrationSpec = inputs["spec"]
    path = Path(spec.source).expanduser()
    return [spec.model_dump(), stat_fingerprint(path)] if path.exists() else None


fingerprint_calibration_task = task(
    name="calibration-fingerprint", persist_result=True,
    cache_policy=ChangeDetector(step="calibration-fingerprint", key_fn=_fingerprint_change),
)(source_fingerprint)


def calibration_dir(root: Path, source_identity: str, spec: CalibrationSpec, fingerprint: str) -> Path:
    """The calibration set depends on the source and the calibration spec, not on the format: every variant of a
    matrix (and every rebuild with another recipe) shares it, in this directory."""
    key = sha256_json([source_identity, spec.model_dump(exclude={"batch_size"}), fingerprint])
    return root / key[:16]


def _calibration_dir_of(inputs: dict[str, Any]) -> Path:
    return calibration_dir(inputs["root"], inputs["source_identity"], inputs["spec"], inputs["fingerprint"])


@task(name="calibration-data", persist_result=True, cache_policy=step_policy(
    "calibration", "source_identity", "spec", "fingerprint", exclude={"spec": ("batch_size",)},
    writes_into=_calibration_dir_of))
def calibration_task(spec: CalibrationSpec, tokenizer_dir: Path, source_identity: str, fingerprint: str,
                     root: Path) -> CalibrationSet:
    out_dir = calibration_dir(root, source_identity, spec, fingerprint)
    return build_calibration_set(spec, tokenizer_dir, out_dir / "calibration.safetensors")
