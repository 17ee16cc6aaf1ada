"""`enginewright versions MODEL`: a registered model's versions as a table — verdict, format, effective bits,
aliases and where each is deployed — read from the tags the build and deploy steps set on each version."""

from __future__ import annotations

from dataclasses import dataclass

from enginewright.errors import InputError
from enginewright.registry.registry_client import registry_client


@dataclass(frozen=True)
class VersionRow:
    version: str
    verdict: str
    format: str
    effective_bits: str
    aliases: list[str]
    deployed: list[str]  # "<target>: <status>" for each deploy target the version was sent to


def list_versions(tracking_uri: str, name: str) -> list[VersionRow]:
    """Every version of `name`, newest first; InputError naming the registered models when there is no such one."""
    from mlflow.exceptions import MlflowException

    client = registry_client(tracking_uri)
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models(max_results=50))
        raise InputError(f"no registered model {name!r}; registered: {', '.join(known) or 'none'}") from None
    escaped = name.replace("'", "\\'")
    aliases: dict[str, list[str]] = {}  # the registered model's aliases (search results carry none)
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in sorted(client.search_model_versions(f"name='{escaped}'"), key=lambda mv: -int(mv.version)):
        tags = mv.tags or {}
        deployed = [f"{key.split('.')[1]}: {value}" for key, value in sorted(tags.items())
                    if key.startswith("deploy.") and key.endswith(".status") and key.count(".") == 2]
        rows.append(VersionRow(str(mv.version), tags.get("gate.verdict", "-"), tags.get("quantization.format", "-"),
                               tags.get("quantization.effective_bits", "-"), sorted(aliases.get(str(mv.version), [])),
                               deployed))
    return rows


def versions_table(name: str, rows: list[VersionRow]) -> str:
    head = f"{'version':>7}  {'verdict':<13}{'format':<14}{'bits':>6}  {'aliases':<24}deployed"
    lines = [f"{name}: {len(rows)} version(s)", head]
    for r in rows:
        aliases = ", ".join(f"@{a}" for a in r.aliases) or "-"
        lines.append(f"{r.version:>7}  {r.verdict:<13}{r.format:<14}{r.effective_bits:>6}  {aliases:<24}"
                     f"{'; '.join(r.deployed) or '-'}")
    return "\n".join(lines)
