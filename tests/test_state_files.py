"""State files the build reads back (an offloaded model's quantized state, the AutoQuantize search state) are loaded
tensors-and-containers only: a pickled payload in one — written by whoever can write a shared home or search
directory — is refused, and its code never runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from enginewright.keys.hashing import sha256_file


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PAYLOAD_MARK']}",))


@pytest.fixture
def pickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    mark = tmp_path / "payload-ran"
    monkeypatch.setenv("PAYLOAD_MARK", str(mark))
    path = tmp_path / "state.pth"
    torch.save({"modelopt_state": Payload(), "model_state_dict": {}}, path)
    return path, mark


def test_the_offloaded_models_state_refuses_a_pickled_payload(pickled, monkeypatch) -> None:
    from enginewright.quant import placement

    path, mark = pickled
    monkeypatch.setattr(placement, "is_offloaded", lambda model: True)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        placement.restore_quantized_into(torch.nn.Linear(2, 2), path)
    assert not mark.exists()


def test_the_search_state_refuses_a_pickled_payload_even_with_its_digest(pickled) -> None:
    from tasks.auto_quantize import SearchState, load_search_state

    path, mark = pickled
    state = SearchState(path=path, sha256=sha256_file(path), candidates=("fp8",), method="gradient", score_steps=1,
                        recipe_names={})
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_search_state(state)
    assert not mark.exists()
    # and the same file loaded the old way would have run it: the test can fail
    torch.load(path, weights_only=False)
    assert mark.exists()
