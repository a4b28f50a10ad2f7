"""Admin CLI commands with a wrong project id or an output path that cannot be written."""

from __future__ import annotations


def _no_traceback(result):
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )


def test_forms_list__unknown_project__clear_error(runner):
    """Should say 'Project 99 does not exist' (exit 1), not raise NotFoundError as a traceback."""
    result = runner.invoke("forms", "list", "--project", "99")
    _no_traceback(result)
    assert "does not exist" in result.output


def test_export_cases__unknown_project__refused(runner, tmp_path):
    """Should refuse an unknown project id instead of writing an empty CSV and exiting 0."""
    out = tmp_path / "cases.csv"
    result = runner.invoke("export", "cases", "--project", "99", "--out", str(out))
    _no_traceback(result)
    assert "does not exist" in result.output


def test_backup__out_under_a_file__clear_error(runner, tmp_path):
    """Should report an unusable --out path as an error message, not an OSError traceback."""
    (tmp_path / "afile").write_text("x")
    result = runner.invoke("backup", "--out", str(tmp_path / "afile" / "k.tar.gz"))
    _no_traceback(result)
    assert "afile" in result.output


def test_app_users_list__unknown_project__clear_error(runner):
    """Should say the project does not exist rather than list nothing and exit 0."""
    result = runner.invoke("app-users", "list", "--project", "99")
    _no_traceback(result)
    assert "99" in result.output
