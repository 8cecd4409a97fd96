"""The checked-in artifact must be what the source compiles to."""

from __future__ import annotations

import json
import shutil

from app.chain.artifact import ARTIFACT_PATH, SOURCE_PATH, load_artifact, source_sha256
from app.chain.build import build_artifact, check_artifact


def test_checked_in_artifact_matches_source():
    assert check_artifact() == []


def test_artifact_describes_the_registry():
    artifact = load_artifact()
    names = {entry.get("name") for entry in artifact.abi}
    assert {"allocate_batch", "release_batch", "apply_batch", "check_allocate", "anchor",
            "anchors_from", "grant_writer", "Allocated", "Refused", "Anchored"} <= names
    assert artifact.compiler == "vyper" and artifact.compiler_version == "0.4.3"
    assert artifact.source_sha256 == source_sha256()
    assert artifact.bytecode.startswith("0x")


def test_edited_source_is_detected(tmp_path):
    source = tmp_path / SOURCE_PATH.name
    artifact = tmp_path / ARTIFACT_PATH.name
    shutil.copy(SOURCE_PATH, source)
    shutil.copy(ARTIFACT_PATH, artifact)
    source.write_text(source.read_text() + "\n# an edit\n")

    problems = check_artifact(source, artifact, recompile=False)

    assert any("changed since" in p for p in problems)
    assert any("leaseflow contract build" in p for p in problems)


def test_hand_edited_artifact_is_detected(tmp_path):
    artifact = tmp_path / ARTIFACT_PATH.name
    data = json.loads(ARTIFACT_PATH.read_text())
    data["bytecode"] = data["bytecode"][:-2] + "00"
    artifact.write_text(json.dumps(data))

    problems = check_artifact(SOURCE_PATH, artifact)

    assert any("bytecode differs" in p for p in problems)


def test_build_writes_a_current_artifact(tmp_path):
    artifact = tmp_path / "out.json"
    build_artifact(SOURCE_PATH, artifact)
    assert check_artifact(SOURCE_PATH, artifact) == []
