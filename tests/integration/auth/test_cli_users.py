"""`sprout users ...`, `sprout tokens ...` and the first start of `sprout serve --bootstrap`, in-process (Typer's
runner) on a temporary SQLite database, checked against the app running on the same database: a password the
command printed logs in, a token it printed authenticates, a revoked or disabled one does not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from click.testing import Result
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.auth.models import AuditEvent, User
from app.cli import app, common
from app.cli.serve import _first_admin
from app.core.config import get_settings
from app.core.db import create_db_engine, make_session_factory, run_migrations
from app.main import create_app
from tests.support.service import bearer, make_settings

runner = CliRunner()
PASSWORD = "typed at the prompt"


@pytest.fixture
def database(tmp_path, monkeypatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("SPROUT_DATABASE_URL", url)
    for console in (
        common.console,
        common.err,
    ):  # wide enough that rich does not wrap what the tests look for
        monkeypatch.setattr(console, "width", 200)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


@pytest.fixture
def service(database: str) -> Iterator[TestClient]:
    """The app on the database the commands write to."""
    with TestClient(create_app(make_settings(database, worker_enabled=False))) as client:
        yield client


def sprout(*args: str, input: str | None = None) -> Result:  # noqa: A002 (CliRunner's name)
    return runner.invoke(app, list(args), input=input)


def ok(*args: str, input: str | None = None) -> str:  # noqa: A002
    result = sprout(*args, input=input)
    assert result.exit_code == 0, result.output
    return result.output


def shown_password(output: str) -> str:
    found = re.findall(r"password(?: \(shown once\):| ) ?([A-Za-z0-9_-]{16,})", output)
    assert len(found) == 1, output
    return found[0]


def logs_in(client: TestClient, name: str, password: str) -> bool:
    client.cookies.clear()
    form = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    answer = client.post(
        "/login", data={"name": name, "password": password, "csrf_token": csrf}, follow_redirects=False
    )
    client.cookies.clear()
    assert answer.status_code in (303, 401, 422), answer.text  # 422: an empty field
    return answer.status_code == 303 and "sprout_session" in answer.cookies


def whoami(client: TestClient, token: str) -> dict | int:
    response = client.get("/v1/me", headers=bearer(token))
    return response.json() if response.status_code == 200 else response.status_code


def audit_actions(database: str) -> list[tuple[str, str, str]]:
    sessions = make_session_factory(create_db_engine(database))
    with sessions() as session:
        return [
            (e.actor, e.action, e.target) for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        ]


def test_a_generated_password_is_printed_once_and_logs_in(database, service) -> None:
    output = ok("users", "create", "Alice", "--role", "reviewer", "--generate-password")
    assert "created alice (reviewer)" in output
    password = shown_password(output)
    assert logs_in(service, "alice", password)
    assert not logs_in(service, "alice", password + "x")
    listed = ok("users", "list")
    assert password not in listed
    assert re.search(r"alice\s.*reviewer\s.*active\s.*yes", listed), listed
    assert audit_actions(database) == [("local", "user.create", "alice")]


def test_a_prompted_password_is_asked_twice_and_logs_in(database, service) -> None:
    result = sprout("users", "create", "bob", "--role", "service", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output and "shown once" not in result.output
    assert logs_in(service, "bob", PASSWORD)
    # A confirmation that differs is asked again; the password is the one typed twice alike.
    mismatch = sprout(
        "users", "create", "carol", input=f"{PASSWORD}\nsomething else\nthe second one\nthe second one\n"
    )
    assert mismatch.exit_code == 0, mismatch.output
    assert "do not match" in mismatch.output
    assert logs_in(service, "carol", "the second one")
    assert not logs_in(service, "carol", PASSWORD)


def test_a_token_account_has_no_password_and_cannot_log_in(database, service) -> None:
    output = ok("users", "create", "robot", "--role", "service", "--no-password")
    assert "shown once" not in output
    assert re.search(r"robot\s.*service\s.*active\s.*no", ok("users", "list"))
    token = ok("tokens", "create", "--user", "robot").strip().splitlines()[-1]
    assert whoami(service, token)["role"] == "service"
    assert not logs_in(service, "robot", "")
    assert not logs_in(service, "robot", "any password at all")


@pytest.mark.parametrize(
    ("args", "input", "field"),
    [
        (["users", "create", "Bad Name!", "--generate-password"], None, "name"),
        (["users", "create", "dave"], "short\nshort\n", "password"),
        (["users", "set-password", "nobody", "--generate-password"], None, "not found"),
        (["tokens", "create", "--user", "nobody"], None, "not found"),
        (["tokens", "revoke", "424242"], None, "not found"),
        (["tokens", "list", "--user", "nobody"], None, "not found"),
    ],
)
def test_bad_input_is_exit_code_2_naming_the_problem_and_changes_nothing(
    database, args, input, field
) -> None:  # noqa: A002
    result = sprout(*args, input=input)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and field in result.output.split("error:", 1)[1], result.output
    run_migrations(database)
    sessions = make_session_factory(create_db_engine(database))
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 0


def test_a_second_user_of_the_same_name_is_refused(database) -> None:
    ok("users", "create", "erin", "--generate-password")
    again = sprout("users", "create", "ERIN", "--generate-password")
    assert again.exit_code == 2 and "already exists" in again.output
    assert "shown once" not in again.output


def test_tokens_are_printed_once_listed_without_the_secret_and_revoked(database, service) -> None:
    ok("users", "create", "frank", "--role", "reviewer", "--no-password")
    output = ok("tokens", "create", "--user", "frank", "--name", "laptop")
    token = output.strip().splitlines()[-1]
    assert token.startswith("sprout_") and output.count(token) == 1
    token_id = re.search(r"token (\d+) for frank", output).group(1)
    me = whoami(service, token)
    assert (me["name"], me["role"], me["via"]) == ("frank", "reviewer", "token")

    listed = ok("tokens", "list")
    assert token not in listed and token[12:20] not in listed
    assert re.search(rf"{token_id}\s.*frank\s.*laptop\s.*{re.escape(token[:12])}….*never.*active", listed), (
        listed
    )
    assert "frank" in ok("tokens", "list", "--user", "frank")

    assert f"revoked token {token_id}" in ok("tokens", "revoke", token_id)
    assert whoami(service, token) == 401
    assert re.search(rf"{token_id}\s.*frank.*revoked", ok("tokens", "list"))
    actions = [action for _, action, _ in audit_actions(database)]
    assert actions == ["user.create", "token.create", "token.revoke"]


def test_an_expiring_token_shows_its_expiry(database, service) -> None:
    ok("users", "create", "gina", "--no-password")
    token = ok("tokens", "create", "--user", "gina", "--expires-in-days", "2").strip().splitlines()[-1]
    assert whoami(service, token)["name"] == "gina"
    assert "never" not in ok("tokens", "list", "--user", "gina")


def test_disable_enable_set_role_and_set_password(database, service) -> None:
    password = shown_password(ok("users", "create", "hank", "--generate-password"))
    token = ok("tokens", "create", "--user", "hank").strip().splitlines()[-1]

    assert "disable: hank" in ok("users", "disable", "hank")
    assert whoami(service, token) == 401
    assert not logs_in(service, "hank", password)
    assert re.search(r"hank\s.*disabled", ok("users", "list"))
    ok("users", "enable", "hank")
    assert whoami(service, token)["name"] == "hank"
    assert logs_in(service, "hank", password)

    ok("users", "set-role", "hank", "admin")
    assert whoami(service, token)["role"] == "admin"

    new_password = shown_password(ok("users", "set-password", "hank", "--generate-password"))
    assert not logs_in(service, "hank", password)
    assert logs_in(service, "hank", new_password)
    ok("users", "set-password", "hank", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert logs_in(service, "hank", PASSWORD)
    short = sprout("users", "set-password", "hank", input="short\nshort\n")
    assert short.exit_code == 2 and "password" in short.output
    assert logs_in(service, "hank", PASSWORD)
    assert [a for _, a, _ in audit_actions(database)] == [
        "user.create",
        "token.create",
        "user.disable",
        "user.enable",
        "user.role",
        "user.password_reset",
        "user.password_reset",
    ]


def test_the_first_start_creates_one_admin_and_prints_a_working_password_and_token(
    database, service, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(common.console, "width", 300)
    sessions = make_session_factory(create_db_engine(database))
    _first_admin(sessions)
    printed = capsys.readouterr().out
    assert "First start: an admin account was created" in printed
    password = re.search(r"log in to the UI as admin with password (\S+)", printed).group(1)
    token = re.search(r"API token: (sprout_\S+)", printed).group(1)
    assert logs_in(service, "admin", password)
    me = whoami(service, token)
    assert (me["name"], me["role"]) == ("admin", "admin")

    _first_admin(sessions)
    assert capsys.readouterr().out == ""
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1
    assert audit_actions(database) == [("local", "user.create", "admin")]


def test_the_first_start_creates_nobody_once_any_user_exists(database, capsys) -> None:
    ok("users", "create", "ivy", "--role", "reviewer", "--no-password")
    capsys.readouterr()
    sessions = make_session_factory(create_db_engine(database))
    _first_admin(sessions)
    assert capsys.readouterr().out == ""
    with sessions() as session:
        assert list(session.scalars(select(User.name))) == ["ivy"]
