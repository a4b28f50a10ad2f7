"""schemathesis against ``/api/v1/openapi.json``: generated requests as an admin never get a 500
and every response matches the documented schema (a bounded number of examples in CI)."""

from __future__ import annotations

import os

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.admin.conftest import HTTPS, basic

#: per operation: 4 in CI; raise locally for a deeper run (KINTSUGI_SCHEMATHESIS_EXAMPLES=200)
EXAMPLES = int(os.environ.get("KINTSUGI_SCHEMATHESIS_EXAMPLES", "4"))


def test_admin_api__generated_requests__no_500_and_match_schema(app, world):
    """Should answer every generated request without a 500 and as documented."""
    app.config["AUTH_FAIL_LIMIT"] = 10**6
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    headers = basic("admin")
    failures: list[str] = []
    for op in operations:

        @given(case=op.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            # positive_data_acceptance is off: the document does not (yet) carry every
            # server-side rule (e.g. the username pattern), so a "valid" body may get a 400.
            case.call_and_validate(
                base_url=HTTPS + "/api/v1",
                headers=headers,
                excluded_checks=[positive_data_acceptance],
            )

        try:
            run()
        except Exception as err:  # collect every operation's failure, then report them all
            failures.append(f"{op.method.upper()} {op.path}: {str(err).splitlines()[0][:300]}")
    assert not failures, "\n".join(failures)
