"""What a serving host does with a rendered release: watch `<model>/current` and, when it moves, stop the server and
start the new release's own serving script (`trtllm-serve.sh`, or `vllm-serve.sh` from its own folder). In tests,
tests/standins/bin goes first on PATH, so the rendered command line runs the stand-in (which checks it against the
real CLI's contract); on a GPU worker (benchmarks/vllm_release.py) nothing goes first and the real `vllm` runs.

Two faults, for the named versions: `serve_instead` starts the server on another checkpoint under the release's own
name (a host that loaded the wrong weights); `serve_as` starts it on a path of another name (a host serving another
model), both with the release's own options file. `shuffled_weights` makes the first kind of wrong weights from a
release's own checkpoint: the real vLLM (and its stand-in) start it, because it keeps the export's quantization
config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

STANDINS_BIN = Path(__file__).resolve().parent / "standins" / "bin"


def shuffled_weights(checkpoint: Path, out: Path) -> Path:
    """`checkpoint` with every weight matrix's elements shuffled (seeded): what a host that loaded the wrong weights
    serves under the release's name. Dtypes, shapes, scales and `hf_quant_config.json` stay, so `vllm serve
    --quantization modelopt` starts it (it refuses a checkpoint without that file) and only the answers are wrong.
    Tied input and output embeddings are untied, the head shuffled apart from the input table: a tied model scores
    each token by its own embedding, so a randomly initialised one echoes its input whatever the shuffle."""
    import json
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    if (out / "config.json").exists():
        return out
    shutil.copytree(checkpoint, out)
    generator = torch.Generator().manual_seed(0)

    def shuffled(tensor: torch.Tensor) -> torch.Tensor:
        order = torch.randperm(tensor.numel(), generator=generator)
        return tensor.reshape(-1)[order].reshape(tensor.shape).contiguous()

    config = json.loads((out / "config.json").read_text())
    untie = bool(config.get("tie_word_embeddings"))
    for shard in sorted(out.glob("*.safetensors")):
        tensors = load_file(shard)
        if untie and "model.embed_tokens.weight" in tensors and "lm_head.weight" not in tensors:
            tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
            index = out / "model.safetensors.index.json"
            if index.is_file():  # a sharded checkpoint names each tensor's shard
                listing = json.loads(index.read_text())
                listing["weight_map"]["lm_head.weight"] = shard.name
                index.write_text(json.dumps(listing, indent=2) + "\n")
        tensors = {name: shuffled(t) if name.endswith(".weight") and t.dim() == 2 else t for name, t in tensors.items()}
        save_file(tensors, shard, metadata={"format": "pt"})
    if untie:
        (out / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}, indent=2) + "\n")
    return out


class ServingHost:
    def __init__(self, model_root: Path, log: Path, serve_instead: dict[str, Path] | None = None,
                 serve_as: dict[str, Path] | None = None, path_first: tuple[Path, ...] = (STANDINS_BIN,)) -> None:
        self.model_root = model_root
        self.path_first = path_first
        self.log = log
        self.serve_instead = dict(serve_instead or {})
        self.serve_as = dict(serve_as or {})
        self.process: subprocess.Popen | None = None
        self.started: list[str] = []  # the release folder names it started, in order
        self._seen: Path | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> ServingHost:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._kill()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            link = self.model_root / "current"
            release = link.resolve() if link.is_symlink() else None
            if release != self._seen:
                self._seen = release
                self._kill()
                if release is not None:
                    self._start(release)

    def _start(self, release: Path) -> None:
        import json

        deployment = json.loads((release / "deployment.json").read_text())
        version = deployment["version"]
        script_name, model_arg = ("vllm-serve.sh", 2) if deployment.get("runtime") == "vllm" else ("trtllm-serve.sh", 1)
        # the stand-in's `#!/usr/bin/env python3` must find this interpreter (torch, transformers), as the image's does
        path = os.pathsep.join([*map(str, self.path_first), str(Path(sys.executable).parent), os.environ["PATH"]])
        env = {**os.environ, "PATH": path}
        if version in self.serve_instead or version in self.serve_as:
            script = (release / script_name).read_text().split("exec ", 1)[1].split()
            if version in self.serve_as:
                served = self.serve_as[version]
            else:  # the wrong weights under the release's own name
                served = self.log.parent / "served-instead" / version / Path(script[model_arg]).name
                served.parent.mkdir(parents=True, exist_ok=True)
                served.unlink(missing_ok=True)
                served.symlink_to(self.serve_instead[version].resolve(), target_is_directory=True)
            script[model_arg] = str(served)  # trtllm-serve <model> … | vllm serve <model> …
            command = [c.strip('"').strip("'") for c in script if c != '"$@"']
        else:
            command = ["sh", str(release / script_name)]
        with self.log.open("a") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=release)
        self.started.append(release.name)

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None


if __name__ == "__main__":  # python -m tests.serving_host <serving>/<target>/<model> <log>: until Ctrl-C
    import time

    with ServingHost(Path(sys.argv[1]), Path(sys.argv[2])):
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
