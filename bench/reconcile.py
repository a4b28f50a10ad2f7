"""Reconciliation throughput and case-page latency on PostgreSQL.

1. Ingests N encrypted Collect-format submissions (through the ingest service, as the HTTP
   view does) into a fresh PostgreSQL database, then reconciles them with 1 worker process and
   again (after a reset) with 2 worker processes. Prints submissions/s and, measured in the
   same run, the bare limit: one RSA-OAEP private decrypt + AES-CFB of the same bytes per
   submission on one core. Target: >= 0.5 of the limit per worker.
2. Bulk-loads a caseload of C cases / 4C assessments and times the caseload query
   (``list_cases``, first page and an overdue filter) and a case page (``get_case``): p50/p95.
   Target: p95 < 200 ms at 100,000 cases / 400,000 assessments.

Run: .venv/bin/python bench/reconcile.py [--submissions 10000] [--cases 100000]
PostgreSQL from KINTSUGI_TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test);
a fresh database is created and dropped.

3. With ``--decode N`` only the worker's CPU-only decode (``_decode``: manifest, key unwrap,
   decryption, signature, instance, reading, scoring, the assessment row) of N distinct
   submissions, against the bare 2 RSA-OAEP private decrypts + AES-CFB of the same
   submissions, in CPU time of fresh processes (SQLite, no PostgreSQL). ``--against DIR``
   alternates them with another checkout (e.g. ``/work/main``) in ABBA order and checks that
   both decode to the same outcomes: the before/after of a change to decoding.
   Run: .venv/bin/python bench/reconcile.py --decode 500 --pairs 6 --against ../main
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import multiprocessing
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PASSPHRASE = b"benchmark passphrase (fictional)"
ADMIN_URL = os.environ.get(
    "KINTSUGI_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _fresh_database() -> tuple[str, callable]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = make_url(ADMIN_URL)
    name = f"kintsugi_bench_{secrets.token_hex(4)}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop():
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    return admin.set(database=name).render_as_string(hide_password=False), drop


def _app(url: str, tmp: str, **extra):
    """The server app on ``url`` (also used by bench/export.py and bench/entity_list.py)."""
    from server import create_app

    return create_app({
        "ENV": "testing", "SECRET_KEY": "bench-" + "x" * 40, "DATABASE_URL": url,
        "VAR_DIR": tmp, "DATA_DIR": tmp + "/data", "BASE_URL": "http://127.0.0.1",
        "INSTRUMENTS_DIR": str(REPO / "instruments"), **extra,
    })  # fmt: skip


def _instance(report, rng, code, entity, point, date):
    from form_compiler.instance import build_instance

    refs = report["refs"]
    answers = {refs["consent"]: "yes", refs["collection_point"]: point, refs["case_code"]: code,
               refs["assessment_date"]: date, refs["assessor"]: "B", refs["casework_type"]: report["casework_types"][0],
               refs["office"]: report["offices"][0], refs["return_environment"]: "yes"}  # fmt: skip
    answers[refs["case_code_new"] if point == "intake" else refs["case"]] = (
        code if point == "intake" else entity
    )
    for d in report["domains"]:
        vals = [str(rng.randint(1, 4)) for _ in d["rating_refs"]]
        for ref, v in zip(d["rating_refs"], vals, strict=True):
            answers[ref] = v
        answers[d["score_ref"]] = repr(sum(map(int, vals)) / len(vals))
    instance_id = f"uuid:{uuid.uuid4()}"
    ent = {"dataset": "cases", "id": entity, "create": "1" if point == "intake" else "0",
           "update": "0" if point == "intake" else "1", "baseVersion": "1", "label": code}  # fmt: skip
    return instance_id, build_instance(report, answers, instance_id=instance_id, entity=ent)


def _project(app):
    """A new project with the ASO form published: its id, the form's report, its public key."""
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    from server.blobs import make_blob_store
    from server.services.projects import create_project
    from server.services.publishing import publish_context

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        project = create_project(s, "Bench (fictional)", passphrase=PASSPHRASE)
        version, _ = publish_context(
            s, make_blob_store(app.config, s), project, app.config, "kenya-police-abuse"
        )
        s.commit()
        pid, report, key_b64 = project.id, version.report, project.active_key.public_key_b64
    return pid, report, load_der_public_key(base64.b64decode(key_b64))


def _uploads(report, public, n: int):
    """``n`` Collect-encrypted submissions of 1 intake and 3 follow-ups per case:
    (plaintext instance, manifest, encrypted files) each."""
    from sync_protocol.crypto import encrypt_submission

    rng = random.Random(1)
    for i in range(n):
        code, entity = f"BN-{i // 4:05d}", str(uuid.UUID(int=i // 4 + 1))
        point = ["intake", "six_month", "annual", "annual"][i % 4]
        date = (
            dt.date(2024, 1, 1) + dt.timedelta(days=182 * (i % 4) + (i % 4 == 3) * 365)
        ).isoformat()
        instance_id, xml = _instance(report, rng, code, entity, point, date)
        manifest, files = encrypt_submission(
            xml,
            public,
            form_id=report["form_id"],
            version=report["version"],
            instance_id=instance_id,
        )
        yield xml, manifest, files


def ingest(app, n: int) -> tuple[int, bytes, dict, bytes]:
    """A project with ``n`` encrypted submissions; also one of them: its plaintext instance,
    and the files and manifest it was uploaded as."""
    from server.blobs import make_blob_store
    from server.services.submissions import Upload, receive_submission

    pid, report, public = _project(app)
    sample = None
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        store = make_blob_store(app.config, s)
        for i, (xml, manifest, files) in enumerate(_uploads(report, public, n)):
            sample = sample or (xml, files, manifest)
            receive_submission(s, store, pid, Upload(xml=manifest, parts=files))
            if i % 200 == 199:
                s.commit()
        s.commit()
    return pid, *sample


def _worker(url: str, tmp: str, pid: int, batch: int, threads: int, barrier, queue) -> None:
    from sqlalchemy import event

    from server.services import custody
    from server.services.reconcile import reconcile_pending

    app = _app(url, tmp)
    app.config["RECONCILE_THREADS"] = threads
    sm = app.extensions["kintsugi.db"].sessionmaker
    with sm() as s:
        custody.unlock_project(s, pid, PASSPHRASE, actor="bench")
        s.commit()
    # statements sent, and executions (each row of an executemany is one for the server)
    sent = [0, 0]

    def count(_conn, _cursor, _statement, parameters, _context, executemany) -> None:
        sent[0] += 1
        sent[1] += len(parameters) if executemany else 1

    event.listen(app.extensions["kintsugi.db"].engine, "before_cursor_execute", count)
    barrier.wait()
    start, cpu = time.perf_counter(), time.process_time()
    result = reconcile_pending(sm, pid, config=app.config, batch=batch, actor="bench")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    queue.put((result.processed, seconds, *sent, cpu))


def run_workers(
    url: str, tmp: str, pid: int, workers: int, batch: int, threads: int
) -> tuple[int, float, int, int, float]:
    """Submissions processed, seconds, the statements and executions sent for them, and the
    workers' CPU seconds (all their threads: unlike wall-clock, barely moved by other load)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(workers), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(url, tmp, pid, batch, threads, barrier, queue))
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    n, statements, executions, cpu = (sum(r[i] for r in results) for i in (0, 2, 3, 4))
    return n, max(r[1] for r in results), statements, executions, cpu


def reset(app) -> None:
    from sqlalchemy import text

    with app.extensions["kintsugi.db"].engine.begin() as conn:
        conn.execute(text("TRUNCATE review_items, assessments, cases RESTART IDENTITY CASCADE"))
        conn.execute(text("DELETE FROM entity_backlog"))
        conn.execute(text("DELETE FROM entity_versions"))
        conn.execute(text("DELETE FROM entities"))
        conn.execute(text("UPDATE submissions SET status = 'pending_decryption' WHERE encrypted"))


def bare_limit(xml: bytes, files: dict, rsa_ops: int = 1) -> float:
    """Submissions/s on one core for ``rsa_ops`` RSA-OAEP private decrypts + AES-CFB of the bytes.

    1 is the issue's literal limit. Verifying Collect's signature is a second private decrypt
    (the signature is RSA-encrypted with the public key), so 2 is the like-for-like limit.
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    from sync_protocol import crypto, keys

    key = keys.generate_private_key(2048)
    wrapped = key.public_key().encrypt(os.urandom(32), crypto._OAEP)
    ct = files["submission.xml.enc"]
    aes, iv = os.urandom(32), os.urandom(16)
    n, start = 0, time.process_time()
    while time.process_time() - start < 2.0:
        for _ in range(rsa_ops):
            key.decrypt(wrapped, crypto._OAEP)
        d = Cipher(algorithms.AES(aes), crypto.CFB(iv)).decryptor()
        d.update(ct)
        d.finalize()
        n += 1
    return n / (time.process_time() - start)


def decode_cost(app, pid: int, xml: bytes, encrypted: tuple[bytes, dict] | None = None) -> float:
    """Seconds per submission of the worker's CPU-only work (``_decode``): on the plaintext
    ``xml``, parse the instance, read the assessment, score it and build its row; given the
    ``encrypted`` upload (manifest, files), also read the manifest, decrypt and verify."""
    from types import SimpleNamespace

    from sqlalchemy import select

    from server.models import Submission
    from server.services import custody
    from server.services.reconcile import _decode, version_info
    from sync_protocol.envelope import parse_submission

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        info = version_info(s, s.scalar(select(Submission.form_version_id).limit(1)))
        if encrypted:
            custody.unlock_project(s, pid, PASSPHRASE, actor="bench")
    raw, files = encrypted or (xml, {})
    sub = SimpleNamespace(
        id=1, encrypted=bool(encrypted), instance_id=parse_submission(xml).instance_id
    )
    n, start = 0, time.process_time()
    while time.process_time() - start < 2.0:
        decoded = _decode(info, sub, pid, raw, files)
        n += 1
    assert decoded.assessment is not None and decoded.quarantine is None
    return (time.process_time() - start) / n


def decode_split(n: int, rounds: int) -> dict:
    """The worker's CPU-only decode (``_decode``) of ``n`` distinct bench submissions, in this
    process with the code first on ``sys.path``, against the bare crypto of the same
    submissions (the 2 RSA-OAEP private decrypts and the AES-CFB they cannot do without).

    Both are timed in CPU seconds of this process, alternated round by round, best round each
    (on a shared machine another process's load barely moves CPU time, and not the ratio).
    Also returns a digest of every outcome (quarantine reason, the assessment's columns but
    its random instanceID), so two trees can be shown to decode alike.
    """
    import hashlib
    from types import SimpleNamespace

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
    from sqlalchemy import select

    from server import db
    from server.models import FormVersion
    from server.services import custody
    from server.services.reconcile import _decode, version_info
    from sync_protocol import crypto
    from sync_protocol.envelope import parse_submission

    tmp = tempfile.mkdtemp()  # this process's own, gone with it (see main)
    url = f"sqlite:///{tmp}/bench.sqlite"
    db.upgrade(url)
    app = _app(url, tmp)
    pid, report, public = _project(app)
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        fv = s.scalar(select(FormVersion.id).where(FormVersion.report.is_not(None)))
        info = version_info(s, fv)
        custody.unlock_project(s, pid, PASSPHRASE, actor="bench")
    app.extensions["kintsugi.db"].engine.dispose()
    key = custody.get_private_key(pid, info.fingerprint)
    subs, bare = [], []
    for i, (xml, manifest, files) in enumerate(_uploads(report, public, n)):
        subs.append((SimpleNamespace(id=i + 1, encrypted=True, form_version_id=fv,
                                     instance_id=parse_submission(xml).instance_id), manifest, files))  # fmt: skip
        env = parse_submission(manifest)
        aes_key = crypto.unwrap_key(key, env.encrypted_key)
        iv = crypto.file_ivs(env.instance_id, aes_key, 1)[0]
        bare.append((base64.b64decode(env.encrypted_key), base64.b64decode(env.signature),
                     aes_key, iv, files[env.encrypted_xml_file]))  # fmt: skip

    def decode_all():
        return [_decode(info, sub, pid, manifest, files) for sub, manifest, files in subs]

    def bare_all():
        for wrapped, signature, aes_key, iv, ct in bare:
            key.decrypt(wrapped, crypto._OAEP)
            key.decrypt(signature, crypto._OAEP)
            d = Cipher(algorithms.AES(aes_key), crypto.CFB(iv)).decryptor()
            d.update(ct)
            d.finalize()

    decoded = decode_all()  # warm up (and the outcomes)
    best_decode = best_bare = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        decode_all()
        best_decode = min(best_decode, time.process_time() - start)
        start = time.process_time()
        bare_all()
        best_bare = min(best_bare, time.process_time() - start)
    columns = [c.key for c in decoded[0].assessment.__table__.columns if c.key != "instance_id"]
    digest = hashlib.sha256(repr([
        (d.quarantine, d.assessment and [getattr(d.assessment, c) for c in columns])
        for d in decoded
    ]).encode()).hexdigest()  # fmt: skip
    return {"decode_ms": 1000 * best_decode / n, "bare_ms": 1000 * best_bare / n,
            "outcomes": digest[:16], "quarantined": sum(d.quarantine is not None for d in decoded),
            "code": str(Path(_decode.__code__.co_filename).parents[2])}  # fmt: skip


def decode_compare(against: str | None, n: int, pairs: int, rounds: int) -> None:
    """:func:`decode_split` of this tree, and with ``against`` (another checkout, e.g. main)
    alternated with it in fresh processes, ``pairs`` times in ABBA order."""
    import json
    import subprocess

    trees = [("this", str(REPO))] + ([("against", against)] if against else [])
    runs: dict[str, list[dict]] = {label: [] for label, _ in trees}
    for k in range(pairs):
        for label, repo in trees if k % 2 == 0 else trees[::-1]:
            out = subprocess.run(
                [sys.executable, __file__, "--decode", str(n), "--rounds", str(rounds),
                 "--decode-child", repo], check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            r = json.loads(out.splitlines()[-1])
            assert Path(r["code"]) == Path(repo).resolve(), (r["code"], repo)  # timed that tree
            runs[label].append(r)
            print(f"  {label:8s} {repo}: decode {r['decode_ms']:.3f} ms/submission, bare 2 RSA + AES "
                  f"{r['bare_ms']:.3f} ms, the rest {r['decode_ms'] - r['bare_ms']:.3f} ms, "
                  f"decode / bare {r['decode_ms'] / r['bare_ms']:.2f}; outcomes {r['outcomes']} "
                  f"({r['quarantined']} quarantined)")  # fmt: skip
    summary = {}
    for label, rs in runs.items():
        rest = statistics.median(r["decode_ms"] - r["bare_ms"] for r in rs)
        ratio = statistics.median(r["decode_ms"] / r["bare_ms"] for r in rs)
        summary[label] = rest
        print(
            f"{label}: median over {len(rs)} runs of {n} submissions: the rest of decoding "
            f"{rest:.3f} ms per submission, decode / bare crypto {ratio:.2f}"
        )
    if against:
        same = {r["outcomes"] for rs in runs.values() for r in rs}
        print(f"the rest of decoding, this / against: {summary['this'] / summary['against']:.2f}; "
              f"outcomes {'identical' if len(same) == 1 else 'DIFFER: ' + ', '.join(same)}")  # fmt: skip


def caseload(app, pid: int, n_cases: int) -> None:
    from sqlalchemy import insert, text

    from server.models_cases import Assessment, Case
    from server.services.cases import get_case, list_cases

    engine = app.extensions["kintsugi.db"].engine
    today = dt.date.today()
    rng = random.Random(2)
    scores = {d: 2.5 for d in ("SAF", "LEG", "MEN", "ECO", "SOC", "PHY")}
    start = time.perf_counter()
    with engine.begin() as conn:
        sub_id = conn.execute(text("SELECT min(id) FROM submissions")).scalar()
        conn.execute(text("ALTER TABLE assessments DROP CONSTRAINT uq_assessments_submission_id"))
        chunk = 5000
        for base in range(0, n_cases, chunk):
            conn.execute(insert(Case), [
                {"project_id": pid, "case_code": f"LC-{i:06d}", "entity_uuid": str(uuid.UUID(int=10**9 + i)),
                 "casework_type": rng.choice(["torture", "unlawful_detention"]), "office": rng.choice(["nairobi", "mombasa"]),
                 "status": "open", "intake_date": today - dt.timedelta(days=700), "latest_date": today - dt.timedelta(days=rng.randint(0, 500)),
                 "next_due": today + dt.timedelta(days=rng.randint(-200, 300)), "closure_ready": rng.random() < 0.2,
                 "latest_scores": scores, "intake_scores": scores, "flags": [], "assessment_count": 4,
                 "created_at": dt.datetime.now(dt.UTC), "updated_at": dt.datetime.now(dt.UTC)}
                for i in range(base, min(n_cases, base + chunk))
            ])  # fmt: skip
        first_case = conn.execute(
            text("SELECT min(id) FROM cases WHERE case_code LIKE 'LC-%'")
        ).scalar()
        for base in range(0, n_cases, chunk // 4):
            conn.execute(insert(Assessment), [
                {"project_id": pid, "case_id": first_case + i, "submission_id": sub_id, "instance_id": f"uuid:lc-{i}-{k}",
                 "state": "active", "assessment_date": today - dt.timedelta(days=700 - 182 * k), "collection_point": "annual",
                 "ratings": {}, "scores": scores, "device_scores": scores, "survivor_view": {}, "has_notes": False, "flags": [],
                 "created_at": dt.datetime.now(dt.UTC)}
                for i in range(base, min(n_cases, base + chunk // 4)) for k in range(4)
            ])  # fmt: skip
    # what autovacuum does soon after a bulk load: statistics and the visibility map (counts
    # can then be answered from the index alone)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE cases"))
        conn.execute(text("VACUUM ANALYZE assessments"))
    print(
        f"loaded {n_cases} cases / {4 * n_cases} assessments in {time.perf_counter() - start:.0f} s"
    )

    def timed(fn, repeat=60):
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        return statistics.median(times), times[int(0.95 * len(times)) - 1]

    sm = app.extensions["kintsugi.db"].sessionmaker
    with sm() as s:
        ids = [first_case + rng.randrange(n_cases) for _ in range(60)]
        it = iter(ids)
        for name, fn in (
            ("caseload page", lambda: list_cases(s, pid, limit=50)),
            (
                "caseload, overdue filter",
                lambda: list_cases(s, pid, due="overdue", office="nairobi", limit=50),
            ),
            ("caseload, search", lambda: list_cases(s, pid, q="LC-0999", limit=50)),
            ("case page", lambda: get_case(s, next(it))),
        ):
            p50, p95 = timed(fn)
            print(f"{name:28s} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  (target p95 < 200 ms)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submissions", type=int, default=10000)
    parser.add_argument("--cases", type=int, default=100000)
    parser.add_argument("--batch", type=int, default=100, help="submissions per transaction")
    parser.add_argument(
        "--decode",
        type=int,
        default=0,
        metavar="N",
        help="only the decode CPU split, over N submissions (SQLite, no PostgreSQL)",
    )
    parser.add_argument("--against", help="with --decode: also another checkout, alternated")
    parser.add_argument("--pairs", type=int, default=4, help="with --decode: runs per tree")
    parser.add_argument("--rounds", type=int, default=5, help="with --decode: best of, per run")
    parser.add_argument("--decode-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.decode_child:  # a fresh process timing the tree at that path
        import json
        import shutil

        sys.path.insert(0, args.decode_child)
        tempfile.tempdir = tempfile.mkdtemp()
        try:
            print(json.dumps(decode_split(args.decode, args.rounds)))
        finally:
            shutil.rmtree(tempfile.tempdir)
        return
    if args.decode:
        decode_compare(args.against, args.decode, args.pairs, args.rounds)
        return
    url, drop = _fresh_database()
    tmp = tempfile.mkdtemp()
    try:
        from server import db

        db.upgrade(url)
        app = _app(url, tmp)
        t = time.perf_counter()
        pid, xml, files, manifest = ingest(app, args.submissions)
        print(
            f"ingested {args.submissions} encrypted submissions in {time.perf_counter() - t:.0f} s"
        )
        limit, like = bare_limit(xml, files), bare_limit(xml, files, rsa_ops=2)
        size = len(files["submission.xml.enc"])
        print(f"limit: one RSA-OAEP private decrypt + AES-CFB of {size} B: {limit:.0f}/s per core")
        print(
            f"like-for-like limit (the signature check is a 2nd RSA decrypt): {like:.0f}/s per core"
        )
        decode = decode_cost(app, pid, xml)
        # the whole CPU-only step as the worker runs it on the upload, crypto included
        decode_all = decode_cost(app, pid, xml, (manifest, files))
        # RECONCILE_THREADS (default 1): with 2, a worker's RSA work (which releases the GIL)
        # overlaps its parsing and writing
        configs = ((1, 1), (1, 2), (2, 1), (2, 2))
        for i, (workers, threads) in enumerate(configs):
            if i:
                reset(app)
            n, seconds, statements, executions, cpu = run_workers(
                url, tmp, pid, workers, args.batch, threads
            )
            rate = n / seconds
            per = rate / workers
            print(f"{workers} worker(s) x {threads} decode thread(s): {n} submissions in {seconds:.1f} s = {rate:.0f}/s; "
                  f"per worker {per:.0f}/s = {per / limit:.2f} of the limit (target >= 0.5), "
                  f"{per / like:.2f} of like-for-like; worker CPU {1000 * cpu / n:.2f} ms per submission")  # fmt: skip
            if (workers, threads) == (1, 1):
                # where one worker's time goes, per submission: the crypto (as the like-for-like
                # limit), the CPU-only decode after it, and the rest (loading, applying, the
                # ORM flush and the database itself)
                total_ms, crypto_ms, decode_ms = 1000 / rate, 1000 / like, 1000 * decode
                other_ms = 1000 * decode_all - crypto_ms - decode_ms
                print(f"  per submission {total_ms:.2f} ms = 2 RSA + AES {crypto_ms:.2f} ms "
                      f"+ parse/read/score {decode_ms:.2f} ms "
                      f"+ the rest of decrypting and verifying (manifest, key unwrap, hashing) "
                      f"{other_ms:.2f} ms "
                      f"+ load/apply/write/database {total_ms - 1000 * decode_all:.2f} ms")  # fmt: skip
                print(f"  per submission {statements / n:.3f} SQL statements, {executions / n:.2f} "
                      "executions (each row of an executemany counted)")  # fmt: skip
        if args.cases:
            caseload(app, pid, args.cases)
        app.extensions["kintsugi.db"].engine.dispose()
    finally:
        drop()


if __name__ == "__main__":
    main()
