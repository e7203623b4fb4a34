"""A client generated from keypal's OpenAPI document calls every endpoint.

scripts/schemathesis.sh runs it against the server it started (KEYPAL_URL,
KEYPAL_ADMIN_PASSWORD): it fetches GET /openapi.json, generates a Python client with
openapi-python-client (refusing any warning about the document), and calls each of the
document's operations through it, checking the status and that the answer parses into
the generated model. It fails if an operation of the document was not called.

    python client.py VENV WORKDIR
"""

import hashlib
import importlib
import json
import os
import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path

BASE_URL = os.environ["KEYPAL_URL"]
ADMIN_PASSWORD = os.environ["KEYPAL_ADMIN_PASSWORD"]


def generate(venv: Path, work: Path):
    """Generates the client package from the served document; returns (package, document)."""
    with urllib.request.urlopen(f"{BASE_URL}/openapi.json") as response:
        document = json.load(response)
    (work / "openapi.json").write_text(json.dumps(document))
    # No formatter runs afterwards (post_hooks): a warning then is about the document.
    # An NDJSON body is bytes to the client (the generator knows no NDJSON).
    (work / "generator.yaml").write_text(
        "post_hooks: []\ncontent_type_overrides:\n  application/x-ndjson: application/octet-stream\n"
    )
    subprocess.run(
        [
            str(venv / "bin" / "openapi-python-client"),
            "generate",
            "--path", str(work / "openapi.json"),
            "--config", str(work / "generator.yaml"),
            "--meta", "none",
            "--output-path", str(work / "keypal_client"),
            "--overwrite",
            "--fail-on-warning",
        ],
        check=True,
    )
    sys.path.insert(0, str(work))
    return importlib.import_module("keypal_client"), document


class Calls:
    """Calls operations by id and remembers which were called."""

    def __init__(self, package, document):
        self.package = package
        self.expected = {
            operation["operationId"]
            for item in document["paths"].values()
            for operation in item.values()
        }
        self.modules = {}
        for item in document["paths"].values():
            for operation in item.values():
                tag = operation["tags"][0].replace(" ", "_")
                self.modules[operation["operationId"]] = f"keypal_client.api.{tag}.{operation['operationId']}"
        self.called = set()

    def __call__(self, operation_id, status, model=None, **kwargs):
        module = importlib.import_module(self.modules[operation_id])
        response = module.sync_detailed(**kwargs)
        if response.status_code != status:
            raise AssertionError(f"{operation_id}: {response.status_code} {response.content[:300]!r}, expected {status}")
        if model is not None and not isinstance(response.parsed, model):
            raise AssertionError(f"{operation_id}: parsed {type(response.parsed).__name__}, expected {model.__name__}")
        self.called.add(operation_id)
        return response

    def check_all_called(self):
        missing = sorted(self.expected - self.called)
        if missing:
            raise AssertionError(f"operations not called through the generated client: {missing}")


def main():
    venv, work = Path(sys.argv[1]), Path(sys.argv[2])
    package, document = generate(venv, work)
    m = importlib.import_module("keypal_client.models")
    Client = package.Client
    AuthenticatedClient = package.AuthenticatedClient
    call = Calls(package, document)

    anon = Client(base_url=BASE_URL)
    call("healthz", 200, client=anon)
    ready = call("readyz", 200, m.Readiness, client=anon)
    assert ready.parsed.ready, ready.parsed
    call("metrics", 200, client=anon)
    call("openapi", 200, client=anon)

    login = call("log_in", 204, client=anon, body=m.Login(password=ADMIN_PASSWORD))
    cookie = login.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
    admin = Client(base_url=BASE_URL, cookies={"keypal_session": cookie})

    label = "client-" + secrets.token_hex(4)
    created = call("create_app", 201, m.CreatedApp, client=admin,
                   body=m.NewApp(name="Generated client", label=label, recoverable=True,
                                 legacy_templates=["{secret:43:base64url}"],
                                 tiers=m.NewAppTiersType0.from_dict({"free": {"rate_limit": "100/hour"}})))
    app_id = created.parsed.app.id
    assert created.parsed.app.legacy_templates == ["{secret:43:base64url}"], created.parsed.app
    call("list_apps", 200, m.AppList, client=admin)
    call("get_app", 200, m.AppBody, client=admin, id=app_id)
    call("update_app", 200, m.AppBody, client=admin, id=app_id, body=m.AppPatch(name="Generated client v2"))
    secret = call("regenerate_client_secret", 200, m.ClientSecret, client=admin, id=app_id).parsed.client_secret

    made = call("create_key", 201, m.CreatedKey, client=admin, id=app_id,
                body=m.NewKeyRequest(name="ci", owner_id="alice", scopes=["read"], tier="free", expires_in_days=30))
    key_id = made.parsed.record.id
    # Keys of the legacy format imported: one by its plaintext, one by its SHA-256.
    plain_key, hashed_key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    digest = hashlib.sha256(hashed_key.encode()).hexdigest()
    imported = call("import_keys", 200, m.ImportReport, client=admin, id=app_id,
                    body=m.ImportRequest(keys=[
                        m.ImportItem(key=plain_key, owner_id="carol", name="old laptop"),
                        m.ImportItem(hash_=m.ImportHash(algorithm=m.ImportHashAlgorithm.SHA256, value=digest),
                                     owner_id="carol"),
                    ]))
    assert (imported.parsed.created, imported.parsed.errors) == (2, 0), imported.parsed
    assert [r.status for r in imported.parsed.results] == [m.ImportStatus.CREATED] * 2, imported.parsed
    call("list_keys", 200, m.KeyList, client=admin, id=app_id, owner_id="alice", include_revoked=True, limit=10)
    call("get_key", 200, m.KeyView, client=admin, id=key_id)
    call("update_key", 200, m.KeyView, client=admin, id=key_id, body=m.KeyPatchRequest(name="ci deploys"))
    credited = call("change_key_credits", 200, m.KeyView, client=admin, id=key_id,
                    body=m.CreditsRequest(op=m.CreditOpName.SET, amount=10))
    assert credited.parsed.remaining == 10, credited.parsed
    revealed = call("reveal_key", 200, m.RevealedKey, client=admin, id=key_id)
    assert revealed.parsed.key == made.parsed.key, "reveal gives back the key"
    rotated = call("rotate_key", 200, m.CreatedKey, client=admin, id=key_id, body=m.RotateRequest(grace_seconds=60))

    service_key = call("get_service_key", 200, m.ServiceKey, client=admin).parsed.service_key
    service = AuthenticatedClient(base_url=BASE_URL, token=service_key)
    verdict = call("verify", 200, m.VerifyResponse, client=service,
                   body=m.VerifyRequest(key=rotated.parsed.key, client_secret=secret, scopes=["read"],
                                      tags=["GET /orders", "eu-west"]))
    assert verdict.parsed.valid and verdict.parsed.code == "VALID", verdict.parsed
    for key in (plain_key, hashed_key):
        verdict = call("verify", 200, m.VerifyResponse, client=service,
                       body=m.VerifyRequest(key=key, client_secret=secret))
        assert verdict.parsed.code == "VALID", verdict.parsed

    backend = AuthenticatedClient(base_url=BASE_URL, token=secret)
    own = call("create_owner_key", 201, m.CreatedKey, client=backend, owner_id="bob",
               body=m.OwnerKeyRequest(name="laptop", expires_in_days=7))
    call("list_owner_keys", 200, m.KeyList, client=backend, owner_id="bob", include_revoked=True, limit=5)
    call("revoke_owner_key", 200, m.KeyView, client=backend, owner_id="bob", key_id=own.parsed.record.id)

    # Usage analytics (the calls check the shapes; counts reach them within seconds).
    call("owner_usage", 200, m.Buckets, client=backend, owner_id="bob", limit=5)
    call("verification_analytics", 200, m.Buckets, client=admin, app_id=app_id, limit=5)

    call("revoke_key", 200, m.KeyView, client=admin, id=rotated.parsed.record.id)
    call("delete_key", 204, client=admin, id=rotated.parsed.record.id)
    call("list_audit_events", 200, m.EventList, client=admin, app_id=app_id, limit=50)

    made = call("create_token", 201, m.CreatedToken, client=admin,
                body=m.NewToken(name="client-" + secrets.token_hex(4), expires_in_days=1))
    script = AuthenticatedClient(base_url=BASE_URL, token=made.parsed.token)
    listed = call("list_tokens", 200, m.TokenList, client=script)
    assert [t.id for t in listed.parsed.tokens if t.id == made.parsed.record.id], "the token lists itself"
    assert made.parsed.token not in str(listed.content), "a list never shows a token"

    # Webhooks (the server refuses private addresses here: the URL is a public name,
    # never resolved by these calls; its deliveries fail in the background).
    hook = call("create_webhook", 201, m.CreatedWebhook, client=script,
                body=m.NewWebhook(url="https://hooks.example.com/keypal",
                                  events=[m.EventTypeName("key.revoked")], app_id=app_id))
    assert hook.parsed.secret.startswith("whsec_"), hook.parsed
    hook_id = hook.parsed.webhook.id
    listed = call("list_webhooks", 200, m.WebhookList, client=admin)
    assert hook.parsed.secret not in str(listed.content), "a list never shows a secret"
    call("get_webhook", 200, m.WebhookView, client=admin, id=hook_id)
    call("update_webhook", 200, m.WebhookView, client=admin, id=hook_id,
         body=m.WebhookPatch(description="generated client"))
    rotated_secret = call("rotate_webhook_secret", 200, m.WebhookSecret, client=admin, id=hook_id)
    assert rotated_secret.parsed.secret != hook.parsed.secret
    sent = call("test_webhook", 202, m.DeliveryView, client=admin, id=hook_id)
    call("list_webhook_deliveries", 200, m.DeliveryList, client=admin, id=hook_id, limit=10)
    call("retry_webhook_delivery", 202, m.DeliveryView, client=admin, id=hook_id, delivery_id=sent.parsed.id)
    call("delete_webhook", 204, client=admin, id=hook_id)
    call("revoke_token", 204, client=admin, id=made.parsed.record.id)
    call("rotate_service_key", 200, m.ServiceKey, client=admin)
    call("delete_app", 200, m.DeletedApp, client=admin, id=app_id)
    call("log_out", 204, client=admin)

    call.check_all_called()
    print(f"client.py: the generated client called all {len(call.called)} operations")


if __name__ == "__main__":
    main()
