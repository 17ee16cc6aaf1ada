import json
from pathlib import Path

import pytest

from enginewright.config.spec import SourceSpec
from enginewright.errors import CheckpointError
from tasks.sources import resolve_source
from tests.conftest import copy_tree


def test_local_dir_resolves_to_content_hash_independent_of_location(tiny_model: Path, tmp_path: Path) -> None:
    first = resolve_source(SourceSpec(model=str(tiny_model)))
    moved = resolve_source(SourceSpec(model=str(copy_tree(tiny_model, tmp_path / "elsewhere"))))
    assert first.kind == "local" and len(first.revision) == 64
    assert first.identity == moved.identity
    assert first.path != moved.path


def test_changed_weights_change_the_revision(tiny_model: Path, tmp_path: Path) -> None:
    copy = copy_tree(tiny_model, tmp_path / "m")
    (copy / "generation_config.json").write_text("{}")
    assert resolve_source(SourceSpec(model=str(copy))).revision != resolve_source(SourceSpec(model=str(tiny_model))).revision


def test_missing_path_names_it(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"source.model '.*/nope' is not a directory; pass a local"):
        resolve_source(SourceSpec(model=str(tmp_path / "nope")))


def test_remote_code_refused_unless_allowed(tiny_model: Path, tmp_path: Path) -> None:
    copy = copy_tree(tiny_model, tmp_path / "m")
    config = json.loads((copy / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Model"}
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="needs custom code.*trust_remote_code"):
        resolve_source(SourceSpec(model=str(copy)))
    assert resolve_source(SourceSpec(model=str(copy), trust_remote_code=True)).kind == "local"


def test_pickle_only_weights_refused_unless_allowed(tiny_model: Path, tmp_path: Path) -> None:
    copy = copy_tree(tiny_model, tmp_path / "m")
    (copy / "model.safetensors").rename(copy / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="only pickle weights.*allow_pickle_weights"):
        resolve_source(SourceSpec(model=str(copy)))
    assert resolve_source(SourceSpec(model=str(copy), allow_pickle_weights=True)).kind == "local"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "config.json").write_text("{not json"), "config.json is not valid JSON"),
        (lambda d: (d / "config.json").unlink(), "has no config.json"),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64), "are unreadable"),
        (lambda d: (d / "model.safetensors").unlink(), "has no weights"),
        (lambda d: [(d / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")], "has no tokenizer"),
    ],
    ids=["bad-json", "no-config", "corrupt-weights", "no-weights", "no-tokenizer"],
)
def test_unreadable_checkpoints_are_named(tiny_model: Path, tmp_path: Path, damage, message: str) -> None:
    copy = copy_tree(tiny_model, tmp_path / "m")
    damage(copy)
    with pytest.raises(CheckpointError, match=message):
        resolve_source(SourceSpec(model=str(copy)))


def test_revision_on_a_local_dir_is_refused(tiny_model: Path) -> None:
    with pytest.raises(CheckpointError, match="leave revision unset"):
        resolve_source(SourceSpec(model=str(tiny_model), revision="abc"))


def test_hub_id_not_in_offline_cache_says_so() -> None:
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set"):
        resolve_source(SourceSpec(model="no-such-org/no-such-model"))
