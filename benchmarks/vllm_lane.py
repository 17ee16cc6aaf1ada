"""The vLLM lane on a real GPU: a release's bundle served by `vllm serve`, checked and recorded; FP8 vs BF16 speed.

Runs on a GPU worker set up by scripts/gpu_worker/install.sh, with that environment's python (vLLM is never
imported into the build's interpreter: ModelOpt imports vLLM when it is importable, and their fastapi pins
conflict). Needs no enginewright stack beyond its standard-library modules (golden records, endpoint client).

    # 1. vLLM itself: import, and one greedy generation of the bundle's checkpoint offline
    python benchmarks/vllm_lane.py generate --release DIR --bundle BUNDLE --out OUT
    # 2. the release's own vllm-serve.sh: readiness by its versioned id, golden replay, lettered subset, the load
    #    test at the verify step's concurrency (vllm bench serve), and the server's answers recorded as fixtures
    python benchmarks/vllm_lane.py serve --release DIR --bundle BUNDLE --out OUT
    # 3. output tokens/s of a Llama-3-8B-shaped model (random weights), BF16 and ModelOpt-format FP8
    python benchmarks/vllm_lane.py throughput --tokenizer DIR --dtype bf16 --out OUT

DIR is a rendered release folder (`enginewright deploy`, a target with `runtime: vllm`) whose `<model>-v<N>` link
points at the checkpoint on this host; BUNDLE the bundle folder (its golden/ records).
Each stage prints one table and writes `<stage>.json` under OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from enginewright.serving.golden import (  # noqa: E402
    ANSWER_MAX_TOKENS,
    ANSWER_STOP,
    answers_of,
    compare_answers,
    compare_continuations,
    read_golden,
    requests_of,
)
from enginewright.serving.openai_endpoint import Endpoint, wait_until_serving  # noqa: E402


def versions() -> dict[str, str]:
    import torch
    import vllm

    return {"vllm": vllm.__version__, "vllm_commit": str(getattr(vllm, "__commit_id__", "") or ""),
            "torch": torch.__version__, "cuda": str(torch.version.cuda), "gpu": torch.cuda.get_device_name(0),
            "driver": subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                     capture_output=True, text=True).stdout.strip(),
            "python": platform.python_version()}


def deployment_of(release: Path) -> dict[str, Any]:
    return json.loads((release / "deployment.json").read_text())


def served_checkpoint(release: Path) -> Path:
    return release / Path(deployment_of(release)["served_as"]).name


def write(out: Path, name: str, payload: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")


# --- 1. generate -----------------------------------------------------------------------------------------------

def generate(release: Path, bundle: Path, out: Path) -> None:
    from vllm import LLM, SamplingParams

    deployment = deployment_of(release)
    argv = deployment["vllm_serve"]
    quantization = argv[argv.index("--quantization") + 1]
    golden = read_golden(bundle)
    started = time.perf_counter()
    llm = LLM(model=str(served_checkpoint(release)), quantization=quantization, gpu_memory_utilization=0.3,
              max_model_len=2048, seed=0)
    load_s = time.perf_counter() - started
    prompts = [c.prompt for c in golden.continuations] if golden else ["The capital of France is"]
    params = SamplingParams(temperature=0, max_tokens=golden.max_new_tokens if golden else 24)
    outputs = llm.generate(prompts, params)
    served = [o.outputs[0].text for o in outputs]
    result: dict[str, Any] = {"versions": versions(), "quantization": quantization, "load_seconds": load_s,
                              "first": {"prompt": prompts[0], "text": served[0]}}
    if golden:
        replay = compare_continuations(golden.continuations, served)
        result["offline_replay"] = {"matched": replay.matched, "total": replay.total,
                                    "prefix_share": replay.prefix_share,
                                    "per_prompt": [{"prompt": c.prompt, "build": c.text, "vllm": s}
                                                   for c, s in zip(golden.continuations, served, strict=True)]}
    write(out, "generate", result)
    print(f"vllm {result['versions']['vllm']} on {result['versions']['gpu']}: loaded {quantization} in "
          f"{load_s:.1f} s; {prompts[0]!r} -> {served[0]!r}")
    if golden:
        print(f"offline golden replay: {replay.matched}/{replay.total} exact, {100 * replay.prefix_share:.0f} % shared")


# --- 2. serve --------------------------------------------------------------------------------------------------

def http(method: str, url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, dict[str, str], str]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def record_responses(base: str, model_id: str) -> list[dict[str, Any]]:
    """The answers the project reads, as the real server gives them (the stand-in's tests replay these)."""
    completion = {"model": model_id, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
    exchanges = [
        ("GET", "/health", None, None), ("GET", "/v1/models", None, None), ("GET", "/version", None, None),
        ("POST", "/v1/completions", completion, None),
        ("POST", "/v1/completions", {**completion, "logprobs": 1}, None),
        ("POST", "/v1/completions", {**completion, "stream": True}, None),
        ("POST", "/v1/completions", {**completion, "stop": ["\n"], "max_tokens": 4}, None),
        ("POST", "/v1/completions", {**completion, "model": "no-such-model"}, None),
        ("POST", "/v1/completions", {**completion, "max_tokens": -1}, None),
        ("POST", "/v1/completions", {**completion, "prompt": "x " * 5000}, None),
        ("POST", "/v1/completions", None, b"{not json"),
        ("GET", "/no/such/route", None, None),
        ("GET", "/metrics", None, None),
    ]
    recorded = []
    for method, path, body, raw in exchanges:
        status, headers, text = http(method, base + path, body, raw)
        recorded.append({"method": method, "path": path, "request": body if raw is None else raw.decode(),
                         "status": status, "content_type": headers.get("content-type", headers.get("Content-Type")),
                         "body": text})
    return recorded


def start_server(release: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    return subprocess.Popen([str(release / "vllm-serve.sh")], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def bench_serve(base: str, model_id: str, tokenizer: Path, concurrency: int, prompts: int, input_len: int,
                output_len: int, out: Path, label: str) -> dict[str, Any]:
    """`vllm bench serve` against the live server: random prompts of fixed lengths at a fixed concurrency."""
    result_name = f"bench-serve-{label}.json"
    subprocess.run([shutil.which("vllm") or "vllm", "bench", "serve", "--backend", "vllm", "--base-url", base,
                    "--endpoint", "/v1/completions", "--model", model_id, "--tokenizer", str(tokenizer),
                    "--dataset-name", "random", "--random-input-len", str(input_len), "--random-output-len",
                    str(output_len), "--ignore-eos", "--num-prompts", str(prompts), "--max-concurrency",
                    str(concurrency), "--seed", "0", "--save-result", "--result-dir", str(out),
                    "--result-filename", result_name], check=True)
    return json.loads((out / result_name).read_text())


def serve(release: Path, bundle: Path, out: Path, load_concurrency: int, load_requests: int, load_input: int,
          load_output: int) -> None:
    deployment = deployment_of(release)
    argv = deployment["vllm_serve"]
    model_id = argv[argv.index("--served-model-name") + 1]
    base = f"http://127.0.0.1:{argv[argv.index('--port') + 1]}"
    endpoint = Endpoint(base)
    out.mkdir(parents=True, exist_ok=True)
    server = start_server(release, out / "vllm-serve.log")
    result: dict[str, Any] = {"versions": versions(), "model_id": model_id, "argv": argv}
    try:
        ready = wait_until_serving(endpoint, model_id, None, 600)
        result["ready"] = {"ready": ready.ready, "seconds": ready.seconds, "detail": ready.detail}
        print(f"ready={ready.ready} after {ready.seconds:.1f} s ({ready.detail})", flush=True)
        if not ready.ready:
            raise SystemExit(f"vllm serve did not serve {model_id}: see vllm-serve.log")
        wrong = wait_until_serving(endpoint, model_id.rsplit("-v", 1)[0] + "-v0", None, 1)
        result["ready_for_another_version"] = wrong.ready
        golden = read_golden(bundle)
        assert golden is not None, "the bundle has no golden records"
        started = time.perf_counter()
        served = [endpoint.complete(model_id, c.prompt, golden.max_new_tokens) for c in golden.continuations]
        replay = compare_continuations(golden.continuations, served)
        result["replay"] = {"matched": replay.matched, "total": replay.total, "prefix_share": replay.prefix_share,
                            "seconds": time.perf_counter() - started,
                            "per_prompt": [{"prompt": c.prompt, "build": c.text, "vllm": s}
                                           for c, s in zip(golden.continuations, served, strict=True)]}
        requests = requests_of(golden.answers)
        started = time.perf_counter()
        generations = [endpoint.complete(model_id, r.prompt, ANSWER_MAX_TOKENS, list(ANSWER_STOP)) for r in requests]
        subset = compare_answers(golden.answers, answers_of(requests, generations))
        result["subset"] = {"documents": subset.documents, "agreeing": subset.agreeing,
                            "build_correct": subset.build_correct, "served_correct": subset.served_correct,
                            "mcnemar_p": subset.mcnemar_p, "seconds": time.perf_counter() - started,
                            "per_document": [{"doc_sha256": a.doc_sha256, "build": a.answer, "vllm": g}
                                             for a, g in zip(golden.answers, generations, strict=True)]}
        print(f"golden replay {replay.matched}/{replay.total} exact, {100 * replay.prefix_share:.0f} % shared; "
              f"subset {subset.agreeing}/{subset.documents} agree (build {subset.build_correct}, vLLM "
              f"{subset.served_correct} right, McNemar p {subset.mcnemar_p:.3g})", flush=True)
        write(out, "serve", result)  # kept if a later stage fails
        result["metrics_before_load"] = http("GET", base + "/metrics")[2]
        tokenizer = served_checkpoint(release)
        result["load"] = bench_serve(base, model_id, tokenizer, load_concurrency, load_requests, load_input,
                                     load_output, out, f"c{load_concurrency}")
        result["load_saturation"] = bench_serve(base, model_id, tokenizer, 256, 1024, load_input, load_output, out,
                                                "c256")
        (out / "responses.json").write_text(json.dumps({"versions": result["versions"], "model_id": model_id,
                                                        "exchanges": record_responses(base, model_id)}, indent=1))
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
    write(out, "serve", result)
    for label in ("load", "load_saturation"):
        r = result[label]
        print(f"{label}: concurrency {r.get('max_concurrency')}, {r['output_throughput']:.0f} output tok/s, "
              f"TTFT p99 {r.get('p99_ttft_ms', float('nan')):.1f} ms, ITL p99 {r.get('p99_itl_ms', float('nan')):.2f} ms")


# --- 3. throughput ---------------------------------------------------------------------------------------------

FP8_MAX = 448.0


def random_llama8b(out: Path, tokenizer_dir: Path) -> Path:
    """benchmarks/gpu_lane.py's Llama-3-8B-shaped random checkpoint, made once per machine (a rerun reuses it)."""
    import torch
    from gpu_lane import random_llama8b as make  # this folder is sys.path[0] when run as a script

    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        make(out, tokenizer_dir)
    return out


def fp8_modelopt_copy(bf16: Path, out: Path, quant_config: Path) -> Path:
    """The same weights in the layout ModelOpt's FP8 export writes (per-tensor e4m3 weights, `weight_scale`,
    static `input_scale`; `hf_quant_config.json` and `quantization_config` copied from one of our real FP8
    bundles), so vLLM loads it through the same `modelopt` path our bundles take."""
    import torch
    from safetensors.torch import load_file, save_file

    if (out / "config.json").is_file():
        return out
    out.mkdir(parents=True)
    linear = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    for shard in sorted(bf16.glob("*.safetensors")):
        tensors = load_file(shard, device="cuda")
        converted = {}
        for name, tensor in tensors.items():
            if name.endswith(".weight") and name.split(".")[-2] in linear:
                scale = tensor.abs().amax().float() / FP8_MAX
                converted[name] = (tensor.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
                converted[name[:-len("weight")] + "weight_scale"] = scale.reshape(())
                converted[name[:-len("weight")] + "input_scale"] = torch.tensor(8.0 / FP8_MAX, device="cuda")
            else:
                converted[name] = tensor
        save_file({k: v.contiguous() for k, v in converted.items()}, out / shard.name, metadata={"format": "pt"})
    for extra in bf16.iterdir():
        if extra.suffix != ".safetensors" and extra.name != "config.json":
            shutil.copy(extra, out / extra.name)
    index = out / "model.safetensors.index.json"
    if index.is_file():
        doc = json.loads(index.read_text())
        for name, file in list(doc["weight_map"].items()):
            if name.endswith(".weight") and name.split(".")[-2] in linear:
                doc["weight_map"][name[:-len("weight")] + "weight_scale"] = file
                doc["weight_map"][name[:-len("weight")] + "input_scale"] = file
        index.write_text(json.dumps(doc, indent=1))
    config = json.loads((bf16 / "config.json").read_text())
    ours = json.loads((quant_config / "config.json").read_text())
    config["quantization_config"] = ours["quantization_config"]
    (out / "config.json").write_text(json.dumps(config, indent=1))
    if (quant_config / "hf_quant_config.json").is_file():
        shutil.copy(quant_config / "hf_quant_config.json", out / "hf_quant_config.json")
    return out


def timed_generate(llm: Any, prompts: list[list[int]], output_len: int, batch: int) -> dict[str, float]:
    from vllm import SamplingParams, TokensPrompt

    params = SamplingParams(temperature=0, max_tokens=output_len, ignore_eos=True)
    started = time.perf_counter()
    generated = 0
    for first in range(0, len(prompts), batch):
        outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts[first:first + batch]], params,
                               use_tqdm=False)
        generated += sum(len(o.outputs[0].token_ids) for o in outputs)
    seconds = time.perf_counter() - started
    return {"requests": len(prompts), "batch": batch, "output_tokens": generated, "seconds": seconds,
            "output_tokens_per_s": generated / seconds,
            "total_tokens_per_s": (generated + sum(len(p) for p in prompts)) / seconds}


def throughput(tokenizer: Path, dtype: str, work: Path, out: Path, input_len: int, output_len: int,
               concurrency: int, saturation_requests: int) -> None:
    import random

    from vllm import LLM

    bf16 = random_llama8b(work / "llama8b-bf16", tokenizer)
    model, quantization = (bf16, None) if dtype == "bf16" else (
        fp8_modelopt_copy(bf16, work / "llama8b-fp8", tokenizer), "modelopt")
    started = time.perf_counter()
    llm = LLM(model=str(model), quantization=quantization, max_model_len=input_len + output_len + 16, seed=0,
              gpu_memory_utilization=0.9)
    load_s = time.perf_counter() - started
    rng = random.Random(0)
    vocab = llm.get_tokenizer().vocab_size

    def prompts(n: int) -> list[list[int]]:
        return [[rng.randrange(100, vocab - 100) for _ in range(input_len)] for _ in range(n)]

    timed_generate(llm, prompts(concurrency), 16, concurrency)  # warm-up: first-use kernels out of the figures
    at_concurrency = timed_generate(llm, prompts(concurrency * 4), output_len, concurrency)
    saturation = timed_generate(llm, prompts(saturation_requests), output_len, saturation_requests)
    result = {"versions": versions(), "dtype": dtype, "quantization": quantization,
              "model": json.loads((bf16 / "config.json").read_text()),
              "input_len": input_len, "output_len": output_len, "engine_start_seconds": load_s,
              "at_concurrency": at_concurrency, "saturation": saturation}
    write(out, f"throughput-{dtype}", result)
    print(f"{dtype}: engine {load_s:.0f} s; concurrency {concurrency}: {at_concurrency['output_tokens_per_s']:.0f} "
          f"output tok/s; saturation ({saturation_requests} requests at once): "
          f"{saturation['output_tokens_per_s']:.0f} output tok/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)
    for name in ("generate", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--release", type=Path, required=True, help="a rendered vLLM release folder")
        p.add_argument("--bundle", type=Path, required=True, help="its bundle (golden/ records)")
        p.add_argument("--out", type=Path, required=True)
        if name == "serve":
            p.add_argument("--load-concurrency", type=int, default=4, help="the verify step's (target verify:)")
            p.add_argument("--load-requests", type=int, default=32)
            p.add_argument("--load-input", type=int, default=128)
            p.add_argument("--load-output", type=int, default=32)
    p = sub.add_parser("throughput")
    p.add_argument("--tokenizer", type=Path, required=True,
                   help="an FP8 bundle checkpoint: its tokenizer and quantization config are used")
    p.add_argument("--dtype", choices=("bf16", "fp8"), required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/vllm-lane"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--input-len", type=int, default=1024)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--concurrency", type=int, default=32, help="the seed's stated concurrency")
    p.add_argument("--saturation-requests", type=int, default=512)
    args = parser.parse_args()
    if args.stage == "generate":
        generate(args.release, args.bundle, args.out)
    elif args.stage == "serve":
        serve(args.release, args.bundle, args.out, args.load_concurrency, args.load_requests, args.load_input, args.load_output)
    else:
        throughput(args.tokenizer, args.dtype, args.work, args.out, args.input_len, args.output_len, args.concurrency,
                   args.saturation_requests)


if __name__ == "__main__":
    main()
