"""Users, API tokens, browser sessions and the audit log over HTTP, on SQLite and PostgreSQL.

- Admins create users (a generated password is returned once), list them, change roles, disable them and reset
  passwords; a disabled user's tokens stop and their sessions end, a reset ends sessions.
- Tokens are shown once and stored only as a digest, listed by prefix, revoked, and refused once expired.
- The UI login form: its own CSRF token, an HttpOnly SameSite=Strict session cookie, redirects only to this
  site, logout that ends the session, CSRF and Origin checks on cookie requests that change something, and a
  rate limit on failed logins that is kept in the database (so every instance enforces it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.auth.models import ApiToken, AuditEvent, LoginFailure, User, WebSession
from app.auth.roles import Role
from app.auth.service import create_user
from app.core.db import transaction
from app.core.security import token_digest
from app.main import create_app
from tests.support.service import bearer, make_settings, new_user_token, running_service

PASSWORD = "a long enough password"


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    """The app with no credentials of its own: each request says who sends it."""
    with running_service(make_settings(database_url, worker_enabled=False), role=None) as client:
        yield client


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    return bearer(new_user_token(client, Role.admin, name="root"))


def sessions_of(client: TestClient):  # noqa: ANN201 (the app's session factory)
    return client.app.state.sessions  # type: ignore[attr-defined]


def add_user(client: TestClient, admin: dict[str, str], name: str, role: str = "reviewer", **extra) -> dict:  # noqa: ANN003
    response = client.post("/v1/users", json={"name": name, "role": role, **extra}, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()


def add_token(client: TestClient, admin: dict[str, str], user: str, **extra) -> dict:  # noqa: ANN003
    response = client.post("/v1/tokens", json={"user": user, **extra}, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()


def login_form(client: TestClient, next_url: str | None = None) -> str:
    """GET /login: the CSRF token of the form (also set as the sprout_login cookie)."""
    form = client.get("/login", params={"next": next_url} if next_url is not None else None)
    assert form.status_code == 200
    return re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)


def post_login(client: TestClient, name: str, password: str, next_url: str | None = None) -> httpx.Response:
    """The whole form round trip, as a browser does it."""
    client.cookies.clear()
    data = {"name": name, "password": password, "csrf_token": login_form(client)}
    if next_url is not None:
        data["next"] = next_url
    return client.post("/login", data=data, follow_redirects=False)


def log_in(client: TestClient, name: str, password: str = PASSWORD) -> dict[str, str]:
    """A logged-in browser: the Cookie header of its session (the client's own cookie jar is left empty)."""
    answer = post_login(client, name, password)
    assert answer.status_code == 303, answer.text
    cookie = answer.cookies["sprout_session"]
    client.cookies.clear()
    return {"Cookie": f"sprout_session={cookie}"}


def csrf_of(client: TestClient, session: dict[str, str]) -> str:
    """The CSRF token a page of this session carries (what the page's scripts send)."""
    page = client.get("/ui", headers=session)
    assert page.status_code == 200, page.text
    return re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text).group(1)


def set_cookie(response: httpx.Response, name: str) -> str:
    cookies = [c for c in response.headers.get_list("set-cookie") if c.startswith(f"{name}=")]
    assert len(cookies) == 1, response.headers.get_list("set-cookie")
    return cookies[0]


def whoami(client: TestClient, headers: dict[str, str]) -> int | dict:
    response = client.get("/v1/me", headers=headers)
    return response.json() if response.status_code == 200 else response.status_code


# --- users ---------------------------------------------------------------------------------------------------


def test_an_admin_creates_users_with_a_password_shown_once(client, admin) -> None:
    alice = add_user(client, admin, "Alice")
    assert (alice["name"], alice["role"], alice["disabled"], alice["can_log_in"]) == (
        "alice",
        "reviewer",
        False,
        True,
    )
    generated = alice["password"]
    assert isinstance(generated, str) and len(generated) >= 16
    # Shown once: neither the user's page nor the list repeats it.
    assert "password" not in client.get(f"/v1/users/{alice['id']}", headers=admin).json()
    listed = client.get("/v1/users", headers=admin)
    assert generated not in listed.text
    assert [u["name"] for u in listed.json()] == ["root", "alice"]
    assert post_login(client, "alice", generated).status_code == 303
    # A chosen password is not echoed.
    bob = add_user(client, admin, "bob", "service", password=PASSWORD)
    assert bob["password"] is None
    assert post_login(client, "bob", PASSWORD).status_code == 303


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Bad Name!", "role": "reviewer"}, "name"),
        ({"name": "", "role": "reviewer"}, "name"),
        ({"name": "carol", "role": "root"}, "role"),
        ({"name": "carol", "role": "reviewer", "password": "short"}, "password"),
        ({"name": "carol", "role": "reviewer", "password": ""}, "password"),
    ],
)
def test_invalid_users_are_422_naming_the_field_and_nothing_is_created(client, admin, body, field) -> None:
    response = client.post("/v1/users", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"][0]["loc"], response.text
    assert [u["name"] for u in client.get("/v1/users", headers=admin).json()] == ["root"]


def test_a_second_user_of_the_same_name_is_409(client, admin) -> None:
    add_user(client, admin, "dave")
    assert client.post("/v1/users", json={"name": "DAVE ", "role": "admin"}, headers=admin).status_code == 409
    assert client.get("/v1/users/999999", headers=admin).status_code == 404


def test_a_role_change_applies_to_the_users_existing_token(client, admin) -> None:
    erin = add_user(client, admin, "erin")
    token = bearer(add_token(client, admin, "erin")["token"])
    assert whoami(client, token)["role"] == "reviewer"
    assert client.post("/v1/datasets", json={"name": "by-erin"}, headers=token).status_code == 403
    changed = client.patch(f"/v1/users/{erin['id']}", json={"role": "service"}, headers=admin)
    assert changed.status_code == 200 and changed.json()["role"] == "service"
    me = whoami(client, token)
    assert (
        me["role"] == "service"
        and "manage_datasets" in me["permissions"]
        and "review" not in me["permissions"]
    )
    assert client.post("/v1/datasets", json={"name": "by-erin"}, headers=token).status_code == 201


def test_a_disabled_user_is_refused_everywhere_until_enabled(client, admin) -> None:
    frank = add_user(client, admin, "frank", password=PASSWORD)
    token = bearer(add_token(client, admin, "frank")["token"])
    browser = log_in(client, "frank")
    assert whoami(client, token)["via"] == "token" and whoami(client, browser)["via"] == "session"

    disabled = client.patch(f"/v1/users/{frank['id']}", json={"disabled": True}, headers=admin)
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert whoami(client, token) == 401
    assert whoami(client, browser) == 401
    assert client.get("/ui", headers=browser).status_code == 401
    assert post_login(client, "frank", PASSWORD).status_code == 401
    with sessions_of(client)() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(WebSession).where(WebSession.user_id == frank["id"])
            )
            == 0
        )

    client.patch(f"/v1/users/{frank['id']}", json={"disabled": False}, headers=admin)
    assert whoami(client, token)["name"] == "frank"
    assert whoami(client, browser) == 401  # the ended session stays ended
    assert whoami(client, log_in(client, "frank"))["name"] == "frank"


def test_a_password_reset_ends_the_users_sessions(client, admin) -> None:
    grace = add_user(client, admin, "grace", password=PASSWORD)
    token = bearer(add_token(client, admin, "grace")["token"])
    browser = log_in(client, "grace")
    reset = client.post(f"/v1/users/{grace['id']}/password", json={}, headers=admin)
    assert reset.status_code == 200
    new_password = reset.json()["password"]
    assert new_password and new_password != PASSWORD
    assert whoami(client, browser) == 401
    assert post_login(client, "grace", PASSWORD).status_code == 401
    assert post_login(client, "grace", new_password).status_code == 303
    assert whoami(client, token)["name"] == "grace"  # tokens are revoked separately, on purpose
    chosen = client.post(
        f"/v1/users/{grace['id']}/password", json={"password": "another long one"}, headers=admin
    )
    assert chosen.status_code == 200 and chosen.json()["password"] is None
    assert post_login(client, "grace", "another long one").status_code == 303
    too_short = client.post(f"/v1/users/{grace['id']}/password", json={"password": "short"}, headers=admin)
    assert too_short.status_code == 422
    assert post_login(client, "grace", "another long one").status_code == 303


# --- tokens --------------------------------------------------------------------------------------------------


def test_a_token_is_shown_once_stored_as_a_digest_listed_by_prefix_and_revoked(client, admin) -> None:
    heidi = add_user(client, admin, "heidi")
    created = add_token(client, admin, "heidi", name="ci")
    secret = created["token"]
    assert secret.startswith("sprout_") and created["prefix"] == secret[:12]
    assert (created["user"], created["name"], created["revoked_at"]) == ("heidi", "ci", None)

    with sessions_of(client)() as session:
        row = session.get(ApiToken, created["id"])
        stored = [getattr(row, column.key) for column in ApiToken.__table__.columns]
        assert row.digest == token_digest(secret)
        assert not any(secret in str(value) for value in stored)
        audit_text = [str((e.target, e.detail)) for e in session.scalars(select(AuditEvent))]
        assert not any(secret in text for text in audit_text)

    me = whoami(client, bearer(secret))
    assert (me["name"], me["via"]) == ("heidi", "token")
    listed = client.get("/v1/tokens", params={"user_id": heidi["id"]}, headers=admin)
    assert secret not in listed.text
    [shown] = listed.json()
    assert (shown["id"], shown["prefix"], shown["last_used_at"] is not None) == (
        created["id"],
        secret[:12],
        True,
    )
    assert "token" not in shown

    assert client.delete(f"/v1/tokens/{created['id']}", headers=admin).status_code == 204
    assert whoami(client, bearer(secret)) == 401
    [revoked] = client.get("/v1/tokens", params={"user_id": heidi["id"]}, headers=admin).json()
    assert revoked["revoked_at"] is not None
    assert client.delete("/v1/tokens/999999", headers=admin).status_code == 404


def test_an_expired_token_is_refused(client, admin) -> None:
    add_user(client, admin, "ivan")
    created = add_token(client, admin, "ivan", expires_in_days=1)
    expires_at = datetime.fromisoformat(created["expires_at"])
    assert abs(expires_at - (datetime.now(UTC) + timedelta(days=1))) < timedelta(minutes=5)
    assert whoami(client, bearer(created["token"]))["name"] == "ivan"
    with transaction(sessions_of(client)) as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == created["id"])
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert whoami(client, bearer(created["token"])) == 401
    assert (
        client.post("/v1/tokens", json={"user": "ivan", "expires_in_days": 0}, headers=admin).status_code
        == 422
    )
    assert client.post("/v1/tokens", json={"user": "nobody"}, headers=admin).status_code == 404


def test_a_malformed_authorization_header_is_401_even_with_a_valid_session(client, admin) -> None:
    add_user(client, admin, "judy", password=PASSWORD)
    browser = log_in(client, "judy")
    assert whoami(client, browser)["name"] == "judy"
    for header in [
        "Basic anVkeTpwYXNz",
        "Bearer",
        "Bearer    ",
        "Token sprout_abc",
        "Bearer sprout_not-a-real-token",
    ]:
        headers = {**browser, "Authorization": header}
        assert whoami(client, headers) == 401, header
        assert client.get("/ui", headers=headers).status_code == 401, header


# --- audit ---------------------------------------------------------------------------------------------------


def test_admin_actions_are_recorded_in_the_audit_log(client, admin) -> None:
    kim = add_user(client, admin, "kim")
    client.patch(f"/v1/users/{kim['id']}", json={"role": "service"}, headers=admin)
    client.patch(f"/v1/users/{kim['id']}", json={"disabled": True}, headers=admin)
    client.patch(f"/v1/users/{kim['id']}", json={"disabled": False}, headers=admin)
    client.patch(f"/v1/users/{kim['id']}", json={"disabled": False}, headers=admin)  # no change, no event
    client.post(f"/v1/users/{kim['id']}/password", json={}, headers=admin)
    token = add_token(client, admin, "kim", name="deploy")
    client.delete(f"/v1/tokens/{token['id']}", headers=admin)

    events = client.get("/v1/audit", headers=admin).json()
    assert [(e["action"], e["target"]) for e in reversed(events)] == [
        ("user.create", "kim"),
        ("user.role", "kim"),
        ("user.disable", "kim"),
        ("user.enable", "kim"),
        ("user.password_reset", "kim"),
        ("token.create", "kim"),
        ("token.revoke", str(token["id"])),
    ]
    assert {e["actor"] for e in events} == {"root"}
    role_change = next(e for e in events if e["action"] == "user.role")
    assert role_change["detail"] == {"before": "reviewer", "after": "service"}
    older = client.get("/v1/audit", params={"limit": 2, "before": events[1]["id"]}, headers=admin).json()
    assert [e["id"] for e in older] == [events[2]["id"], events[3]["id"]]
    assert client.get("/v1/audit", headers=bearer(new_user_token(client, Role.service))).status_code == 403


# --- the UI login ---------------------------------------------------------------------------------------------


def test_logging_in_with_the_form_sets_a_strict_http_only_session_cookie(client, admin) -> None:
    add_user(client, admin, "leo", password=PASSWORD)
    client.cookies.clear()
    form = client.get("/login")
    login_cookie = set_cookie(form, "sprout_login").lower()
    assert "httponly" in login_cookie and "samesite=strict" in login_cookie and "path=/login" in login_cookie
    field = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    assert client.cookies["sprout_login"] == field

    answer = client.post(
        "/login",
        data={"name": "Leo", "password": PASSWORD, "csrf_token": field, "next": "/ui/items/7"},
        follow_redirects=False,
    )
    assert (answer.status_code, answer.headers["location"]) == (303, "/ui/items/7")
    session_cookie = set_cookie(answer, "sprout_session")
    lowered = session_cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/;" in lowered + ";"
    assert 'sprout_login=""' in set_cookie(answer, "sprout_login")  # the form's token is used up
    value = answer.cookies["sprout_session"]
    client.cookies.clear()
    browser = {"Cookie": f"sprout_session={value}"}
    me = whoami(client, browser)
    assert (me["name"], me["via"]) == ("leo", "session")
    page = client.get("/ui", headers=browser)
    assert page.status_code == 200 and "leo" in page.text
    with sessions_of(client)() as session:
        stored = session.scalar(select(WebSession).where(WebSession.digest == token_digest(value)))
        assert stored is not None and value not in (stored.digest, stored.csrf_token)


def test_a_wrong_password_or_an_unknown_name_is_401_without_a_session(client, admin) -> None:
    add_user(client, admin, "mia", password=PASSWORD)
    for name, password in [("mia", "not the password"), ("nobody", PASSWORD)]:
        answer = post_login(client, name, password)
        assert answer.status_code == 401
        assert "wrong name or password" in answer.text and 'action="/login"' in answer.text
        assert "sprout_session" not in answer.cookies


def test_a_user_without_a_password_cannot_log_in(client, admin) -> None:
    with transaction(sessions_of(client)) as session:
        create_user(session, "robot", Role.service)
    [robot] = [u for u in client.get("/v1/users", headers=admin).json() if u["name"] == "robot"]
    assert robot["can_log_in"] is False
    for password in ["", "anything at all", "None"]:
        assert post_login(client, "robot", password).status_code in (401, 422), password
        assert "sprout_session" not in client.cookies


def test_the_login_form_needs_its_own_csrf_token(client, admin) -> None:
    add_user(client, admin, "nina", password=PASSWORD)
    client.cookies.clear()
    no_cookie = client.post(
        "/login", data={"name": "nina", "password": PASSWORD, "csrf_token": "x" * 43}, follow_redirects=False
    )
    assert no_cookie.status_code == 403 and "sprout_session" not in no_cookie.cookies
    field = login_form(client)
    for sent in ["", "wrong", field[:-1]]:
        wrong = client.post(
            "/login", data={"name": "nina", "password": PASSWORD, "csrf_token": sent}, follow_redirects=False
        )
        assert wrong.status_code == 403 and "sprout_session" not in wrong.cookies, sent
    no_field = client.post("/login", data={"name": "nina", "password": PASSWORD}, follow_redirects=False)
    assert no_field.status_code == 403
    with sessions_of(client)() as session:
        assert session.scalar(select(func.count()).select_from(WebSession)) == 0


def test_cookie_requests_that_change_something_need_the_csrf_token_and_this_origin(client, admin) -> None:
    add_user(client, admin, "olga", "admin", password=PASSWORD)
    browser = log_in(client, "olga")
    csrf = csrf_of(client, browser)

    def create(name: str, **headers: str) -> int:
        return client.post("/v1/datasets", json={"name": name}, headers={**browser, **headers}).status_code

    assert create("no-token") == 403
    assert create("wrong-token", **{"X-CSRF-Token": "wrong"}) == 403
    assert create("foreign", **{"X-CSRF-Token": csrf, "Origin": "https://evil.example"}) == 403
    assert create("lookalike", **{"X-CSRF-Token": csrf, "Origin": "http://testserver.evil.example"}) == 403
    assert create("with-token", **{"X-CSRF-Token": csrf}) == 201
    assert create("same-origin", **{"X-CSRF-Token": csrf, "Origin": "http://testserver"}) == 201
    # Another session's token does not fit this session.
    add_user(client, admin, "pat", "admin", password=PASSWORD)
    other = csrf_of(client, log_in(client, "pat"))
    assert create("cross-session", **{"X-CSRF-Token": other}) == 403
    names = {d["name"] for d in client.get("/v1/datasets", headers=admin).json()}
    assert names == {"with-token", "same-origin"}
    # Reading needs no token; bearer requests need none either.
    assert client.get("/v1/datasets", headers=browser).status_code == 200
    assert client.post("/v1/datasets", json={"name": "by-token"}, headers=admin).status_code == 201


def test_logout_ends_the_session(client, admin) -> None:
    add_user(client, admin, "quinn", password=PASSWORD)
    browser = log_in(client, "quinn")
    csrf = csrf_of(client, browser)
    refused = client.post("/logout", headers=browser, follow_redirects=False)
    assert refused.status_code == 403 and whoami(client, browser)["name"] == "quinn"
    answer = client.post("/logout", data={"csrf_token": csrf}, headers=browser, follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (303, "/login")
    assert set_cookie(answer, "sprout_session").startswith('sprout_session=""')
    assert whoami(client, browser) == 401
    again = client.get("/ui", headers=browser)
    assert again.status_code == 401 and 'action="/login"' in again.text
    with sessions_of(client)() as session:
        assert session.scalar(select(func.count()).select_from(WebSession)) == 0


def test_next_only_redirects_to_paths_of_this_site(client, admin) -> None:
    add_user(client, admin, "rita", password=PASSWORD)
    for sent, expected in [
        ("/ui/datasets/3/queue?status=pending", "/ui/datasets/3/queue?status=pending"),
        ("//evil.example", "/ui"),
        ("//evil.example/ui", "/ui"),
        ("https://evil.example", "/ui"),
        ("/\\evil.example", "/ui"),
        ("javascript:alert(1)", "/ui"),
        ("ui", "/ui"),
        ("", "/ui"),
    ]:
        answer = post_login(client, "rita", PASSWORD, next_url=sent)
        assert (answer.status_code, answer.headers["location"]) == (303, expected), sent
    client.cookies.clear()
    form = client.get("/login", params={"next": "//evil.example"})
    assert 'name="next" value="/ui"' in form.text and "evil.example" not in form.text


def test_behind_a_proxy_the_public_origin_is_accepted_too(database_url) -> None:
    settings = make_settings(database_url, worker_enabled=False, public_origin="https://sprout.example.org")
    with running_service(settings, role=None) as client:
        admin = bearer(new_user_token(client, Role.admin, name="root"))
        add_user(client, admin, "quinn", "admin", password=PASSWORD)
        browser = log_in(client, "quinn")
        csrf = csrf_of(client, browser)

        def create(name: str, origin: str) -> int:
            headers = {**browser, "X-CSRF-Token": csrf, "Origin": origin}
            return client.post("/v1/datasets", json={"name": name}, headers=headers).status_code

        assert create("public", "https://sprout.example.org") == 201
        assert create("own-host", "http://testserver") == 201
        assert create("foreign", "https://evil.example") == 403
        assert create("other-port", "https://sprout.example.org:8443") == 403


# --- the login rate limit ---------------------------------------------------------------------------------------


def test_failed_logins_are_limited_per_name_in_the_database_for_every_instance(database_url) -> None:
    settings = make_settings(database_url, worker_enabled=False, login_max_failures=3)
    with running_service(settings, role=None) as client:
        with transaction(sessions_of(client)) as session:
            create_user(session, "sam", Role.reviewer, PASSWORD)
            create_user(session, "tess", Role.reviewer, PASSWORD)
        for _ in range(3):
            assert post_login(client, "sam", "a wrong guess").status_code == 401
        limited = post_login(client, "sam", PASSWORD)
        assert limited.status_code == 429 and "sprout_session" not in limited.cookies
        assert 1 <= int(limited.headers["retry-after"]) <= settings.login_window_seconds + 1
        assert post_login(client, " SAM", PASSWORD).status_code == 429  # the same name, written otherwise
        assert post_login(client, "tess", PASSWORD).status_code == 303  # other names are not locked out
        with sessions_of(client)() as session:
            assert (
                session.scalar(
                    select(func.count()).select_from(LoginFailure).where(LoginFailure.name == "sam")
                )
                == 3
            )
    # A second instance on the same database knows.
    with TestClient(create_app(settings)) as other:
        assert post_login(other, "sam", PASSWORD).status_code == 429
        assert post_login(other, "tess", PASSWORD).status_code == 303


def test_successful_logins_do_not_count_against_the_limit(database_url) -> None:
    """Every attempt is counted before its password is checked (parallel guesses cannot slip past the limit);
    a good password takes its own attempt back, so people who log in often are never locked out."""
    settings = make_settings(database_url, worker_enabled=False, login_max_failures=2)
    with running_service(settings, role=None) as client:
        with transaction(sessions_of(client)) as session:
            create_user(session, "vera", Role.reviewer, PASSWORD)
        assert post_login(client, "vera", "a wrong guess").status_code == 401
        for _ in range(4):
            assert post_login(client, "vera", PASSWORD).status_code == 303
        with sessions_of(client)() as session:
            assert session.scalar(select(func.count()).select_from(LoginFailure)) == 1
        assert post_login(client, "vera", "another wrong guess").status_code == 401
        assert post_login(client, "vera", PASSWORD).status_code == 429


def test_failed_logins_are_limited_per_client_address(database_url) -> None:
    settings = make_settings(
        database_url, worker_enabled=False, login_max_failures=10, login_max_failures_per_client=2
    )
    with running_service(settings, role=None) as client:
        with transaction(sessions_of(client)) as session:
            create_user(session, "uma", Role.reviewer, PASSWORD)
        assert post_login(client, "guess-one", "x" * 12).status_code == 401
        assert post_login(client, "guess-two", "x" * 12).status_code == 401
        limited = post_login(client, "uma", PASSWORD)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        with sessions_of(client)() as session:
            assert session.scalar(select(func.count()).select_from(User).where(User.name.like("guess%"))) == 0


def test_empty_login_fields_show_the_form_again(client, admin) -> None:
    answer = post_login(client, "", "")
    assert answer.status_code == 401 and "Enter your name and password." in answer.text
    assert 'action="/login"' in answer.text and "sprout_session" not in answer.headers.get("set-cookie", "")


def test_logging_out_with_an_ended_session_leads_to_the_datasets_not_back_to_the_form_post(client) -> None:
    # The login form a failed POST shows must not send the user back to POST-only /logout.
    client.cookies.set("sprout_session", "ended")
    answer = client.post("/logout", headers={"Authorization": ""})
    client.cookies.clear()
    assert answer.status_code == 401 and 'name="next" value="/ui"' in answer.text
