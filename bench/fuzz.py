"""Fuzz run: at least 100,000 mutated inputs through the parsers that read hostile bytes.

    .venv/bin/python bench/fuzz.py                 # 100,000 per target (submission XML, multipart)
    .venv/bin/python bench/fuzz.py --n 20000 --http 2000

Targets: ``sync_protocol.envelope.parse_submission`` (envelopes, plain instances, the shared
vectors' manifests), ``server.multipart.parse_multipart`` (Collect uploads) and the submission
endpoint through the Flask test client on SQLite. Prints throughput, outcome counts, any
unexpected exception (a crash: exit 1) and peak RSS before/after (unbounded memory shows here).
"""

from __future__ import annotations

import argparse
import collections
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(name: str, n: int, fn, seeds, rng, expected: tuple[type, ...]) -> int:
    from tests.security.fuzzing import mutate

    outcomes: collections.Counter[str] = collections.Counter()
    crashes = 0
    t0 = time.perf_counter()
    for i in range(n):
        seed = seeds[i % len(seeds)]
        try:
            fn(seed, mutate(seed if isinstance(seed, bytes) else seed[0], rng))
            outcomes["accepted"] += 1
        except expected as err:
            outcomes[type(err).__name__] += 1
        except Exception as err:  # a crash: report it (type only; inputs may be large)
            crashes += 1
            outcomes[f"CRASH {type(err).__name__}"] += 1
    dt = time.perf_counter() - t0
    top = ", ".join(f"{k} {v}" for k, v in outcomes.most_common(5))
    print(f"{name:<18} {n:>7} inputs  {n / dt:>8.0f}/s  crashes {crashes}  ({top})")
    return crashes


def main() -> int:
    """Run every target and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="inputs per parser target")
    parser.add_argument("--http", type=int, default=5_000, help="inputs through the endpoint")
    parser.add_argument("--seed", type=int, default=20261126)
    args = parser.parse_args()

    from server.errors import BadSubmissionError
    from server.multipart import parse_multipart
    from sync_protocol.envelope import parse_submission
    from sync_protocol.errors import ProtocolError
    from tests.conftest import SHARED_DIR
    from tests.security.fuzzing import multipart_seeds, mutate, xml_seeds

    rng = random.Random(args.seed)
    shared = SHARED_DIR if (SHARED_DIR / "vectors").is_dir() else None
    rss0 = _rss_mb()
    print(
        f"fuzz: seed {args.seed}, shared vectors {'yes' if shared else 'no'}, peak RSS {rss0:.0f} MB"
    )
    crashes = _run("parse_submission", args.n, lambda s, d: parse_submission(d),
                   xml_seeds(shared), rng, (ProtocolError,))  # fmt: skip
    crashes += _run("parse_multipart", args.n, lambda s, d: parse_multipart(d, s[1], max_parts=110),
                    multipart_seeds(shared), rng, (BadSubmissionError,))  # fmt: skip
    rss1 = _rss_mb()

    # the endpoint: every answer must be an OpenRosaResponse below 500
    from server import create_app, db
    from server.services.projects import create_project
    from server.services.users import create_app_user
    from tests.server.collect import collect_headers, with_device_id
    from tests.server.conftest import publish
    from tests.server.forms import xform

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/fuzz.sqlite3"
        db.upgrade(url)
        app = create_app({"DATABASE_URL": url, "VAR_DIR": tmp, "DATA_DIR": f"{tmp}/data",
                          "SECRET_KEY": "f" * 40, "ENV": "testing", "AUTH_FAIL_LIMIT": 10**9})  # fmt: skip
        with app.extensions["kintsugi.db"].sessionmaker() as s:
            project = create_project(s, "Fuzz")
            _, token = create_app_user(s, project, "fuzzer")
            s.commit()
            pid = project.id
        publish(app, pid, xform())
        client = app.test_client()
        seeds = multipart_seeds(shared)
        statuses: collections.Counter[int] = collections.Counter()
        t0 = time.perf_counter()
        for i in range(args.http):
            body, boundary = seeds[i % len(seeds)]
            resp = client.post(
                with_device_id(f"/v1/key/{token}/projects/{pid}/submission"),
                data=mutate(body, rng),
                headers={**collect_headers(),
                         "Content-Type": f"multipart/form-data; boundary={boundary}"},
            )  # fmt: skip
            statuses[resp.status_code] += 1
            if resp.status_code >= 500 or b"<OpenRosaResponse" not in resp.data:
                crashes += 1
        dt = time.perf_counter() - t0
        app.extensions["kintsugi.db"].engine.dispose()
    print(f"{'POST /submission':<18} {args.http:>7} inputs  {args.http / dt:>8.0f}/s  "
          f"statuses {dict(sorted(statuses.items()))}")  # fmt: skip
    rss2 = _rss_mb()
    print(f"peak RSS: start {rss0:.0f} MB, after parsers {rss1:.0f} MB, after HTTP {rss2:.0f} MB")
    print(f"total inputs {2 * args.n + args.http}, crashes/500s {crashes}")
    return 1 if crashes else 0


if __name__ == "__main__":
    raise SystemExit(main())
