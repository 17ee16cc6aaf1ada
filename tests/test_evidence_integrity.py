"""The stored per-document records the gate judges (a revision's baseline, a build's candidate) are believed only as
written: an edited, truncated or undigested record file is refused by name, moved aside and evaluated again — it
never changes a verdict and never poisons later builds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.evaluate import Sequence

RECORDS = [{"task": "arc_easy", "subtask": "arc_easy", "doc_id": i, "acc": i % 2, "loglikelihoods": [-1.0, -2.0]}
           for i in range(6)]


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    sequence = Sequence(tmp_path / "store" / "arc_easy.jsonl", "key-1")
    sequence.path.parent.mkdir(parents=True)
    sequence.extend(RECORDS[:3])
    sequence.extend(RECORDS[3:])
    return sequence.path


def test_records_as_written_are_continued(stored: Path) -> None:
    again = Sequence(stored, "key-1")
    assert [r["doc_id"] for r in again.records] == list(range(6)) and again.records[5]["position"] == 5
    assert Sequence(stored, "another key").records == []  # another key starts over, as before


def refused(path: Path, key: str = "key-1") -> tuple[Sequence, list[str]]:
    said: list[str] = []
    return Sequence(path, key, said.append), said


def test_an_edited_record_is_refused_by_name_and_evaluated_again(stored: Path) -> None:
    lines = stored.read_text().splitlines()
    lines[0] = json.dumps(dict(json.loads(lines[0]), acc=1 - json.loads(lines[0])["acc"]))  # one answer marked right
    stored.write_text("\n".join(lines) + "\n")
    sequence, said = refused(stored)
    assert sequence.records == [] and not stored.exists()
    assert len(said) == 1 and str(stored) in said[0] and "differ from the sha256" in said[0]
    (moved,) = stored.parent.glob("arc_easy.jsonl.refused-*")
    assert moved.read_text().splitlines()[0] == lines[0]  # kept for whoever looks into it
    sequence.extend(RECORDS[:2])  # evaluated again: the sequence is whole and believed again
    assert len(Sequence(stored, "key-1").records) == 2


def test_a_record_cut_mid_line_is_refused_not_a_json_error(stored: Path) -> None:
    stored.write_text(stored.read_text()[:-40])
    sequence, said = refused(stored)
    assert sequence.records == [] and str(stored) in said[0] and "evaluated again" in said[0]


def test_records_stamped_before_digests_existed_are_not_believed(stored: Path) -> None:
    stored.with_suffix(".key").write_text("key-1")  # the old stamp: the key alone
    sequence, said = refused(stored)
    assert sequence.records == [] and "no digest" in said[0]
