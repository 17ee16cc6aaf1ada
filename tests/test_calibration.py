import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from enginewright.config.spec import CalibrationSpec
from enginewright.errors import CalibrationError
from tasks.calibration import (
    build_calibration_set,
    check_enough_text,
    load_calibration_ids,
    source_fingerprint,
    token_ids_sha256,
)


@pytest.fixture(scope="module")
def shakespeare(shared_data: Path) -> str:
    return str(shared_data / "calib" / "tiny_shakespeare.txt")


def test_sampling_is_deterministic_and_seeded(shakespeare: str, tokenizer_dir: Path, tmp_path: Path) -> None:
    spec = CalibrationSpec(source=shakespeare, num_samples=6, seq_len=32, seed=1)
    a = build_calibration_set(spec, tokenizer_dir, tmp_path / "a.safetensors")
    b = build_calibration_set(spec, tokenizer_dir, tmp_path / "b.safetensors")
    c = build_calibration_set(spec.model_copy(update={"seed": 2}), tokenizer_dir, tmp_path / "c.safetensors")
    assert a.sha256 == b.sha256 != c.sha256
    ids = load_calibration_ids(a)
    assert tuple(ids.shape) == (6, 32)
    assert token_ids_sha256(ids) == a.sha256


def test_changed_token_file_is_refused(shakespeare: str, tokenizer_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    calib = build_calibration_set(CalibrationSpec(source=shakespeare, num_samples=2, seq_len=16), tokenizer_dir,
                                  tmp_path / "c.safetensors")
    ids = load_calibration_ids(calib)
    save_file({"input_ids": ids + 1}, str(calib.path))
    with pytest.raises(CalibrationError, match="changed since they were sampled"):
        load_calibration_ids(calib)


def test_too_little_text_names_source_and_limit(tokenizer_dir: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.txt"
    small.write_text("A short paragraph of calibration text.\n\nAnother one.\n")
    spec = CalibrationSpec(source=str(small), num_samples=64, seq_len=256)
    with pytest.raises(CalibrationError, match=r"gives 0 sequences of 256 tokens, fewer than calibration.num_samples=64"):
        check_enough_text(spec, AutoTokenizer.from_pretrained(tokenizer_dir))
    with pytest.raises(CalibrationError, match="fewer than calibration.num_samples=64"):
        build_calibration_set(spec, tokenizer_dir, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_jsonl_directory_and_text_field(tokenizer_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    (folder / "a.jsonl").write_text("".join(json.dumps({"body": f"row {i} " * 40}) + "\n" for i in range(20)))
    spec = CalibrationSpec(source=str(folder), num_samples=4, seq_len=64, text_field="body")
    assert build_calibration_set(spec, tokenizer_dir, tmp_path / "c.safetensors").num_samples == 4
    with pytest.raises(CalibrationError, match="has no field 'text'; set calibration.text_field to one of \\['body'\\]"):
        build_calibration_set(spec.model_copy(update={"text_field": "text"}), tokenizer_dir, tmp_path / "d.safetensors")


def test_bad_sources_are_named(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(CalibrationError, match="suffix '.csv'; accepted: .txt, .jsonl"):
        source_fingerprint(CalibrationSpec(source=str(tmp_path / "x.csv")))
    with pytest.raises(CalibrationError, match="does not exist"):
        source_fingerprint(CalibrationSpec(source=str(tmp_path / "missing.txt")))


def test_fingerprint_follows_content_not_path(shakespeare: str, tmp_path: Path) -> None:
    copy = tmp_path / "copy.txt"
    copy.write_bytes(Path(shakespeare).read_bytes())
    assert source_fingerprint(CalibrationSpec(source=shakespeare)) == source_fingerprint(CalibrationSpec(source=str(copy)))
    copy.write_text("different")
    assert source_fingerprint(CalibrationSpec(source=shakespeare)) != source_fingerprint(CalibrationSpec(source=str(copy)))


def test_the_preflight_tokenizer_gives_the_stream_transformers_gives(tokenizer_dir: Path, shared_data: Path) -> None:
    """The preflight counts calibration tokens with tokenizer.json directly (milliseconds, not transformers' 4-s
    import): its token stream must be the one the build's AutoTokenizer produces, EOS included."""
    from enginewright.quant.models import TokenizerFile, preflight_tokenizer
    from tasks.calibration import token_stream

    spec = CalibrationSpec(source=str(shared_data / "calib" / "wikitext2_train.txt"), num_samples=8, seq_len=256)
    fast = preflight_tokenizer(tokenizer_dir)
    assert isinstance(fast, TokenizerFile)
    reference = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert fast.eos_token_id == reference.eos_token_id is not None
    stream = token_stream(spec, fast, stop_after=20_000)
    assert stream == token_stream(spec, reference, stop_after=20_000)
    assert stream.count(reference.eos_token_id) > 10  # many documents, each ended by EOS
