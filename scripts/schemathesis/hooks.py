"""Credentials for schemathesis runs against `keypal serve` (scripts/schemathesis.sh).

Each operation gets the credential its `security` requirement in the OpenAPI document
names, fetched from the server under test:

- `admin_session`: the `keypal_session` cookie of a login with KEYPAL_ADMIN_PASSWORD.
- `service_key`: the current service key, read with that session (GET /v1/service-key).
- `client_secret`: the client secret of an application created for the run.

A credential refused with 401 is fetched again: the run itself rotates the service key,
regenerates client secrets, deletes applications and logs out. Operations whose
credential is optional (logging out) get none, so the run keeps its session.

The run's own logins come from 127.0.0.2: the generated requests log in with wrong
passwords from 127.0.0.1 until the login throttle refuses that address (429), which
must not lock the run out.
"""

import http.client
import json
import re
import os
import secrets

import schemathesis

BASE_URL = os.environ["KEYPAL_URL"]
ADMIN_PASSWORD = os.environ["KEYPAL_ADMIN_PASSWORD"]


def request(method, path, body=None, headers=None):
    """One request to the server from 127.0.0.2; returns (status, headers, parsed JSON or None)."""
    host, port = BASE_URL.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30, source_address=("127.0.0.2", 0))
    headers = dict(headers or {})
    payload = None
    if body is not None:
        payload = json.dumps(body)
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        data = response.read()
        parsed = json.loads(data) if data else None
        return response.status, response.headers, parsed
    finally:
        connection.close()


def login():
    """A new admin session; returns the cookie value."""
    status, headers, body = request("POST", "/v1/session", {"password": ADMIN_PASSWORD})
    if status != 204:
        raise RuntimeError(f"login answered {status}: {body}")
    for header in headers.get_all("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        if name == "keypal_session":
            return rest.split(";", 1)[0]
    raise RuntimeError("login set no keypal_session cookie")


SESSION = {"token": None}


def session():
    """The run's admin session, logging in when there is none."""
    if SESSION["token"] is None:
        SESSION["token"] = login()
    return SESSION["token"]


def admin(method, path, body=None):
    """A request with the run's admin session, logging in again once if it has ended."""
    for _ in range(2):
        status, headers, parsed = request(method, path, body, {"Cookie": f"keypal_session={session()}"})
        if status != 401:
            return status, parsed
        SESSION["token"] = None
    raise RuntimeError(f"{method} {path} answered 401 with a fresh session")


def requires(scheme):
    """A filter: operations that need a credential (no requirement is empty) and take
    `scheme` (one of their requirements names it). The management API takes the admin
    session or a management token: the run uses its session there (client.py calls it
    with a token)."""

    def matches(context):
        requirements = context.operation.definition.raw.get("security")
        return (
            bool(requirements)
            and all(requirement for requirement in requirements)
            and any(scheme in requirement for requirement in requirements)
        )

    return matches


@schemathesis.auth(refresh_interval=3600).apply_to(requires("admin_session"))
class AdminSession:
    def get(self, case, context):
        SESSION["token"] = None
        return session()

    def set(self, case, data, context):
        case.cookies = {**(case.cookies or {}), "keypal_session": data}


@schemathesis.auth(refresh_interval=3600).apply_to(requires("service_key"))
class ServiceKey:
    def get(self, case, context):
        status, body = admin("GET", "/v1/service-key")
        if status != 200:
            raise RuntimeError(f"GET /v1/service-key answered {status}: {body}")
        return body["service_key"]

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schemathesis.auth(refresh_interval=3600).apply_to(requires("client_secret"))
class ClientSecret:
    def get(self, case, context):
        label = "st-" + secrets.token_hex(6)
        status, body = admin("POST", "/v1/apps", {"name": "schemathesis", "label": label})
        if status != 201:
            raise RuntimeError(f"POST /v1/apps answered {status}: {body}")
        return body["client_secret"]

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def refused_item_by_item(case, response):
    """Whether an import answered an item that breaks the schema as the document says it
    does: 200, with that item refused in the results (each item stands alone)."""
    if case.operation.definition.raw.get("operationId") != "import_keys" or response.status_code != 200:
        return False
    try:
        results = json.loads(response.content)["results"]
    except (ValueError, KeyError, TypeError):
        return False
    return any(
        r.get("status") == "error" and r.get("error", {}).get("code") in ("INVALID_JSON", "INVALID_INPUT")
        for r in results
    )


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keeps every failure but two: schema-valid data refused (ST202) with 400
    `INVALID_INPUT` for a field whose rule the operation states in `x-keypal-rules`
    (rules that depend on the time, other fields or stored data, which a JSON schema
    cannot say, like a key's `tier` being one of its application's); and an import's
    item that breaks the schema (ST201), which is refused in the answer's results, not
    by a 400 for the whole request."""
    if failure.code == "ST201":
        return not refused_item_by_item(case, response)
    if failure.code != "ST202" or response.status_code != 400:
        return True
    rules = case.operation.definition.raw.get("x-keypal-rules") or {}
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return True
    # The rule names the field; a refusal may name a part of it (`hash.algorithm`, `scopes[2]`).
    field = re.split(r"[.\[]", error.get("field") or "", maxsplit=1)[0]
    return not (error.get("code") == "INVALID_INPUT" and field in rules)


@schemathesis.check
def error_code_is_documented(ctx, response, case):
    """An error's code is one the operation's document lists for that status (each is an
    example of the response), not only the status: `{"error": {"code": ...}}`."""
    if response.status_code < 400 or response.status_code == 405:
        return None  # 405 answers a method the path does not have: no operation's refusal.
    documented = case.operation.definition.raw.get("responses", {}).get(str(response.status_code))
    if documented is None:
        return None  # status_code_conformance reports an undocumented status.
    try:
        code = json.loads(response.content)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"a {response.status_code} without the error body")
    examples = documented.get("content", {}).get("application/json", {}).get("examples", {})
    if code not in examples:
        raise AssertionError(
            f"{code} with {response.status_code}: the document lists {sorted(examples)} for this status"
        )
    return None


VERIFY_SECRET = {"secret": None, "uses": 0}


@schemathesis.hook
def map_body(context, body):
    """`POST /v1/verify` bodies name a real application's client secret (made for the run,
    and again now and then: the run deletes applications), so verification itself is
    reached, not only the 403 of an unknown secret."""
    operation = context.operation
    if operation is None or operation.definition.raw.get("operationId") != "verify":
        return body
    if not isinstance(body, dict) or not isinstance(body.get("client_secret"), str):
        return body
    if VERIFY_SECRET["secret"] is None or VERIFY_SECRET["uses"] >= 25:
        label = "st-verify-" + secrets.token_hex(6)
        status, made = admin("POST", "/v1/apps", {"name": "schemathesis verify", "label": label})
        if status != 201:
            raise RuntimeError(f"POST /v1/apps answered {status}: {made}")
        VERIFY_SECRET.update(secret=made["client_secret"], uses=0)
    VERIFY_SECRET["uses"] += 1
    return {**body, "client_secret": VERIFY_SECRET["secret"]}
