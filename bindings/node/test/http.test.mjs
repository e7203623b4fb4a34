// @ts-check
// On the request path: ApiKeyManager.authenticate in a Hono app and keypal/express's
// middleware, each behind a real listening server on 127.0.0.1, called with fetch().
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Hono } from "hono";
import { serve } from "@hono/node-server";
import express from "express";
import { createApiKeyManager, MemoryStore } from "keypal";
import { requireApiKey } from "keypal/express";

const keys = createApiKeyManager({ prefix: "sk_test", storage: new MemoryStore() });

/** @param {import("node:http").Server | import("node:net").Server} server */
function urlOf(server) {
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("not listening");
  return `http://127.0.0.1:${address.port}`;
}

/**
 * The answers every server must give, whatever the framework.
 * @param {() => string} base
 */
function answers(base) {
  /** @type {Record<string, string>} */
  const issued = {};
  before(async () => {
    issued.reader = (await keys.create({ ownerId: "reader", scopes: ["read"] })).key;
    issued.limited = (await keys.create({ ownerId: "limited", scopes: ["read"], rateLimit: "1/hour" })).key;
    issued.credits = (await keys.create({ ownerId: "credits", scopes: ["read"], remaining: 0 })).key;
    const revoked = await keys.create({ ownerId: "revoked", scopes: ["read"] });
    await keys.revoke(revoked.record.id);
    issued.revoked = revoked.key;
  });

  test("a valid key passes: Bearer or x-api-key, the verification reaches the handler", async () => {
    /** @type {Record<string, string>[]} */
    const variants = [{ authorization: `Bearer ${issued.reader}` }, { authorization: `bearer ${issued.reader}` }, { "x-api-key": issued.reader }];
    for (const headers of variants) {
      const response = await fetch(`${base()}/read`, { headers });
      assert.equal(response.status, 200);
      assert.deepEqual(await response.json(), { owner: "reader", code: "VALID" });
    }
  });

  test("no key: 401 with WWW-Authenticate: Bearer and MISSING_KEY; another scheme is no key", async () => {
    /** @type {Record<string, string>[]} */
    const variants = [{}, { authorization: "Basic dXNlcjpwYXNz" }];
    for (const headers of variants) {
      const response = await fetch(`${base()}/read`, { headers });
      assert.equal(response.status, 401);
      assert.equal(response.headers.get("www-authenticate"), 'Bearer realm="api"');
      assert.deepEqual(await response.json(), { error: { code: "MISSING_KEY", message: "an API key is required" } });
    }
  });

  test("a bad key (malformed, unknown, revoked): 401 invalid_token with its code", async () => {
    for (const [key, code] of [["nope", "MALFORMED"], [keys.generateKey(), "NOT_FOUND"], [issued.revoked, "REVOKED"]]) {
      const response = await fetch(`${base()}/read`, { headers: { authorization: `Bearer ${key}` } });
      assert.equal(response.status, 401, code);
      assert.equal(response.headers.get("www-authenticate"), 'Bearer realm="api", error="invalid_token"');
      const body = /** @type {any} */ (await response.json());
      assert.equal(body.error.code, code);
      assert.doesNotMatch(JSON.stringify(body), new RegExp(key), "the key is not echoed");
    }
  });

  test("a key without the route's scope: 403 insufficient_scope naming it", async () => {
    const response = await fetch(`${base()}/admin`, { headers: { "x-api-key": issued.reader } });
    assert.equal(response.status, 403);
    assert.equal(response.headers.get("www-authenticate"), 'Bearer realm="api", error="insufficient_scope", scope="admin"');
    assert.equal(/** @type {any} */ (await response.json()).error.code, "INSUFFICIENT_SCOPE");
  });

  test("over the rate limit: 429 with Retry-After and the RateLimit headers", async () => {
    const headers = { authorization: `Bearer ${issued.limited}` };
    const first = await fetch(`${base()}/read`, { headers });
    assert.equal(first.status, 200);
    const refused = await fetch(`${base()}/read`, { headers });
    assert.equal(refused.status, 429);
    assert.equal(/** @type {any} */ (await refused.json()).error.code, "RATE_LIMITED");
    const retryAfter = Number(refused.headers.get("retry-after"));
    assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 3600, `retry-after ${retryAfter}`);
    assert.equal(refused.headers.get("ratelimit-policy"), '"default";q=1;w=3600');
    assert.match(refused.headers.get("ratelimit") ?? "", /^"default";r=0;t=\d+$/);
  });

  test("no credits left: 429 USAGE_EXCEEDED", async () => {
    const response = await fetch(`${base()}/read`, { headers: { "x-api-key": issued.credits } });
    assert.equal(response.status, 429);
    assert.equal(/** @type {any} */ (await response.json()).error.code, "USAGE_EXCEEDED");
  });
}

describe("authenticate(request) in a Hono app", () => {
  const app = new Hono();
  for (const [path, scope] of [["/read", "read"], ["/admin", "admin"]]) {
    app.get(path, async (c) => {
      const result = await keys.authenticate(c.req.raw, { scopes: [scope] });
      if (result instanceof Response) return result;
      return c.json({ owner: result.record?.ownerId, code: result.code });
    });
  }
  /** @type {any} */
  let server;
  before(async () => {
    await new Promise((resolve) => {
      server = serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }, resolve);
    });
  });
  after(() => server.close());
  answers(() => urlOf(server));

  test("a failing store is 503 VERIFICATION_UNAVAILABLE, never a pass", async () => {
    const { PostgresStore } = await import("keypal");
    const broken = createApiKeyManager({
      prefix: "sk_test",
      storage: new PostgresStore("postgres://postgres@127.0.0.1:1/postgres", { acquireTimeout: 1 }),
    });
    const response = await broken.authenticate(
      new Request("http://localhost/", { headers: { authorization: `Bearer ${broken.generateKey()}` } }),
    );
    assert.ok(response instanceof Response);
    assert.equal(response.status, 503);
    assert.equal(response.headers.get("retry-after"), "1");
    assert.equal(/** @type {any} */ (await response.json()).error.code, "VERIFICATION_UNAVAILABLE");
  });
});

describe("keypal/express", () => {
  const app = express();
  app.get("/read", requireApiKey(keys, { scopes: ["read"] }), (req, res) => {
    res.json({ owner: req.apiKey?.record?.ownerId, code: req.apiKey?.code });
  });
  app.get("/admin", requireApiKey(keys, { scopes: ["admin"] }), (_req, res) => {
    res.json({ admin: true });
  });
  /** @type {import("node:http").Server} */
  let server;
  before(async () => {
    await new Promise((resolve) => {
      server = app.listen(0, "127.0.0.1", () => resolve(undefined));
    });
  });
  after(() => server.close());
  answers(() => urlOf(server));

  test("a valid key's answer carries the RateLimit headers of its limit", async () => {
    const { key } = await keys.create({ scopes: ["read"], rateLimit: "5/minute" });
    const response = await fetch(`${urlOf(server)}/read`, { headers: { authorization: `Bearer ${key}` } });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("ratelimit-policy"), '"default";q=5;w=60');
    assert.match(response.headers.get("ratelimit") ?? "", /^"default";r=4;t=\d+$/);
  });
});
