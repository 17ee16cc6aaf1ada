"""Stand-in package for `tensorrt_llm.llmapi` (NVIDIA/TensorRT-LLM tensorrt_llm/llmapi/): only llm_args."""
