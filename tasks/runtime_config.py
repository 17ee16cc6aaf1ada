"""The bundle's `llm_api.yaml`: TensorRT-LLM LLM-API options for the PyTorch backend.

Keys follow `tensorrt_llm.llmapi` (LlmArgs, KvCacheConfig, CudaGraphConfig, SchedulerConfig) so that
`trtllm-serve checkpoint/ --extra_llm_api_options llm_api.yaml` and `LLM(model=..., **yaml)` both accept the file;
every rendered file is checked against the contract taken from TensorRT-LLM's source (enginewright/serving/runtimes/tensorrt_llm.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prefect import task

from enginewright.config.spec import RuntimeSpec
from enginewright.keys.cache_policies import step_policy
from enginewright.keys.work_dir import WorkDir
from enginewright.serving.runtimes.tensorrt_llm import check_llm_api_options


def llm_api_options(spec: RuntimeSpec, kv_cache_fp8: bool) -> dict[str, Any]:
    options: dict[str, Any] = {
        "backend": "pytorch",
        "tensor_parallel_size": spec.tensor_parallel_size,
        "pipeline_parallel_size": spec.pipeline_parallel_size,
        "max_batch_size": spec.max_batch_size,
        "max_num_tokens": spec.max_num_tokens,
        "kv_cache_config": {
            "free_gpu_memory_fraction": spec.kv_cache_free_gpu_memory_fraction,
            "enable_block_reuse": spec.enable_block_reuse,
            "tokens_per_block": spec.tokens_per_block,
            "host_cache_size": spec.kv_cache_host_bytes,
            **({"dtype": "fp8"} if kv_cache_fp8 else {}),
        },
        "scheduler_config": {"capacity_scheduler_policy": spec.scheduler_policy},
        "trust_remote_code": False,
    }
    if spec.max_seq_len is not None:
        options["max_seq_len"] = spec.max_seq_len
    if spec.cuda_graphs:
        options["cuda_graph_config"] = {"max_batch_size": spec.max_batch_size, "enable_padding": True}
    return options


def write_llm_api_yaml(spec: RuntimeSpec, kv_cache_fp8: bool, out_file: Path) -> Path:
    """Written only if TensorRT-LLM would take it (enginewright.serving.runtimes.tensorrt_llm.LlmApiOptions)."""
    options = llm_api_options(spec, kv_cache_fp8)
    check_llm_api_options(options)
    out_file.write_text(yaml.safe_dump(options, sort_keys=False))
    return out_file


@task(name="llm-api-config", cache_policy=step_policy("llm-api-config", "work", "spec", "kv_cache_fp8"),
      persist_result=True)
def runtime_config_task(work: WorkDir, spec: RuntimeSpec, kv_cache_fp8: bool) -> Path:
    return write_llm_api_yaml(spec, kv_cache_fp8, work.llm_api_yaml)
