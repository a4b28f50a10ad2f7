"""A real gunicorn (the production config, docker/gunicorn.conf.py) on 127.0.0.1 for fault tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """Start, wait for /readyz, SIGKILL the whole process group."""

    def __init__(self, app_config: dict[str, Any], *, workers: int = 2, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "KINTSUGI_DATABASE_URL": app_config["DATABASE_URL"],
            "KINTSUGI_DATA_DIR": app_config["DATA_DIR"],
            "KINTSUGI_VAR_DIR": app_config["VAR_DIR"],
            "KINTSUGI_SECRET_KEY": app_config["SECRET_KEY"],
            "KINTSUGI_ENV": "production",
            "KINTSUGI_BIND": f"127.0.0.1:{self.port}",
            "KINTSUGI_WORKERS": str(workers),
            "KINTSUGI_LOG_LEVEL": "warning",
        }
        self._log = log.open("ab") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "--config",
             str(REPO / "docker" / "gunicorn.conf.py")],
            cwd=REPO, env=env, start_new_session=True, stdout=self._log, stderr=self._log,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.kill()
        raise AssertionError("gunicorn did not become ready")

    def kill(self) -> None:
        """SIGKILL arbiter and workers at once: no graceful shutdown at all."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        if hasattr(self._log, "close"):
            self._log.close()

    def __enter__(self) -> Gunicorn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
