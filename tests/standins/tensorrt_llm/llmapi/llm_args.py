"""Stand-in: TensorRT-LLM's merge of a YAML options dict into LLM arguments.

Real one: NVIDIA/TensorRT-LLM tensorrt_llm/llmapi/llm_args.py `update_llm_args_with_extra_dict(llm_args,
llm_args_dict, extra_llm_api_options=None)`, which turns known sub-configs (kv_cache_config, scheduler_config,
...) into their pydantic classes (extra="forbid") and merges. Here: the dict is validated against the same
contract (enginewright.serving.runtimes.tensorrt_llm.LlmApiOptions) and merged; nested configs stay dicts.
"""

from enginewright.serving.runtimes.tensorrt_llm import LlmApiOptions


def update_llm_args_with_extra_dict(llm_args, llm_args_dict, extra_llm_api_options=None):
    LlmApiOptions.model_validate(llm_args_dict)
    return {**llm_args, **llm_args_dict}
