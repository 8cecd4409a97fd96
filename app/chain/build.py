"""Compile `contracts/LeaseRegistry.vy` into the checked-in artifact, or check it is current.

Behind `leaseflow contract build`. The compiler (vyper) is imported only here, so the rest
of Leaseflow reads the artifact and never compiles at run time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.chain.artifact import ARTIFACT_PATH, CONTRACT_NAME, SOURCE_PATH, source_sha256
from app.chain.errors import ArtifactError


def compile_source(source_path: Path = SOURCE_PATH) -> dict[str, Any]:
    """The artifact's content for the source as it is now (in process, about 0.2-1 s)."""
    import vyper
    from vyper.compiler import compile_code
    from vyper.evm.opcodes import DEFAULT_EVM_VERSION

    try:
        out = compile_code(
            source_path.read_text(encoding="utf-8"),
            contract_path=source_path.name,
            output_formats=["abi", "bytecode", "bytecode_runtime"],
        )
    except Exception as exc:  # vyper raises many types; the message is what matters here
        raise ArtifactError(f"{source_path.name} does not compile: {exc}") from exc
    return {
        "contract_name": CONTRACT_NAME,
        "source": f"contracts/{source_path.name}",
        "source_sha256": source_sha256(source_path),
        "compiler": "vyper",
        "compiler_version": vyper.__version__,
        "evm_version": DEFAULT_EVM_VERSION,
        "abi": out["abi"],
        "bytecode": out["bytecode"],
        "bytecode_runtime": out["bytecode_runtime"],
    }


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def build_artifact(
    source_path: Path = SOURCE_PATH, artifact_path: Path = ARTIFACT_PATH
) -> Path:
    """Recompile and rewrite the artifact; returns its path."""
    data = compile_source(source_path)
    artifact_path.write_text(_dump(data), encoding="utf-8")
    return artifact_path


def check_artifact(
    source_path: Path = SOURCE_PATH,
    artifact_path: Path = ARTIFACT_PATH,
    *,
    recompile: bool = True,
) -> list[str]:
    """Problems that make the artifact disagree with its source; empty when it is current.

    The source hash catches an edited source; recompiling also catches a hand-edited
    artifact or a different compiler version.
    """
    try:
        stored = json.loads(artifact_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"cannot read {artifact_path.name}: {exc}"]
    problems = []
    if stored.get("source_sha256") != source_sha256(source_path):
        problems.append(f"{source_path.name} changed since {artifact_path.name} was built")
    if recompile:
        fresh = compile_source(source_path)
        for key in ("compiler_version", "evm_version", "abi", "bytecode", "bytecode_runtime"):
            if stored.get(key) != fresh[key]:
                problems.append(f"{artifact_path.name}: {key} differs from a fresh compile")
    if problems:
        problems.append("run `leaseflow contract build` and commit the artifact")
    return problems
