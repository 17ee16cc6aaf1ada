"""Putting a model in memory and quantizing it: loading, placement, the memory plan, devices, effective bits, GGUF and ModelOpt imports."""
