"""Stand-ins for what this machine cannot run; each cites the real source it follows (see README.md):
`bin/trtllm-serve`, `bin/trtllm-bench` and `tensorrt_llm/` follow NVIDIA/TensorRT-LLM as enginewright/serving/runtimes/tensorrt_llm.py
cites it (path and commit per fact); `bin/vllm` (vllm_server.py) and `vllm/` follow vllm-project/vllm at tag v0.26.0
(enginewright/serving/runtimes/vllm.py, each module's docstring) and the real server's recorded answers
(tests/fixtures/vllm-0.26.0/)."""
