"""What makes a result this result: build keys, cache policies, work dirs, hashing, atomic writes, the tool environment."""
