"""Ingest benchmark: encrypted Collect-like submissions against gunicorn, vs. an fsync floor.

For each database (PostgreSQL, SQLite), payload (3 KB, 1 MB) and concurrency (1, 8) it starts
``gunicorn 'server:create_app()'`` with 2 workers, POSTs N submissions exactly as Collect does
(HEAD is not repeated per request: Collect probes once per batch), and prints submissions/s,
p50 and p95. In the same run, the same load goes to a *floor*: a minimal WSGI app under the same
gunicorn settings that reads the body, fsyncs it to a file and answers 201. The ratio
server/floor is the figure that matters (targets: >= 0.5 at concurrency 8 on PostgreSQL, p95 <
100 ms for 3 KB).

Usage: ``.venv/bin/python bench/ingest.py [--count 1000] [--backends postgres,sqlite]``.
Traffic goes to 127.0.0.1 only; every loop is bounded by --count.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKERS = 2
THREADS = 4  # gthread: a worker keeps serving while another request waits on fsync


# ---------------------------------------------------------------- the floor (imported by gunicorn)


def floor_app(environ, start_response):
    """Minimal WSGI app: read the body, fsync it to a file, answer 201."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    directory = os.environ.get("FLOOR_DIR", tempfile.gettempdir())
    path = os.path.join(directory, uuid.uuid4().hex)
    with open(path, "wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    start_response("201 Created", [("Content-Type", "text/xml"), ("Content-Length", "0")])
    return [b""]


# ---------------------------------------------------------------- Collect-like uploads


def _multipart(manifest: bytes, files: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = str(uuid.uuid4())
    out = bytearray()
    parts = [("xml_submission_file", "instance.xml", "text/xml", manifest)]
    parts += [(n, n, "application/octet-stream", d) for n, d in files.items()]
    for name, filename, ctype, data in parts:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}'
            "\r\n\r\n"
        ).encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def make_bodies(public_key, count: int, variant: str) -> list[tuple[bytes, str]]:
    """``count`` distinct encrypted uploads: ~3 KB (text only) or ~1 MB (plus a photo)."""
    from tests.server.collect import encrypt_like_collect

    bodies = []
    for i in range(count):
        answers = "".join(f"<q{j}>{secrets.token_hex(16)}</q{j}>" for j in range(60))
        plaintext = (
            "<?xml version='1.0' encoding='UTF-8' ?>"
            f'<data id="bench" version="1">{answers}<meta><instanceID>i{i}</instanceID></meta></data>'
        ).encode()
        media = {"photo.jpg": secrets.token_bytes(1_000_000)} if variant == "1MB" else {}
        manifest, files = encrypt_like_collect(public_key, "bench", "1", plaintext, media)
        bodies.append(_multipart(manifest, files))
    return bodies


# ---------------------------------------------------------------- running things


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_gunicorn(
    app_spec: str, env: dict[str, str], chdir: Path, threads: int = THREADS
) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "-w", str(WORKERS),
            "-k", "gthread" if threads > 1 else "sync",
            "--threads", str(threads),
            "-b", f"127.0.0.1:{port}",
            "--log-level", "warning",
            "--chdir", str(chdir),
            app_spec,
        ],
        env={**os.environ, **env},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    import requests

    for _ in range(200):
        try:
            requests.get(url + "/", timeout=1)
            return proc, url
        except requests.RequestException:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"gunicorn for {app_spec} did not start")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_load(url: str, bodies: list[tuple[bytes, str]], concurrency: int) -> dict[str, float]:
    """POST every body once with ``concurrency`` client threads; return throughput and latency."""
    import threading

    import requests

    local = threading.local()
    headers = {"X-OpenRosa-Version": "1.0", "User-Agent": "org.odk.collect.android/bench"}

    def post(item: tuple[bytes, str]) -> tuple[float, int]:
        sess = getattr(local, "s", None)
        if sess is None:
            sess = local.s = requests.Session()
        body, ctype = item
        t0 = time.perf_counter()
        resp = sess.post(url, data=body, headers={**headers, "Content-Type": ctype}, timeout=60)
        return time.perf_counter() - t0, resp.status_code

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(post, bodies))
    wall = time.perf_counter() - start
    lat = sorted(r[0] for r in results)
    bad = [code for _, code in results if code != 201]
    if bad:
        raise RuntimeError(f"{len(bad)} requests failed, e.g. status {bad[0]}")
    return {
        "rate": len(bodies) / wall,
        "p50": statistics.median(lat) * 1000,
        "p95": lat[int(len(lat) * 0.95) - 1] * 1000,
    }


def _prepare_server(url: str, data_dir: Path) -> tuple[str, object]:
    """Migrate, create an encrypted project, publish the bench form, create an app user."""
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    from server import create_app, db
    from server.blobs import make_blob_store
    from server.services.forms import publish_form
    from server.services.projects import create_project
    from server.services.users import create_app_user

    db.upgrade(url)
    app = create_app(
        {
            "DATABASE_URL": url,
            "DATA_DIR": str(data_dir),
            "SECRET_KEY": "bench",
            "VAR_DIR": str(data_dir),
        }
    )
    with app.extensions["kintsugi.db"].sessionmaker() as session:
        project = create_project(session, "Bench", passphrase=b"bench passphrase, fictional")
        key_b64 = project.active_key.public_key_b64
        xform = (
            '<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml">'
            "<h:head><h:title>Bench</h:title><model>"
            f'<submission method="post" base64RsaPublicKey="{key_b64}"/>'
            '<instance><data id="bench" version="1"><meta><instanceID/></meta></data></instance>'
            "</model></h:head><h:body/></h:html>"
        ).encode()
        publish_form(session, make_blob_store(app.config, session), project, xform)
        _user, token = create_app_user(session, project, "bench device")
        session.commit()
        pid = project.id
    app.extensions["kintsugi.db"].engine.dispose()
    public_key = load_der_public_key(base64.b64decode(key_b64))
    return f"/v1/key/{token}/projects/{pid}/submission?deviceID=collect%3Abench", public_key


def _prefill(url: str, count: int) -> None:
    """Insert ``count`` submission rows for the bench form with one SQL statement."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    series = (
        "SELECT g FROM generate_series(1, :n) AS g"
        if url.startswith("postgresql")
        else "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < :n) "
        "SELECT g FROM s"
    )
    columns = (
        "INSERT INTO submissions (form_id, form_version_id, instance_id, encrypted, status,"
        " flags, complete, xml_blob_key, xml_sha256, xml_size, received_at, updated_at)"
        " SELECT 1, 1, 'uuid:prefill-' || g, true, 'pending_decryption', '[]', true,"
        " 'prefill/' || g, '', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM "
    )
    with engine.begin() as conn:
        conn.execute(text(columns + "(" + series + ") AS t"), {"n": count})
    # settle statistics now, so autovacuum does not steal the cores during the measurement
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(
            text("VACUUM ANALYZE submissions" if url.startswith("postgresql") else "ANALYZE")
        )
    engine.dispose()
    print(f"prefilled {count} submission rows", flush=True)


def _postgres_db() -> tuple[str, callable]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from server.config import normalise_database_url

    admin = make_url(
        normalise_database_url(
            os.environ.get("KINTSUGI_TEST_POSTGRES_URL")
            or "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        )
    )
    name = f"kintsugi_bench_{secrets.token_hex(4)}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()

    def drop():
        engine = create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    return admin.set(database=name).render_as_string(hide_password=False), drop


def main() -> int:
    """Run the benchmark matrix and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--variants", default="3KB,1MB")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--threads", type=int, default=THREADS, help="gunicorn threads/worker")
    parser.add_argument(
        "--blob-backend",
        choices=["local", "postgres"],
        help="override the default blob store (postgres on PostgreSQL, local on SQLite)",
    )
    parser.add_argument(
        "--prefill",
        type=int,
        default=0,
        help="insert this many submission rows first (is ingest flat as the table grows?)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    rows = []
    for backend in args.backends.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"kintsugi-bench-{backend}-"))
        drop = None
        try:
            if backend not in {"postgres", "sqlite"}:
                raise SystemExit(f"unknown backend {backend!r}")
            if backend == "postgres":
                url, drop = _postgres_db()
            else:
                url = f"sqlite:///{work / 'bench.sqlite3'}"
            path, public_key = _prepare_server(url, work / "data")
            if args.prefill:
                _prefill(url, args.prefill)
            env = {
                "KINTSUGI_DATABASE_URL": url,
                "KINTSUGI_DATA_DIR": str(work / "data"),
                "KINTSUGI_VAR_DIR": str(work),
                "KINTSUGI_SECRET_KEY": "bench",
                "KINTSUGI_ENV": "production",
                **({"KINTSUGI_BLOB_BACKEND": args.blob_backend} if args.blob_backend else {}),
                "FLOOR_DIR": str(work / "floor"),
            }
            (work / "floor").mkdir()
            server, server_url = _start_gunicorn("server:create_app()", env, REPO, args.threads)
            floor, floor_url = _start_gunicorn(
                "ingest:floor_app", env, REPO / "bench", args.threads
            )
            try:
                for variant in args.variants.split(","):
                    for conc in (int(c) for c in args.concurrency.split(",")):
                        bodies = make_bodies(public_key, args.count, variant)
                        f = run_load(floor_url + "/submission", bodies, conc)
                        bodies = make_bodies(public_key, args.count, variant)
                        s = run_load(server_url + path, bodies, conc)
                        rows.append((backend, variant, conc, s, f))
                        print(
                            f"{backend:8} {variant:4} c={conc}  server {s['rate']:7.1f}/s "
                            f"p50 {s['p50']:6.1f} ms p95 {s['p95']:6.1f} ms | floor "
                            f"{f['rate']:7.1f}/s p50 {f['p50']:6.1f} ms p95 {f['p95']:6.1f} ms"
                            f" | ratio {s['rate'] / f['rate']:.2f}",
                            flush=True,
                        )
            finally:
                _stop(server)
                _stop(floor)
        finally:
            if drop is not None:
                drop()
            shutil.rmtree(work, ignore_errors=True)
    print("\nbackend  size conc  server/s  p50ms  p95ms  floor/s  f.p95ms  ratio")
    for backend, variant, conc, s, f in rows:
        print(
            f"{backend:8} {variant:4} {conc:4}  {s['rate']:8.1f} {s['p50']:6.1f} {s['p95']:6.1f}"
            f" {f['rate']:8.1f} {f['p95']:8.1f}  {s['rate'] / f['rate']:.2f}"
        )
    _verdicts(rows)
    return 0


def _verdicts(rows: list) -> None:
    """Print the issue's targets next to what this run measured (same machine, same run)."""
    central = {1: 51.0, 8: 103.0}  # ODK Central's encrypted ingest, submissions/s (issue #4)
    for backend, variant, conc, s, f in rows:
        notes = []
        if backend == "postgres" and conc == 8:
            notes.append(f"floor ratio {s['rate'] / f['rate']:.2f} (target >= 0.5)")
        if variant == "3KB":
            notes.append(f"p95 {s['p95']:.0f} ms (target < 100)")
            if conc in central:
                notes.append(f"{s['rate'] / central[conc]:.1f}x Central's {central[conc]:.0f}/s")
        if notes:
            print(f"{backend} {variant} c={conc}: " + "; ".join(notes))


if __name__ == "__main__":
    sys.exit(main())
