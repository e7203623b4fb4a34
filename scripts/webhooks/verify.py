#!/usr/bin/env python3
"""Verifies webhook deliveries with the Standard Webhooks reference library.

Reads a JSON list from standard input, one item per delivery:
    {"secret": "whsec_...", "headers": {"webhook-id": ..., ...}, "body": "<the raw body>"}
and prints one line per item: "ok", or "invalid: <why>". Exits 1 when any is invalid.
keypal's webhook tests (crates/keypal-server/tests/webhooks.rs) run it with the Python
of a virtual environment holding scripts/webhooks/requirements.txt (see .ci/run).
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    items = json.load(sys.stdin)
    failed = False
    for item in items:
        try:
            Webhook(item["secret"]).verify(item["body"], item["headers"])
            print("ok")
        except WebhookVerificationError as error:
            failed = True
            print(f"invalid: {error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
