"""Who may do what: two users and an admin against every route of the API.

alice and bob each own a job and a sweep. Neither sees, lists, reads,
cancels or deletes the other's: another user's id answers 404, as an id that
does not exist. The admin sees and manages all. Without a token, with a wrong
or a revoked one, every route but health, readiness, the OpenAPI document and
its page answers 401. A per-user budget of active jobs answers 429 with
Retry-After.
"""

from __future__ import annotations

import copy
import time

import pytest
from sqlalchemy import update

from services.auth import RECENT
from services.config import Limits
from services.db.models import ApiToken, utcnow
from tests.auth_support import authorize, new_token
from tests.conftest import XOR_JOB
from tests.unit.api.contract import contract_client

API = "/api/v1"
SWEEP = {
    "name": "s",
    "base": XOR_JOB,
    "method": "grid",
    "parameters": {"hyperparameters.learning_rate": {"values": [0.1, 0.2]}},
    "max_concurrency": 1,
}
PUBLIC = {"/healthz", "/readyz", f"{API}/openapi.json", f"{API}/docs"}


@pytest.fixture
def world(app):
    """The app's client for each of alice, bob and the admin, and what each owns."""
    sessions = app.extensions["sweeplab"].sessions
    tokens = {
        "alice": new_token(sessions, "alice", admin=False),
        "bob": new_token(sessions, "bob", admin=False),
        "admin": new_token(sessions, "root", admin=True),
    }
    clients = {who: authorize(contract_client(app), tok) for who, tok in tokens.items()}
    owned = {}
    for who in ("alice", "bob"):
        job = clients[who].post(f"{API}/jobs", json=copy.deepcopy(XOR_JOB))
        sweep = clients[who].post(f"{API}/sweeps", json=copy.deepcopy(SWEEP))
        assert job.status_code == 201 and sweep.status_code == 201
        owned[who] = {"job": job.get_json()["id"], "sweep": sweep.get_json()["id"]}
    return clients, owned, tokens


def reads(job: str, sweep: str) -> list[str]:
    return [
        f"{API}/jobs/{job}",
        f"{API}/jobs/{job}/metrics",
        f"{API}/sweeps/{sweep}",
        f"{API}/sweeps/{sweep}/trials",
        f"{API}/sweeps/{sweep}/leaderboard",
    ]


def test_a_user_reads_and_lists_only_their_own(world):
    clients, owned, _ = world
    for me, other in (("alice", "bob"), ("bob", "alice")):
        client = clients[me]
        for url in reads(**owned[me]):
            assert client.get(url).status_code == 200, (me, url)
        for url in reads(**owned[other]):
            response = client.get(url)
            assert response.status_code == 404, (me, url)
            assert response.get_json()["error"]["code"] == "not_found"
        jobs = {j["id"] for j in client.get(f"{API}/jobs?limit=200").get_json()["items"]}
        trials = {j["sweep_id"] for j in client.get(f"{API}/jobs?limit=200").get_json()["items"]}
        assert owned[me]["job"] in jobs and owned[other]["job"] not in jobs
        assert owned[other]["sweep"] not in trials
        sweeps = {s["id"] for s in client.get(f"{API}/sweeps").get_json()["items"]}
        assert sweeps == {owned[me]["sweep"]}
        # a filter on the other's sweep shows nothing, rather than its trials
        other_trials = client.get(f"{API}/jobs?sweep={owned[other]['sweep']}").get_json()
        assert other_trials["items"] == []


def test_the_admin_sees_everyone(world):
    clients, owned, _ = world
    admin = clients["admin"]
    for who in ("alice", "bob"):
        for url in reads(**owned[who]):
            assert admin.get(url).status_code == 200, url
    jobs = {j["id"] for j in admin.get(f"{API}/jobs?limit=200").get_json()["items"]}
    assert {owned["alice"]["job"], owned["bob"]["job"]} <= jobs
    sweeps = {s["id"] for s in admin.get(f"{API}/sweeps").get_json()["items"]}
    assert sweeps == {owned["alice"]["sweep"], owned["bob"]["sweep"]}


def test_nobody_cancels_or_deletes_anothers_work(world):
    clients, owned, _ = world
    alice, bob, admin = clients["alice"], clients["bob"], clients["admin"]
    mine, theirs = owned["alice"], owned["bob"]
    for url in (
        f"{API}/jobs/{theirs['job']}/cancel",
        f"{API}/sweeps/{theirs['sweep']}/cancel",
        f"{API}/sweeps/{theirs['sweep']}/resume",
    ):
        assert alice.post(url).status_code == 404, url
    extend = f"{API}/sweeps/{theirs['sweep']}/extend"
    assert alice.post(extend, json={"n_trials": 1}).status_code == 404
    # nor warm-starts from it: a 422 as for a sweep that does not exist
    warm = {
        "base": copy.deepcopy(XOR_JOB),
        "method": "tpe",
        "n_trials": 2,
        "parameters": {"hyperparameters.learning_rate": {"values": [0.1, 0.5]}},
        "warm_start": theirs["sweep"],
    }
    refused = alice.post(f"{API}/sweeps", json=warm)
    assert refused.status_code == 422
    assert refused.get_json()["error"]["details"][0]["loc"] == "warm_start"
    for url in (f"{API}/jobs/{theirs['job']}", f"{API}/sweeps/{theirs['sweep']}"):
        assert alice.delete(url).status_code == 404, url
    # bob's work is untouched
    assert bob.get(f"{API}/jobs/{theirs['job']}").get_json()["status"] == "queued"
    assert bob.get(f"{API}/sweeps/{theirs['sweep']}").get_json()["status"] == "running"
    # alice manages her own: cancel, then delete
    assert alice.post(f"{API}/jobs/{mine['job']}/cancel").status_code == 202
    assert alice.delete(f"{API}/jobs/{mine['job']}").status_code == 204
    assert alice.get(f"{API}/jobs/{mine['job']}").status_code == 404
    # a running sweep is cancelled, then deleted with all its trials
    trials = alice.get(f"{API}/sweeps/{mine['sweep']}/trials").get_json()["items"]
    assert trials and alice.delete(f"{API}/sweeps/{mine['sweep']}").status_code == 204
    assert alice.get(f"{API}/sweeps/{mine['sweep']}").status_code == 404
    assert all(alice.get(f"{API}/jobs/{t['id']}").status_code == 404 for t in trials)
    # the admin manages bob's
    assert admin.post(f"{API}/sweeps/{theirs['sweep']}/cancel").status_code == 202
    assert admin.post(f"{API}/jobs/{theirs['job']}/cancel").status_code == 202
    assert admin.delete(f"{API}/jobs/{theirs['job']}").status_code == 204
    assert bob.get(f"{API}/jobs/{theirs['job']}").status_code == 404


def test_a_trial_is_deleted_with_its_sweep_only(world):
    clients, owned, _ = world
    alice = clients["alice"]
    sweep = owned["alice"]["sweep"]
    trial = alice.get(f"{API}/sweeps/{sweep}/trials").get_json()["items"][0]["id"]
    alice.post(f"{API}/sweeps/{sweep}/cancel")
    response = alice.delete(f"{API}/jobs/{trial}")
    assert response.status_code == 409 and sweep in response.get_json()["error"]["message"]


def test_tokens_admin_creates_users_list_and_revoke_their_own(world, app):
    clients, _, tokens = world
    alice, admin = clients["alice"], clients["admin"]
    assert alice.get(f"{API}/me").get_json() == {"user": "alice", "admin": False, "auth": True}
    assert admin.get(f"{API}/me").get_json()["admin"] is True
    # only an admin creates tokens
    refused = alice.post(f"{API}/tokens", json={"user": "carol"})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"
    made = admin.post(f"{API}/tokens", json={"user": "carol", "name": "laptop"})
    assert made.status_code == 201
    carol_token = made.get_json()["token"]
    assert made.get_json()["user"] == "carol" and made.get_json()["admin"] is False
    carol = authorize(contract_client(app), carol_token)
    assert carol.get(f"{API}/me").get_json()["user"] == "carol"
    assert carol.get(f"{API}/jobs").get_json()["items"] == []  # sees nobody else's
    # a user lists their own tokens, never a secret; the admin lists all
    listed = alice.get(f"{API}/tokens").get_json()["items"]
    assert {t["user"] for t in listed} == {"alice"} and all("token" not in t for t in listed)
    everyone = {t["user"] for t in admin.get(f"{API}/tokens").get_json()["items"]}
    assert {"alice", "bob", "carol", "root"} <= everyone
    # last use is recorded
    alices = listed[0]
    assert alices["last_used_at"] is not None
    # a user cannot revoke another's token (404); revoking one's own works at once
    carols = next(t for t in admin.get(f"{API}/tokens").get_json()["items"] if t["user"] == "carol")
    assert alice.delete(f"{API}/tokens/{carols['id']}").status_code == 404
    assert carol.delete(f"{API}/tokens/{carols['id']}").get_json()["revoked_at"] is not None
    revoked = carol.get(f"{API}/jobs")
    assert revoked.status_code == 401 and "revoked" in revoked.get_json()["error"]["message"]
    assert tokens["alice"] != carol_token


def test_every_protected_route_wants_a_valid_token(world, app):
    _, owned, tokens = world
    job, sweep = owned["alice"]["job"], owned["alice"]["sweep"]
    routes = [
        ("GET", f"{API}/me"),
        ("GET", f"{API}/jobs"),
        ("POST", f"{API}/jobs"),
        ("GET", f"{API}/jobs/{job}"),
        ("GET", f"{API}/jobs/{job}/metrics"),
        ("POST", f"{API}/jobs/{job}/cancel"),
        ("DELETE", f"{API}/jobs/{job}"),
        ("GET", f"{API}/sweeps"),
        ("POST", f"{API}/sweeps"),
        ("GET", f"{API}/sweeps/{sweep}"),
        ("GET", f"{API}/sweeps/{sweep}/trials"),
        ("GET", f"{API}/sweeps/{sweep}/leaderboard"),
        ("POST", f"{API}/sweeps/{sweep}/cancel"),
        ("POST", f"{API}/sweeps/{sweep}/resume"),
        ("POST", f"{API}/sweeps/{sweep}/extend"),
        ("GET", f"{API}/jobs/{job}/plots/curves.png"),
        ("GET", f"{API}/jobs/{job}/plots/layers.png"),
        ("GET", f"{API}/jobs/{job}/weights"),
        ("POST", f"{API}/jobs/{job}/predict"),
        ("GET", f"{API}/sweeps/{sweep}/lr-map.png"),
        ("GET", f"{API}/sweeps/{sweep}/lr-map.json"),
        ("GET", f"{API}/sweeps/{sweep}/report"),
        ("DELETE", f"{API}/sweeps/{sweep}"),
        ("GET", f"{API}/datasets"),
        ("POST", f"{API}/datasets"),
        ("GET", f"{API}/datasets/anything"),
        ("DELETE", f"{API}/datasets/anything"),
        ("GET", f"{API}/tokens"),
        ("POST", f"{API}/tokens"),
        ("DELETE", f"{API}/tokens/anything"),
        ("GET", f"{API}/lr-range-tests"),
        ("POST", f"{API}/lr-range-tests"),
        ("GET", f"{API}/lr-range-tests/anything"),
        ("GET", f"{API}/lr-range-tests/anything/plot.png"),
    ]
    # every route the app serves under /api/v1 is in the list, or public
    adapter = app.url_map.bind("localhost")
    covered = set()
    for method, path in routes:
        endpoint, _ = adapter.match(path, method)
        covered.add((method, endpoint))
    public = {adapter.match(path, "GET")[0] for path in PUBLIC}
    served = {
        (method, rule.endpoint)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(API) and not rule.endpoint.endswith("static")
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
        if rule.endpoint not in public
    }
    assert served == covered
    bogus = tokens["alice"][:-4] + "AAAA"
    for token in (None, "not-a-token", bogus, "swl_" + "0" * 32 + "_" + "x" * 43):
        client = authorize(contract_client(app), token)
        for method, path in routes:
            body = {"user": "x"} if path.endswith("tokens") and method == "POST" else XOR_JOB
            response = client.open(path, method=method, json=body if method == "POST" else None)
            assert response.status_code == 401, (token, method, path)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert response.get_json()["error"]["code"] == "unauthorized"
        for path in PUBLIC:
            assert client.get(path).status_code == 200, path
        assert client.get(f"{API}/nowhere").status_code == 404  # the document is public anyway


def test_a_users_active_jobs_have_a_budget(app, settings, dispatcher):
    from api import create_app

    small = create_app(settings.replace(limits=Limits(max_active_jobs=2)), dispatcher=dispatcher)
    try:
        sessions = small.extensions["sweeplab"].sessions
        alice = authorize(contract_client(small), new_token(sessions, "alice", admin=False))
        bob = authorize(contract_client(small), new_token(sessions, "bob", admin=False))
        first = [alice.post(f"{API}/jobs", json=copy.deepcopy(XOR_JOB)) for _ in range(2)]
        assert [r.status_code for r in first] == [201, 201]
        over = alice.post(f"{API}/jobs", json=copy.deepcopy(XOR_JOB))
        assert over.status_code == 429 and int(over.headers["Retry-After"]) > 0
        assert "SWEEPLAB_MAX_ACTIVE_JOBS" in over.get_json()["error"]["message"]
        # a sweep's first trials count too; bob has his own budget
        big = {**copy.deepcopy(SWEEP), "max_concurrency": 3}
        big["parameters"]["hyperparameters.learning_rate"]["values"] = [0.1, 0.2, 0.3]
        assert bob.post(f"{API}/sweeps", json=big).status_code == 429
        assert bob.post(f"{API}/sweeps", json=copy.deepcopy(SWEEP)).status_code == 201
        # an ended job frees its place
        alice.post(f"{API}/jobs/{first[0].get_json()['id']}/cancel")
        assert alice.post(f"{API}/jobs", json=copy.deepcopy(XOR_JOB)).status_code == 201
    finally:
        small.extensions["sweeplab"].engine.dispose()


def test_auth_off_is_a_local_admin(settings, dispatcher):
    from api import create_app

    lone = create_app(settings.replace(auth=False), dispatcher=dispatcher)
    try:
        client = contract_client(lone)  # no token at all
        assert client.get(f"{API}/me").get_json() == {"user": "local", "admin": True, "auth": False}
        job = client.post(f"{API}/jobs", json=copy.deepcopy(XOR_JOB))
        assert job.status_code == 201
        assert client.get(f"{API}/jobs/{job.get_json()['id']}").status_code == 200
    finally:
        lone.extensions["sweeplab"].engine.dispose()


def test_a_token_revoked_elsewhere_stops_working_within_the_auth_cache(app):
    """A process trusts a token it checked a moment ago (no query per request); a
    revocation written by another process (the CLI, another API worker) is honoured
    once that moment has passed, and a revocation through this process at once."""
    settings = app.extensions["sweeplab"].settings
    sessions = app.extensions["sweeplab"].sessions
    old = settings.auth_cache_seconds
    object.__setattr__(settings, "auth_cache_seconds", 0.5)
    try:
        token = new_token(sessions)
        client = authorize(app.test_client(), token)
        assert client.get(f"{API}/jobs").status_code == 200
        with sessions() as session:  # as `python -m services.stack token revoke` does
            session.execute(
                update(ApiToken)
                .where(ApiToken.id == token.split("_")[1])
                .values(revoked_at=utcnow())
            )
            session.commit()
        assert client.get(f"{API}/jobs").status_code == 200  # still trusted for 0.5 s
        time.sleep(0.6)
        assert client.get(f"{API}/jobs").status_code == 401
    finally:
        object.__setattr__(settings, "auth_cache_seconds", old)
        RECENT.clear()
