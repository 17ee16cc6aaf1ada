"""The build key: the bundle's identity and every step's cache key.

sha256 over named parts: the source revision, the recipe (quantization, calibration spec, dtype, runtime
options), the calibration data's content hash and the tool versions. Named parts make a mismatch
explainable (`BuildKey.differences`), as Prefect's cache policies do.
"""

from __future__ import annotations

from dataclasses import dataclass

from enginewright.config.spec import BuildSpec
from enginewright.keys.hashing import sha256_json


@dataclass(frozen=True)
class BuildKey:
    parts: dict[str, str]

    @property
    def digest(self) -> str:
        return sha256_json(self.parts)

    @property
    def short(self) -> str:
        return self.digest[:16]

    def differences(self, other: BuildKey) -> list[str]:
        """Names of the parts that differ, e.g. ['tools'] when only a tool version moved."""
        return sorted(k for k in self.parts.keys() | other.parts.keys() if self.parts.get(k) != other.parts.get(k))


def recipe_of(spec: BuildSpec) -> dict:
    """What of the spec shapes the bundle's bytes. Paths are excluded: content enters via fingerprints."""
    calibration = spec.calibration.model_dump(exclude={"source", "batch_size"})
    return {
        "quantization": spec.quantization.model_dump(),
        "calibration": calibration,
        "dtype": spec.dtype,
        "runtime": spec.runtime.model_dump(),
    }


def compute_build_key(
    source_identity: str, spec: BuildSpec, calibration_fingerprint: str, tool_versions: dict[str, str]
) -> BuildKey:
    return BuildKey(
        parts={
            "source": source_identity,
            "recipe": sha256_json(recipe_of(spec)),
            "calibration_data": calibration_fingerprint,
            "tools": sha256_json(tool_versions),
        }
    )
