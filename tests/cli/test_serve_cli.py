"""``levant serve`` and ``levant run`` as a user runs them: real processes, real model."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL, free_port

pytestmark = pytest.mark.slow

LEVANT = [sys.executable, "-m", "levant"]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "LEVANT_HOME": str(home)}


def test_serve_prints_url_and_curl_then_answers(model_home: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*LEVANT, "serve", "--port", str(port)],
        env=_env(model_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not any(line.strip().startswith("curl ") for line in lines):
            line = proc.stdout.readline()
            assert line, "server exited before printing the curl line"
            lines.append(line)
        assert any(f"Levant is starting on http://127.0.0.1:{port}" in line for line in lines)
        curl = next(line for line in lines if line.strip().startswith("curl "))
        assert "Authorization: Bearer" in curl
        assert "/v1/chat/completions" in curl and DEFAULT_MODEL in curl
        deadline = time.monotonic() + 120
        status = 0
        while time.monotonic() < deadline and status != 200:
            with contextlib.suppress(httpx.TransportError):
                status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code
            time.sleep(0.2)
        assert status == 200
        # the printed curl line, run by a shell, gets a real completion
        out = subprocess.run(
            ["bash", "-c", curl.strip() + " -s"], capture_output=True, text=True, timeout=120
        )
        assert '"chat.completion"' in out.stdout, out.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_run_streams_a_reply(model_home: Path) -> None:
    out = subprocess.run(
        [
            *LEVANT,
            "run",
            "smollm2",
            "What is the capital of France?",
            "--max-tokens",
            "12",
            "--temperature",
            "0",
        ],
        env=_env(model_home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()


def test_chat_repl_keeps_history(model_home: Path) -> None:
    out = subprocess.run(
        [*LEVANT, "chat", DEFAULT_MODEL, "--max-tokens", "8", "--temperature", "0"],
        input="Hello\nAnd again\n\n",
        env=_env(model_home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(">>> ") == 3  # two turns answered, then the empty line ends it


def test_run_unknown_model_is_one_clean_line(model_home: Path) -> None:
    out = subprocess.run(
        [*LEVANT, "run", "no-such-model", "hi"],
        env=_env(model_home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "no-such-model" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
