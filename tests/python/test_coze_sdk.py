"""coze-workload-identity 0.1.14 against the same servers the Rust coze tests use.

* OAuth: oidc-provider (tests/oauth/server.mjs, started by scripts/test.sh,
  which exports SECREF_TEST_OAUTH_IDP / SECREF_TEST_OAUTH_STS).
* Outbound API: `secref-fake coze`, which accepts only access tokens that
  verify against the STS's JWKS.

The SDK is the reference client: if it works against this setup, the setup
(and so the Rust provider's tests) is faithful to the SDK's wire format.
This file must stay outside any `.coze/agents/<n>/` path (the SDK's import
hook would otherwise make network calls).
"""
import base64
import json
import os
import pathlib
import subprocess
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CREDENTIAL = "py-canary-cred-51f0"
SEED = {
    "integrations": {"github": CREDENTIAL},
    "env": [
        {"key": "DB_URL", "value": "postgres://db"},
        {"key": "A", "value": "first"},
        {"key": "A", "value": "second"},
    ],
    "errors": {"broken": {"status": 200, "code": 500, "msg": "upstream down"}},
}


@pytest.fixture(scope="module")
def oauth():
    idp, sts = os.environ.get("SECREF_TEST_OAUTH_IDP"), os.environ.get("SECREF_TEST_OAUTH_STS")
    if not idp or not sts:
        pytest.skip("SECREF_TEST_OAUTH_IDP/_STS not set (scripts/test.sh starts oidc-provider)")
    return {"idp": idp, "sts": sts}


@pytest.fixture
def double(oauth):
    """Starts `secref-fake coze` with a seed; returns its base URL."""
    fake = os.environ.get("SECREF_FAKE_BIN") or str(ROOT / "target" / "debug" / "secref-fake")
    assert os.path.exists(fake), f"build secref-fake first: {fake}"
    procs = []

    def start(seed=SEED):
        p = subprocess.Popen(
            [fake, "coze", "--issuer", oauth["sts"], "--seed", json.dumps(seed)],
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(p)
        line = p.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:"), line
        return line.removeprefix("listening on ")

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


@pytest.fixture(autouse=True)
def fresh_sdk(monkeypatch):
    """Clears the SDK's process-global token cache and COZE_* variables."""
    import coze_workload_identity.client as cwi_client

    cwi_client._global_token_cache = None
    for k in list(os.environ):
        if k.startswith("COZE_"):
            monkeypatch.delenv(k)
    yield
    cwi_client._global_token_cache = None


def lane(name):
    """A lane unique to this run: the OAuth server's counters outlive it."""
    return f"{name}_py_{os.getpid()}"


def configure(monkeypatch, oauth, outbound, lane_value, client="coze-app", secret="coze-app-secret"):
    monkeypatch.setenv("COZE_WORKLOAD_IDENTITY_CLIENT_ID", client)
    monkeypatch.setenv("COZE_WORKLOAD_IDENTITY_CLIENT_SECRET", secret)
    monkeypatch.setenv("COZE_WORKLOAD_IDENTITY_TOKEN_ENDPOINT", oauth["idp"] + "/token")
    monkeypatch.setenv("COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT", oauth["sts"] + "/token")
    if outbound:
        monkeypatch.setenv("COZE_OUTBOUND_AUTH_ENDPOINT", outbound)
    if lane_value is not None:
        monkeypatch.setenv("COZE_SERVER_ENV", lane_value)


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def stats(oauth, lane_value):
    return get_json(f"{oauth['idp']}/_test/stats?lane={lane_value}")


def claims(jwt):
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def client():
    from coze_workload_identity import Client

    return Client(timeout=(2, 10))


def test_access_token_comes_from_the_exchange(monkeypatch, oauth, double):
    ln = lane("boe_token")
    configure(monkeypatch, oauth, double(), ln)
    with client() as c:
        token = c.get_access_token()
        assert c.get_access_token() == token  # cached by the SDK
    cl = claims(token)
    assert cl["iss"] == oauth["sts"]
    assert cl["aud"] == "urn:coze:outbound"
    assert cl["client_id"] == "coze-app"
    # The SDK caches only the access token: one of each call.
    assert (stats(oauth, ln)["idp"], stats(oauth, ln)["sts"]) == (1, 1)


def test_integration_credential_and_env_vars(monkeypatch, oauth, double):
    url = double()
    configure(monkeypatch, oauth, url, lane("boe_values"))
    with client() as c:
        assert c.get_integration_credential("github") == CREDENTIAL
        env = c.get_project_env_vars()
    assert env.get("DB_URL") == "postgres://db"
    assert env.get("A") == "first"  # first match, duplicates kept
    assert len(env) == 3
    seen = get_json(url + "/_test/requests")
    assert [r["call"] for r in seen] == ["integration", "env"]
    assert all(r["client_id"] == "coze-app" and r["status"] == 200 for r in seen)


@pytest.mark.parametrize(
    "name, want_ppe",
    [("ppe_lane", "1"), ("boe_lane", None), ("custom", None)],
)
def test_lane_headers(monkeypatch, oauth, double, name, want_ppe):
    ln = lane(name)
    url = double()
    configure(monkeypatch, oauth, url, ln)
    with client() as c:
        c.get_integration_credential("github")
    seen = get_json(url + "/_test/requests")
    assert [(r["lane"], r["use_ppe"]) for r in seen] == [(ln, want_ppe)]
    assert stats(oauth, ln)["ppe"] == [want_ppe, want_ppe]


def test_lane_none_sends_no_header(monkeypatch, oauth, double):
    url = double()
    configure(monkeypatch, oauth, url, "NONE")
    with client() as c:
        c.get_integration_credential("github")
    assert get_json(url + "/_test/requests")[0]["lane"] is None


def test_token_errors(monkeypatch, oauth, double):
    from coze_workload_identity import TokenRetrievalError

    configure(monkeypatch, oauth, double(), lane("boe_bad_secret"), secret="wrong")
    with client() as c, pytest.raises(TokenRetrievalError):
        c.get_access_token()
    # A client the STS refuses: the SDK reports the failed exchange as a
    # TokenRetrievalError too (protocols.md §4.2); secref says token_exchange.
    configure(monkeypatch, oauth, double(), lane("boe_idp_only"),
              client="coze-idp-only", secret="coze-idp-only-secret")
    with client() as c, pytest.raises(TokenRetrievalError, match="Failed to retrieve token"):
        c.get_access_token()
    ln = lane("boe_idp_only")
    assert (stats(oauth, ln)["idp"], stats(oauth, ln)["sts"]) == (1, 1)


def test_configuration_error_lists_missing(monkeypatch):
    from coze_workload_identity import ConfigurationError

    monkeypatch.setenv("COZE_WORKLOAD_IDENTITY_TOKEN_ENDPOINT", "http://127.0.0.1:9/token")
    with pytest.raises(ConfigurationError, match="COZE_WORKLOAD_IDENTITY_CLIENT_ID, COZE_WORKLOAD_IDENTITY_CLIENT_SECRET, COZE_WORKLOAD_ACCESS_TOKEN_ENDPOINT"):
        client()


def test_outbound_errors(monkeypatch, oauth, double):
    configure(monkeypatch, oauth, double(), lane("boe_outbound_errors"))
    with client() as c:
        with pytest.raises(Exception, match="code=404, msg=integration not found"):
            c.get_integration_credential("nope")
        with pytest.raises(Exception, match="code=500, msg=upstream down"):
            c.get_integration_credential("broken")
    # The double rejects tokens for another audience with 401 (no SDK retry).
    strict = double({**SEED, "audience": "urn:someone-else"})
    configure(monkeypatch, oauth, strict, lane("boe_strict"))
    with client() as c, pytest.raises(Exception, match="Client error .*401"):
        c.get_integration_credential("github")
    seen = get_json(strict + "/_test/requests")
    assert [(r["status"], r["client_id"]) for r in seen] == [(401, None)]


def test_env_error(monkeypatch, oauth, double):
    configure(monkeypatch, oauth, double({**SEED, "env_error": {"status": 503, "code": 503, "msg": "down"}}),
              lane("boe_env_error"))
    with client() as c, pytest.raises(Exception, match="Server error \\(503\\)"):
        c.get_project_env_vars()
