"""The activity web page in process: login cookie, list, search, detail, retry, and escaping of hostile mail."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from inbound.events import Event, EventType, Summary
from inbound.records import EVENTS, decode_event
from inbound.web.backends import Backends

from .test_api import ACT, NESTED, READ, app, at, backends, qid

__all__ = ["app", "backends"]


@pytest.fixture
def browser(app: FastAPI) -> Iterator[TestClient]:
    # https: the session cookie is Secure, so a client sends it only over HTTPS
    with TestClient(app, base_url="https://inbound.test", follow_redirects=False) as client:
        yield client


def log_in(client: TestClient, token: str) -> None:
    response = client.post(
        "/login", content=f"token={token}", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    for flag in ("HttpOnly", "Secure", "SameSite=strict"):
        assert flag in cookie, flag


def test_pages_need_a_login(browser: TestClient) -> None:
    for page in ("/", f"/m/{qid(1)}-support", f"/m/{qid(3)}/raw"):
        response = browser.get(page)
        assert (response.status_code, response.headers["location"]) == (303, "/login"), page
    refused = browser.post(
        "/login", content="token=wrong", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert refused.status_code == 401
    assert "not one this service accepts" in refused.text


def test_list_search_detail_and_retry(browser: TestClient, backends: Backends) -> None:
    log_in(browser, ACT)
    page = browser.get("/").text
    assert page.count('class="badge"') >= 8
    assert "support: 7 in 30 days" in page
    found = browser.get("/", params={"q": "invoice"}).text
    assert f"/m/{qid(3)}-support" in found
    assert f"/m/{qid(1)}-support" not in found
    detail = browser.get(f"/m/{qid(5)}-support").text
    assert 'id="retry-support"' in detail
    assert "HTTP 403" in detail
    pressed = browser.post(f"/m/{qid(5)}-support/retry")
    assert (pressed.status_code, pressed.headers["location"]) == (303, f"/m/{qid(5)}-support?done=retry")
    done = browser.get(pressed.headers["location"]).text
    assert '<p class="note ok">retry queued: the delivery goes out again, as its next generation</p>' in done
    assert [decode_event(r.value).reason for r in backends.bus.read_all(EVENTS)] == ["retry requested by web"]
    pending = browser.post(f"/m/{qid(5)}-support/retry")  # before the first is recorded
    assert pending.headers["location"] == f"/m/{qid(5)}-support?refused=pending"
    note = "not taken: an earlier action on this message is not in the activity log yet; try again in a moment"
    assert f'<p class="note bad">{note}</p>' in browser.get(pending.headers["location"]).text
    again = browser.post(f"/m/{qid(1)}-support/retry")
    assert again.headers["location"] == f"/m/{qid(1)}-support?refused=retry"
    refused = browser.get(again.headers["location"]).text
    note = "retry does not apply: only a failed delivery of a configured stream can be retried"
    assert f'<p class="note bad">{note}</p>' in refused
    both = browser.get(f"/m/{qid(3)}").text
    assert 'id="status-support"' in both
    assert 'id="status-sales"' in both


def test_a_cursor_the_page_did_not_issue_is_a_400_page(browser: TestClient) -> None:
    log_in(browser, READ)
    refused = browser.get("/", params={"cursor": NESTED})
    assert refused.status_code == 400
    assert refused.headers["content-type"].startswith("text/html")
    assert "<h1>Bad request</h1><p>cursor is not one this API returned</p>" in refused.text
    missing = browser.get(f"/m/{qid(99)}-support")  # the page it shares with a message not found
    assert (missing.status_code, "<h1>Not found</h1>" in missing.text) == (404, True)


def test_a_link_cannot_put_its_own_words_in_the_page_s_notes(browser: TestClient) -> None:
    log_in(browser, ACT)
    forged = "Your token expired: log in again at https://inbound-login.example"
    for name in ("done", "error", "refused"):
        page = browser.get(f"/m/{qid(5)}-support", params={name: forged}).text
        assert forged not in page, name
        assert 'class="note' not in page, name


def test_read_only_sees_no_buttons_and_cannot_act(browser: TestClient) -> None:
    log_in(browser, READ)
    assert "retry-support" not in browser.get(f"/m/{qid(5)}-support").text
    assert browser.post(f"/m/{qid(5)}-support/retry").status_code == 403


def test_the_detail_shows_the_verdicts(browser: TestClient, backends: Backends) -> None:
    auth = {
        "spf": {"result": "fail", "domain": "sender.test"},
        "dkim": [],
        "dmarc": {"result": "fail", "policy": "reject", "domain": "sender.test"},
        "arc": {"result": "none"},
    }
    summary = Summary(at(1), "a@sender.test", ("help@in.test",), "judged", verdicts={"auth": auth})
    backends.store.apply([Event(EventType.BLOCKED, f"{qid(21)}-support", qid(21), "support", at(1), summary=summary)])
    log_in(browser, READ)
    detail = browser.get(f"/m/{qid(21)}-support").text
    assert "<dt>SPF</dt><dd>fail (sender.test)</dd>" in detail
    assert "<dt>DKIM</dt><dd>none (no signature)</dd>" in detail
    assert "<dt>DMARC</dt><dd>fail (sender.test, policy reject)</dd>" in detail
    assert "checks no sender authentication" in browser.get(f"/m/{qid(5)}-support").text


def test_hostile_mail_is_escaped(browser: TestClient, backends: Backends) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    auth = {"spf": {"result": evil, "domain": evil}, "dmarc": {"domain": evil}}
    summary = Summary(at(1), '"><script>alert(2)</script>@x.test', ("help@in.test",), evil, verdicts={"auth": auth})
    backends.store.apply([Event(EventType.QUEUED, f"{qid(20)}-support", qid(20), "support", at(1), summary=summary)])
    log_in(browser, ACT)
    for page in (browser.get("/").text, browser.get(f"/m/{qid(20)}-support").text):
        assert "<script>alert" not in page
        assert "<img src=x" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
