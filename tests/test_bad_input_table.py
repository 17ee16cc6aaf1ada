"""Every row of docs/bad-input.md is a test: the command runs in-process and must end with exactly the documented
one-line error and exit code. The table cannot drift from the code.

Placeholders in the table: {ok} (valid build flags on the tiny Llama, with --dry-run so that a row that wrongly
passes validation still does no work; {base} without it, for the matrix), {tmp} (a fresh directory), and the prepared inputs in `inputs()`.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "bad-input.md"
ROW = re.compile(r"^\| *(?P<input>[^|]+?) *\| *`(?P<command>[^`]+)` *\| *`(?P<error>[^`]+)` *\| *(?P<exit>\d) *\|$")


def rows() -> list[dict[str, str]]:
    found = [m.groupdict() for line in TABLE.read_text().splitlines() if (m := ROW.match(line))]
    assert len(found) >= 30, f"{TABLE} lost its rows"
    return found


def inputs(tmp: Path, tiny: Path, data: Path) -> dict[str, str]:
    """Each placeholder's value: real files prepared to be wrong in one way."""
    calib = data / "calib" / "tiny_shakespeare.txt"
    broken = shutil.copytree(tiny, tmp / "broken")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    pickled = shutil.copytree(tiny, tmp / "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    remote = shutil.copytree(tiny, tmp / "remote-code")
    config = json.loads((remote / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling.Model"}}))
    eval_missing = tmp / "eval"
    shutil.copytree(data / "eval" / "hellaswag", eval_missing / "hellaswag")
    eval_bad = tmp / "eval-bad"
    shutil.copytree(data / "eval" / "arc_easy", eval_bad / "arc_easy")
    with (eval_bad / "arc_easy" / "test.jsonl").open("a") as handle:
        handle.write('{"id": "x", "question": \n')
    (tmp / "bad.yaml").write_text("quantization: {format: fp8\n")
    (tmp / "typo.yaml").write_text("quantisation: {format: fp8}\n")
    (tmp / "dup.yaml").write_text("quantization: {format: fp8}\nquantization: {format: int8_sq}\n")
    (tmp / "batch0.yaml").write_text("calibration: {batch_size: 0}\n")
    (tmp / "sample-seed.yaml").write_text("evaluation: {sample_seed: -1}\n")
    (tmp / "trust.yaml").write_text("source: {trust_remote_code: true}\n")
    (tmp / "target-cc.yaml").write_text("name: t\ngpu: g\ncompute_capability: nine\n")
    (tmp / "target-key.yaml").write_text("name: t\ngpu: g\ncompute_capability: '9.0'\nprot: 80\n")
    (tmp / "target-runtime.yaml").write_text("name: t\ngpu: g\ncompute_capability: '9.0'\nruntime: sglang\n")
    (tmp / "target-version.yaml").write_text("name: t\ngpu: g\ncompute_capability: '9.0'\nruntime_version: '0.9'\n")
    (tmp / "target-tp.yaml").write_text("name: t\ngpu: g\ncompute_capability: '9.0'\ngpu_count: 2\n"
                                       "tensor_parallel_size: 4\n")
    (tmp / "target-endpoint.yaml").write_text("name: t\ngpu: g\ncompute_capability: '9.0'\nendpoint: ftp://serving/\n")
    (tmp / "target-wait.yaml").write_text("name: t\ngpu: g\ncompute_capability: '9.0'\nendpoint: http://127.0.0.1:9\n"
                                         "verify: {ready_timeout_s: 0}\n")
    unknown_type = shutil.copytree(tiny, tmp / "unknown-type")
    (unknown_type / "config.json").write_text(json.dumps({**config, "model_type": "nonexistent-arch"}))
    config_only = shutil.copytree(tiny, tmp / "no-tokenizer-json")
    (config_only / "tokenizer.json").unlink()
    (tmp / "latin1.txt").write_bytes("café au lait ".encode("latin-1") * 400)
    (tmp / "empty").mkdir()
    (tmp / "not-empty").mkdir()
    (tmp / "not-empty" / "x").write_text("x")
    base = (f"--model {tiny} --calib {calib} --calib-samples 4 --calib-seq-len 32 --limit 2 --tasks arc_easy "
            f"--eval-data {data / 'eval'}")
    return {"ok": base + " --dry-run", "base": base, "tmp": str(tmp), "tiny": str(tiny), "calib": str(calib), "broken": str(broken),
            "pickled": str(pickled), "remote": str(remote), "eval_missing": str(eval_missing), "eval_bad": str(eval_bad)}


def fill(text: str, values: dict[str, str]) -> str:
    """Replace the known {placeholders} only: error messages may contain braces of their own."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], m[0]), text)


def run_row(command: str, values: dict[str, str], capsys, monkeypatch) -> tuple[int, str]:
    from enginewright.cli.main import main

    words = shlex.split(fill(command, values))
    while words and re.match(r"^[A-Z][A-Z0-9_]*=", words[0]):  # leading VAR=value: the environment of this row
        name, value = words.pop(0).split("=", 1)
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    try:
        code = main(words)
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    lines = capsys.readouterr().err.strip().splitlines()
    return code, lines[-1] if lines else ""


@pytest.fixture
def values(tmp_path: Path, tiny_model: Path, shared_data: Path, monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("ENGINEWRIGHT_HOME", str(tmp_path / "home"))
    for name in ("PREFECT_API_URL", "ENGINEWRIGHT_MLFLOW_WEBHOOK_SECRET", "ENGINEWRIGHT_TRUST_REMOTE_CODE_ALLOW"):
        monkeypatch.delenv(name, raising=False)
    return inputs(tmp_path / "in", tiny_model, shared_data)


@pytest.mark.parametrize("row", rows(), ids=lambda row: row["input"])
def test_each_documented_bad_input_gets_its_documented_error(row, values, tmp_path: Path, capsys, monkeypatch) -> None:
    code, error = run_row(row["command"], values, capsys, monkeypatch)
    assert (code, error) == (int(row["exit"]), fill(row["error"], values))
    home = tmp_path / "home"
    assert not (home / "builds").exists() and not (home / "bundles").exists()  # nothing half-done
    if row["command"].split()[0] in ("build", "matrix"):
        assert not (home / "mlflow.db").exists()  # refused before even a registry store was opened
