"""Decryption throughput against the bare primitives, measured in the same run.

Prints:
* small-submission decryptions per second on one core, vs the limit set by one RSA-OAEP
  private decrypt + AES-CFB of the same bytes (+ the signature's second RSA decrypt, which
  Collect's format requires: the limit counts it too, so the ratio compares like with like);
* attachment MB/s through the streaming decryptor vs raw AES-CFB over the same bytes;
* peak RSS growth while stream-decrypting a 100 MB attachment (target < 32 MB).

Run: .venv/bin/python bench/decrypt.py [--mb 100]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from sync_protocol import crypto, keys
from sync_protocol.envelope import parse_submission

CFB = crypto.CFB


def _rate(fn, seconds: float = 2.0) -> float:
    """Calls per second of fn over about ``seconds``."""
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100, help="attachment size for the RSS check")
    parser.add_argument("--rss-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_only:
        rss_check(args.mb)
        return

    key = keys.generate_private_key(2048)
    xml = b"<data id='aso'>" + b"<r>3</r>" * 350 + b"</data>"  # ~3 KB instance
    manifest, files = crypto.encrypt_submission(
        xml, key.public_key(), form_id="aso", version="1", instance_id="uuid:bench"
    )
    env = parse_submission(manifest)

    def ours():
        crypto.decrypt_submission(parse_submission(manifest), key, files)

    wrapped = base64.b64decode(env.encrypted_key)
    signature = base64.b64decode(env.signature)
    aes_key = crypto.unwrap_key(key, env.encrypted_key)
    iv = os.urandom(16)
    ct = files["submission.xml.enc"]

    def bare():
        key.decrypt(wrapped, crypto._OAEP)
        key.decrypt(signature, crypto._OAEP)
        d = Cipher(algorithms.AES(aes_key), CFB(iv)).decryptor()
        d.update(ct)
        d.finalize()

    ours_rate, bare_rate = _rate(ours), _rate(bare)
    print(f"small submissions ({len(xml)} B): {ours_rate:8.1f}/s per core")
    print(f"limit (2x RSA-OAEP + AES-CFB):   {bare_rate:8.1f}/s per core")
    print(f"ratio ours/limit: {ours_rate / bare_rate:.2f} (target >= 0.8)")

    # attachment throughput: 32 MB through decrypt_stream vs raw CFB over the same bytes
    size = 32 << 20
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "a.enc"
        src.write_bytes(crypto._encrypt_bytes(os.urandom(size), aes_key, iv))
        data = src.read_bytes()
        start = time.perf_counter()
        with src.open("rb") as fin, open(os.devnull, "wb") as fout:
            crypto.decrypt_stream(fin, fout, aes_key, iv)
        ours_mbs = size / (1 << 20) / (time.perf_counter() - start)
        start = time.perf_counter()
        d = Cipher(algorithms.AES(aes_key), CFB(iv)).decryptor()
        md5 = hashlib.md5()  # noqa: S324 - the signature format needs the plaintext MD5
        for i in range(0, len(data), crypto.CHUNK_SIZE):
            md5.update(d.update(data[i : i + crypto.CHUNK_SIZE]))
        d.finalize()
        bare_mbs = size / (1 << 20) / (time.perf_counter() - start)
        del data
        print(f"attachment stream: {ours_mbs:8.1f} MB/s (read, decrypt, MD5, write)")
        print(f"limit (AES-CFB + the MD5 the signature needs, in memory): {bare_mbs:6.1f} MB/s")
        print(f"ratio ours/limit: {ours_mbs / bare_mbs:.2f}")
    # the RSS check runs in a fresh process so earlier buffers do not hide its peak
    import subprocess

    subprocess.run([sys.executable, __file__, "--rss-only", "--mb", str(args.mb)], check=True)


def rss_check(mb: int) -> None:
    """Stream-decrypt an ``mb`` MB attachment and print the peak RSS growth."""
    key = os.urandom(32)
    iv = os.urandom(16)
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.enc"
        enc = Cipher(algorithms.AES(key), CFB(iv)).encryptor()
        total = mb << 20
        with big.open("wb") as fh:
            chunk = os.urandom(1 << 20)
            for _ in range(mb):
                fh.write(enc.update(chunk))
            fh.write(enc.update(bytes([16]) * 16) + enc.finalize())
        del chunk
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with big.open("rb") as fin, (Path(tmp) / "big.out").open("wb") as fout:
            n, _ = crypto.decrypt_stream(fin, fout, key, iv)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert n == total
        print(
            f"{mb} MB attachment: peak RSS growth {(after - before) / 1024:.1f} MB (target < 32 MB)"
        )


if __name__ == "__main__":
    main()
