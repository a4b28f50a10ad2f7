"""Wire formats, submission envelopes and encryption for ODK Collect (pure library).

Modules (stdlib + cryptography + defusedxml only; no Flask, database, file or network I/O):

* :mod:`sync_protocol.xml` - ``parse_xml`` (hardened: DTDs/entities refused), ``local_name``.
* :mod:`sync_protocol.envelope` - ``parse_submission(bytes)`` -> ``EncryptedEnvelope`` (the
  manifest of an encrypted upload) or ``PlainInstance`` (ids, meta, entity blocks, tree).
* :mod:`sync_protocol.crypto` - Collect-exact decryption: ``decrypt_submission`` (in memory),
  ``SubmissionDecryptor`` (streaming, file by file, then ``signature_status()``),
  ``decrypt_stream``; ``encrypt_submission`` reproduces Collect's output for tests, demos and
  benchmarks. ``DecryptedSubmission.require_valid()`` guards any use of the plaintext.
* :mod:`sync_protocol.keys` - RSA 2048-4096 key generation, passphrase-encrypted PKCS#8
  storage (PBKDF2-HMAC-SHA256, 600,000 iterations), loading PKCS#1/PKCS#8/Central archives,
  XForm public key export, fingerprints.
* :mod:`sync_protocol.openrosa` - OpenRosa documents (formList, manifest, OpenRosaResponse).
* :mod:`sync_protocol.constants` - namespaces, part and file names.
* :mod:`sync_protocol.errors` - ``ProtocolError`` and its subclasses; messages never carry key
  material, passphrases or plaintext answers.
"""
