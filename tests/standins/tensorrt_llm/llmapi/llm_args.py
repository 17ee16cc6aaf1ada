"""Stand-in: TensorRT-LLM's merge of a YAML options dict into LLM arguments (nested dicts stay dicts here)."""


def update_llm_args_with_extra_dict(llm_args, llm_args_dict, extra_llm_api_options=None):
    return {**llm_args, **llm_args_dict}
