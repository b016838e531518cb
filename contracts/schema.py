"""JSON Schema of the canonical records, for partners: `hub contracts export DIR`."""

from __future__ import annotations

import json
from pathlib import Path

from contracts.records import CONTRACT_VERSION, LicenceGrant, ViolationRecord

__all__ = ["export_schemas", "schemas"]

_BASE = "https://schemas.shenguan-hub.example/contracts"


def schemas() -> dict[str, dict]:
    """File name → JSON Schema (draft 2020-12), keyed by 双公示 codes, versioned in $id."""
    out = {}
    for model, name in ((LicenceGrant, "licence-grant"), (ViolationRecord, "violation-record")):
        schema = model.model_json_schema(by_alias=True, mode="validation")
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{_BASE}/{CONTRACT_VERSION}/{name}.schema.json",
            "x-contract-version": CONTRACT_VERSION,
            **schema,
        }
        out[f"{name}.schema.json"] = schema
    return out


def export_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
