"""Fictional field work for tests: Collect-shaped instances of a compiled form, encrypted like Collect."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from form_compiler.instance import build_instance
from sync_protocol.crypto import encrypt_submission


def mean_or_none(values: list[str], n_subdomains: int) -> float | None:
    """Independent arithmetic of the scoring rule: mean of 1-4 ratings, blank below max(2, half)."""
    counted = [int(v) for v in values if v in {"1", "2", "3", "4"}]
    need = max(2, -(-n_subdomains // 2))
    return sum(counted) / len(counted) if len(counted) >= need else None


def expected_scores(report: dict[str, Any], ratings: dict[str, str]) -> dict[str, float | None]:
    return {
        d["id"]: mean_or_none([ratings[s] for s in d["subdomains"]], len(d["subdomains"]))
        for d in report["domains"]
    }


def ratings_for(report: dict[str, Any], values: dict[str, str] | str) -> dict[str, str]:
    """Ratings for every subdomain: a per-domain value ("3") or explicit per subdomain."""
    out = {}
    for d in report["domains"]:
        for s in d["subdomains"]:
            out[s] = values if isinstance(values, str) else values.get(s, values.get(d["id"], "3"))
    return out


def instance_xml(
    report: dict[str, Any],
    *,
    case_code: str,
    point: str,
    date: str,
    ratings: dict[str, str],
    entity_id: str,
    instance_id: str | None = None,
    deprecated_id: str | None = None,
    device_scores: dict[str, float | None] | None = None,
    survivor_view: dict[str, str] | None = None,
    notes: dict[str, str] | None = None,
    base_version: int = 1,
    trunk_version: int | None = None,
    branch_id: str | None = None,
    consent: str = "yes",
) -> tuple[str, bytes]:
    """(instanceID, instance XML) as the compiled form would submit it."""
    refs = report["refs"]
    answers: dict[str, str] = {refs["consent"]: consent}
    if consent == "yes":
        answers[refs["collection_point"]] = point
        if point == "intake":
            answers[refs["case_code_new"]] = case_code
        else:
            answers[refs["case"]] = entity_id
        answers[refs["case_code"]] = case_code
        answers[refs["assessment_date"]] = date
        answers[refs["assessor"]] = "CW-07"
        answers[refs["casework_type"]] = report["casework_types"][0]
        answers[refs["office"]] = report["offices"][0] if report["offices"] else "HQ"
        answers[refs["return_environment"]] = "yes"
        scores = expected_scores(report, ratings) if device_scores is None else device_scores
        for d in report["domains"]:
            for s, ref in zip(d["subdomains"], d["rating_refs"], strict=True):
                answers[ref] = ratings[s]
            score = scores.get(d["id"])
            answers[d["score_ref"]] = "" if score is None else repr(score)
            if survivor_view and d["id"] in survivor_view:
                answers[d["survivor_rating_ref"]] = survivor_view[d["id"]]
            if notes and d["id"] in notes:
                answers[d["note_ref"]] = notes[d["id"]]
    instance_id = instance_id or f"uuid:{uuid.uuid4()}"
    entity = None
    if consent == "yes":
        # as pyxform 2024.1 writes it: the offline attributes are always there, maybe empty
        entity = {"dataset": "cases", "id": entity_id, "create": "0", "update": "1",
                  "baseVersion": str(base_version), "trunkVersion": "" if trunk_version is None else str(trunk_version),
                  "branchId": branch_id or "", "label": case_code}  # fmt: skip
        if point == "intake":  # an offline create: version 1 on the device, no trunk
            entity |= {"create": "1", "update": "0", "baseVersion": "", "trunkVersion": ""}
    xml = build_instance(
        report, answers, instance_id=instance_id, entity=entity, deprecated_id=deprecated_id
    )
    return instance_id, xml


def encrypted_upload(
    report: dict[str, Any], public_key: Any, instance_id: str, xml: bytes
) -> tuple[bytes, dict[str, bytes]]:
    """(manifest, {name: ciphertext}) exactly as Collect would upload them."""
    return encrypt_submission(
        xml,
        public_key,
        form_id=report["form_id"],
        version=report["version"],
        instance_id=instance_id,
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``predicate`` (another process is at work) until true; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.1)


def start_worker(runner: Any, field: Any, log_path: Path) -> subprocess.Popen:
    """``kintsugi reconcile`` as a long-running worker process of its own (polling every 0.2 s),
    its output in ``log_path``; stop it with SIGTERM."""
    kintsugi = Path(sys.executable).parent / "kintsugi"
    with log_path.open("w") as out:  # the worker keeps its own copy of the descriptor
        return subprocess.Popen(
            [str(kintsugi), "reconcile", "--project", str(field.project_id), "--passphrase-file",
             str(field.passphrase_file), "--interval", "0.2"],
            env={**os.environ, **runner.env}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
