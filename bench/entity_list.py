"""Manifest cost of the ``cases`` entity list: the CSV's md5 (before) vs the state hash (after).

Loads N entities (default 100,000; a tenth of them closed) into a fresh SQLite database and,
when it answers, a fresh PostgreSQL database, then times in the same process:

* before: what every manifest request did until now, ``entity_list_csv`` + md5 of its bytes;
* after: ``entity_list_state_hash`` (one aggregate query);
* the whole manifest request as Collect makes it (GET through the Flask test client);
* the CSV download, first (built) and then again (served from the per-process cache).

Prints p50/p95 of each and the before/after ratio. Run:
.venv/bin/python bench/entity_list.py [--entities 100000] [--repeat 20] [--no-postgres]
PostgreSQL from KINTSUGI_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test);
its database is created and dropped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
PASSPHRASE = b"benchmark passphrase (fictional)"
CONTEXT = "kenya-police-abuse"


def _fresh_postgres() -> tuple[str, Callable[[], None]] | None:
    """A fresh PostgreSQL database (bench/reconcile.py's), or None when it is not reachable."""
    from reconcile import _fresh_database

    try:
        return _fresh_database()
    except Exception as err:  # PostgreSQL is optional here
        print(f"PostgreSQL not reachable ({type(err).__name__}); SQLite only")
        return None


def _app(url: str, tmp: str):
    from reconcile import _app as app_on

    return app_on(url, tmp, HOT_CACHE_SECONDS=0)


def load(app, n: int) -> tuple[int, str, dict, list[str] | None]:
    """A project with the form published, a device, and ``n`` entities: (pid, token, report, props)."""
    from sqlalchemy import insert

    from server.blobs import make_blob_store
    from server.models import Entity
    from server.services.projects import create_project
    from server.services.publishing import publish_context
    from server.services.users import create_app_user

    sm = app.extensions["kintsugi.db"].sessionmaker
    with sm() as s:
        project = create_project(s, "Bench (fictional)", passphrase=PASSPHRASE)
        version, _ = publish_context(
            s, make_blob_store(app.config, s), project, app.config, CONTEXT
        )
        _user, token = create_app_user(s, project, "Bench device")
        s.commit()
        pid, report = project.id, version.report
    props = (report.get("entity_list") or {}).get("properties")
    domains = [d["id"] for d in report["domains"]]
    rng = random.Random(3)
    now = dt.datetime.now(dt.UTC)
    start = time.perf_counter()
    with app.extensions["kintsugi.db"].engine.begin() as conn:
        chunk = 5000
        for base in range(0, n, chunk):
            conn.execute(insert(Entity), [
                {"project_id": pid, "dataset": "cases", "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                 "label": f"BN-{i:06d}", "version": rng.randint(1, 5),
                 "properties": {"case_code": f"BN-{i:06d}", "last_assessment_date": "2026-05-01",
                                "last_collection_point": rng.choice(["intake", "six_month", "annual"]),
                                "casework_type": rng.choice(report["casework_types"]),
                                "office": rng.choice(report["offices"] or ["HQ"]),
                                **{f"score_{d}": f"{rng.randint(4, 16) / 4:g}" for d in domains}},
                 "deleted_at": now if i % 10 == 9 else None,
                 "updated_at": now - dt.timedelta(seconds=n - i)}
                for i in range(base, min(n, base + chunk))
            ])  # fmt: skip
    print(f"  loaded {n} entities in {time.perf_counter() - start:.1f} s")
    return pid, token, report, props


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[max(0, int(0.95 * len(times)) - 1)]


def run(label: str, url: str, n: int, repeat: int) -> None:
    from server import db
    from server.models import Project
    from server.services import entities

    print(f"{label}:")
    tmp = tempfile.mkdtemp()
    try:
        db.upgrade(url)
        app = _app(url, tmp)
        pid, token, report, props = load(app, n)
        sm = app.extensions["kintsugi.db"].sessionmaker
        with sm() as s:
            project = s.get(Project, pid)

            def before() -> str:
                return entities.entity_list_hash(
                    entities.entity_list_csv(s, project, "cases", props)
                )

            def after() -> str:
                return entities.entity_list_state_hash(s, project, "cases", props)

            size = len(entities.entity_list_csv(s, project, "cases", props))
            old50, old95 = timed(before, max(3, repeat // 4))
            new50, new95 = timed(after, repeat)
        print(f"  CSV: {size / 1e6:.1f} MB")
        print(f"  before (CSV + md5)       p50 {old50:8.1f} ms  p95 {old95:8.1f} ms")
        print(f"  after (state hash)       p50 {new50:8.1f} ms  p95 {new95:8.1f} ms")
        print(f"  ratio before/after (p50): {old50 / new50:.0f}x")

        client = app.test_client()
        base = f"/v1/key/{token}/projects/{pid}/forms/{report['form_id']}"
        headers = {"X-OpenRosa-Version": "1.0"}

        def manifest() -> None:
            resp = client.get(f"{base}/manifest?deviceID=bench", headers=headers)
            assert resp.status_code == 200 and b"entityList" in resp.data, resp.data

        def download() -> None:
            resp = client.get(f"{base}/attachments/cases.csv?deviceID=bench", headers=headers)
            assert resp.status_code == 200 and len(resp.data) == size

        m50, m95 = timed(manifest, repeat)
        print(f"  manifest GET (HTTP)      p50 {m50:8.1f} ms  p95 {m95:8.1f} ms")
        t = time.perf_counter()
        download()
        first = (time.perf_counter() - t) * 1000
        d50, d95 = timed(download, max(3, repeat // 4))
        print(f"  cases.csv GET, first     {first:8.1f} ms (built, then cached)")
        print(f"  cases.csv GET, cached    p50 {d50:8.1f} ms  p95 {d95:8.1f} ms")
        app.extensions["kintsugi.db"].engine.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run("SQLite", f"sqlite:///{tmp}/bench.sqlite3", args.entities, args.repeat)
    if args.no_postgres:
        return
    fresh = _fresh_postgres()
    if fresh is None:
        return
    url, drop = fresh
    try:
        run("PostgreSQL", url, args.entities, args.repeat)
    finally:
        drop()


if __name__ == "__main__":
    main()
