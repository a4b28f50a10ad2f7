"""Fuzzing the parsers that read hostile bytes: the submission (envelope / instance) parser,
the multipart parser, and the submission endpoint. A small budget in CI; ``bench/fuzz.py`` runs
100,000+ inputs. The only acceptable outcomes are a parse result or the package's own error."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.errors import BadSubmissionError
from server.multipart import parse_multipart
from sync_protocol.envelope import parse_submission
from sync_protocol.errors import ProtocolError
from tests.security.fuzzing import TOKENS, multipart_seeds, mutate, xml_seeds
from tests.server.collect import collect_headers, with_device_id

XML_SEEDS = xml_seeds()
MP_SEEDS = multipart_seeds()
FAST = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@FAST
@given(st.sampled_from(XML_SEEDS), st.randoms(use_true_random=False))
def test_parse_submission__mutated_xml__result_or_protocol_error(seed, rng):
    """Should parse or raise ProtocolError for any mutation of a valid submission."""
    try:
        parse_submission(mutate(seed, rng))
    except ProtocolError:
        pass


@FAST
@given(st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=20)), max_size=30))
def test_parse_submission__token_soup__result_or_protocol_error(pieces):
    """Should parse or raise ProtocolError for XML-ish token soup."""
    try:
        parse_submission(b"".join(pieces))
    except ProtocolError:
        pass


@FAST
@given(st.sampled_from(MP_SEEDS), st.randoms(use_true_random=False))
def test_parse_multipart__mutated_body__parts_or_bad_submission(seed, rng):
    """Should split or raise BadSubmissionError (a 400 for Collect) for any mutated upload."""
    body, boundary = seed
    try:
        parts = parse_multipart(mutate(body, rng), boundary, max_parts=110)
    except BadSubmissionError:
        return
    assert len(parts) <= 111


def test_submission_endpoint__mutated_uploads__never_500(app, field):
    """Should answer every mutated upload with a 2xx/4xx OpenRosaResponse, never a 500."""
    from tests.server.conftest import publish
    from tests.server.forms import xform

    publish(app, field.project_id, xform())
    client = app.test_client()
    rng = random.Random(6)
    statuses = set()
    for i in range(150):
        body, boundary = MP_SEEDS[i % len(MP_SEEDS)]
        resp = client.post(
            with_device_id(f"{field.base}/submission"),
            data=mutate(body, rng),
            headers={
                **collect_headers(),
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
        )
        statuses.add(resp.status_code)
        assert resp.status_code < 500, (i, resp.data[:300])
        assert b"<OpenRosaResponse" in resp.data
    assert 400 in statuses  # the mutations did reach the parsers


def test_mutate__same_seed__same_inputs():
    """Should replay the very same mutations from the same seed (a failure CI found must come
    back locally, and hypothesis must be able to replay an st.randoms example)."""

    def run() -> list[bytes]:
        rng = random.Random(6)
        return [mutate(MP_SEEDS[i % len(MP_SEEDS)][0], rng) for i in range(150)]

    assert run() == run()
