"""Bounded soak: simulated Collect devices against gunicorn + PostgreSQL (+ the reconcile worker
when installed) on loopback. Stops by itself and prints error rate, throughput, p95 latency and
server memory at start and end (target: no growth beyond 10 %).

    .venv/bin/python bench/soak.py                  # 10 minutes, 50 devices (the issue's figure)
    .venv/bin/python bench/soak.py --duration 60    # a quick look

PostgreSQL comes from KINTSUGI_TEST_POSTGRES_URL (a fresh database is created and dropped).
Each device loops: formList, form download, manifest, HEAD probe, then an upload (a third with a
50 KB photo), resending on failure like Collect (up to 3 tries); 1 in 10 uploads is re-sent as
a duplicate of an earlier one.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import secrets
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _rss_mb(proc) -> float:
    import psutil

    p = psutil.Process(proc.pid)
    return sum(c.memory_info().rss for c in [p, *p.children(recursive=True)]) / 1e6


def main() -> int:
    """Run the soak and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    args = parser.parse_args()

    import requests
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    from server import create_app
    from server.services.projects import create_project
    from server.services.users import create_app_user
    from sync_protocol.crypto import encrypt_submission
    from tests.conftest import _create_postgres_database
    from tests.reliability.server import Gunicorn
    from tests.server.collect import collect_headers, multipart_body, with_device_id
    from tests.server.conftest import publish
    from tests.server.forms import instance, xform

    url, drop = _create_postgres_database()
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"kintsugi-soak-{uuid.uuid4().hex[:8]}"
    cfg = {
        "DATABASE_URL": url,
        "DATA_DIR": str(tmp / "data"),
        "VAR_DIR": str(tmp / "var"),
        "SECRET_KEY": "soak-" + "s" * 40,
    }
    worker = None
    try:
        from server import db

        db.upgrade(url)
        app = create_app({**cfg, "ENV": "testing"})
        passphrase = secrets.token_urlsafe(24)  # generated per run, never printed
        with app.extensions["kintsugi.db"].sessionmaker() as s:
            project = create_project(s, "Soak office", passphrase=passphrase.encode())
            _, token = create_app_user(s, project, "Soak tablets")
            s.commit()
            pid, key_b64 = project.id, project.active_key.public_key_b64
        publish(app, pid, xform(public_key=key_b64))
        public_key = load_der_public_key(base64.b64decode(key_b64))
        app.extensions["kintsugi.db"].engine.dispose()

        tmp.mkdir(parents=True, exist_ok=True)
        server = Gunicorn(cfg, workers=args.workers, log=tmp / "gunicorn.log")
        env = {**os.environ, "KINTSUGI_DATABASE_URL": url, "KINTSUGI_DATA_DIR": cfg["DATA_DIR"],
               "KINTSUGI_VAR_DIR": cfg["VAR_DIR"], "KINTSUGI_SECRET_KEY": cfg["SECRET_KEY"],
               "KINTSUGI_RECONCILE_INTERVAL": "5", "KINTSUGI_RECONCILE_PROJECT": str(pid),
               "KINTSUGI_PASSPHRASE_FILE": str(tmp / "passphrase")}  # fmt: skip
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "passphrase").write_text(passphrase + "\n")
        probe = subprocess.run(
            [str(Path(sys.executable).parent / "kintsugi"), "reconcile", "--help"],
            env=env, capture_output=True,
        )  # fmt: skip
        if probe.returncode == 0:
            worker = subprocess.Popen(
                ["/bin/sh", str(REPO / "docker" / "entrypoint.sh"), "worker"],
                env={**env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        base = f"{server.url}/v1/key/{token}/projects/{pid}"
        lat: list[float] = []
        errors: list[str] = []
        counts = {"requests": 0, "uploads": 0, "duplicates": 0, "retries": 0}
        lock = threading.Lock()
        stop = time.monotonic() + args.duration
        sent: list[tuple[bytes, str]] = []

        def call(sess, method: str, path: str, **kw) -> int:
            t0 = time.perf_counter()
            try:
                r = sess.request(method, with_device_id(path), timeout=60, **kw)
                status = r.status_code
            except requests.RequestException as err:
                status = 0
                with lock:
                    errors.append(type(err).__name__)
            with lock:
                lat.append(time.perf_counter() - t0)
                counts["requests"] += 1
                if status >= 500:
                    errors.append(str(status))
            return status

        def device(n: int) -> None:
            rng = random.Random(n)
            sess = requests.Session()
            sess.headers.update(collect_headers())
            while time.monotonic() < stop:
                call(sess, "GET", f"{base}/formList")
                call(sess, "GET", f"{base}/forms/household.xml")
                call(sess, "GET", f"{base}/forms/household/manifest")
                call(sess, "HEAD", f"{base}/submission")
                if sent and rng.random() < 0.1:
                    body = rng.choice(sent)
                    with lock:
                        counts["duplicates"] += 1
                else:
                    media = {"p.jpg": rng.randbytes(50_000)} if rng.random() < 0.33 else {}
                    iid = f"uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"
                    plain = instance(
                        photo="p.jpg" if media else "", name=f"device {n}", instance_id=iid
                    )
                    # encrypted on the "phone" exactly as Collect does; the worker decrypts
                    manifest, files = encrypt_submission(
                        plain, public_key, form_id="household", version="1", instance_id=iid,
                        media=media,
                    )  # fmt: skip
                    body = multipart_body(manifest, files=files)
                    with lock:
                        sent.append(body)
                for attempt in range(3):
                    status = call(
                        sess, "POST", f"{base}/submission", data=body[0],
                        headers={"Content-Type": body[1]},
                    )  # fmt: skip
                    if status == 201:
                        break
                    with lock:
                        counts["retries"] += 1
                    time.sleep(0.5 * (attempt + 1))
                with lock:
                    counts["uploads"] += 1
                time.sleep(rng.uniform(0.0, 0.2))

        # warm up, then take the starting memory figure
        for _ in range(20):
            requests.get(f"{base}/formList", timeout=10)
        rss_start = _rss_mb(server.proc)
        started = time.monotonic()
        threads = [threading.Thread(target=device, args=(i,)) for i in range(args.devices)]
        for t in threads:
            t.start()
        mid = None
        while any(t.is_alive() for t in threads):
            time.sleep(1)
            if mid is None and time.monotonic() - started > args.duration / 2:
                mid = _rss_mb(server.proc)
        elapsed = time.monotonic() - started
        rss_end = _rss_mb(server.proc)
        worker_state = (
            "not installed"
            if worker is None
            else "running throughout"
            if worker.poll() is None
            else f"exited with {worker.returncode}"
        )
        server.kill()

        from sqlalchemy import create_engine, text

        if worker is not None:  # let the worker drain what is pending, bounded
            eng = create_engine(url)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with eng.connect() as conn:
                    left = conn.execute(
                        text("SELECT count(*) FROM submissions WHERE status = 'pending_decryption'")
                    ).scalar()
                if not left:
                    break
                time.sleep(2)
            eng.dispose()
        eng = create_engine(url)
        with eng.connect() as conn:
            stored = conn.execute(text("SELECT count(*) FROM submissions")).scalar()
            by_status = dict(
                conn.execute(text("SELECT status, count(*) FROM submissions GROUP BY status")).all()
            )
        eng.dispose()
        unique = len({b[0] for b in sent})
        lat.sort()
        p95 = lat[int(len(lat) * 0.95) - 1] * 1000 if lat else float("nan")
        print(f"soak: {args.devices} devices, {elapsed:.0f} s, gunicorn {args.workers} workers, "
              f"PostgreSQL, reconcile worker {worker_state}")  # fmt: skip
        print(f"requests        {counts['requests']}  ({counts['requests'] / elapsed:.1f} req/s)")
        print(f"uploads         {counts['uploads']}  ({counts['uploads'] / elapsed:.1f}/s), "
              f"duplicates {counts['duplicates']}, retries {counts['retries']}")  # fmt: skip
        print(
            f"error rate      {len(errors) / max(1, counts['requests']):.4%}  ({len(errors)} errors)"
        )
        print(f"latency         p50 {statistics.median(lat) * 1000:.1f} ms, p95 {p95:.1f} ms")
        print(f"stored          {stored} submissions for {unique} distinct uploads "
              f"({'exactly once' if stored == unique else 'MISMATCH'})")  # fmt: skip
        print(f"by status       {by_status} (encrypted uploads; the worker decrypts and verifies)")
        growth = (rss_end - rss_start) / rss_start
        print(f"server RSS      start {rss_start:.0f} MB, mid {mid or 0:.0f} MB, end {rss_end:.0f} MB "
              f"(growth {growth:+.1%}; target <= +10%)")  # fmt: skip
        return 0 if stored == unique and growth <= 0.10 and not errors else 1
    finally:
        if worker is not None:
            import signal

            os.killpg(worker.pid, signal.SIGKILL)
        drop()


if __name__ == "__main__":
    raise SystemExit(main())
