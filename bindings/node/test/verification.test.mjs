// @ts-check
// Every verification code, as a caller sees it: the code, and what comes with it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createApiKeyManager, MemoryStore, VERIFICATION_CODES } from "keypal";
import { settledAlready } from "./helpers.mjs";

function manager() {
  return createApiKeyManager({ prefix: "sk_test", storage: new MemoryStore() });
}

test("VALID: a created key verifies, with its record", async () => {
  const keys = manager();
  const { key, record } = await keys.create({ ownerId: "u1", scopes: ["read"] });
  const v = await keys.verify(key);
  assert.equal(v.valid, true);
  assert.equal(v.code, "VALID");
  assert.equal(v.record?.id, record.id);
});

test("MALFORMED: a key of another format, a typo in length, an empty string", async () => {
  const keys = manager();
  const { key } = await keys.create({});
  for (const presented of ["", "sk_live_" + key.slice(8), key.slice(0, -1), key + "x", "hello"]) {
    const v = await keys.verify(presented);
    assert.equal(v.code, "MALFORMED", presented);
    assert.equal(v.valid, false);
    assert.equal(v.record, null);
  }
});

test("NOT_FOUND: a well-formed key that was never stored", async () => {
  const keys = manager();
  const v = await keys.verify(keys.generateKey());
  assert.equal(v.code, "NOT_FOUND");
  assert.equal(v.record, null);
});

test("REVOKED: after revoke, and after revokeAll of the owner", async () => {
  const keys = manager();
  const a = await keys.create({ ownerId: "u1" });
  const b = await keys.create({ ownerId: "u2" });
  const c = await keys.create({ ownerId: "u2" });
  await keys.revoke(a.record.id);
  assert.equal((await keys.verify(a.key)).code, "REVOKED");
  const revoked = await keys.revokeAll("u2");
  assert.deepEqual(revoked.map((r) => r.id).sort(), [b.record.id, c.record.id].sort());
  assert.equal((await keys.verify(b.key)).code, "REVOKED");
  assert.equal((await keys.verify(c.key)).code, "REVOKED");
  const v = await keys.verify(a.key);
  assert.ok(v.record?.revokedAt instanceof Date, "a refused key's record comes with the refusal");
});

test("DISABLED until enabled again", async () => {
  const keys = manager();
  const { key, record } = await keys.create({});
  const disabled = await keys.disable(record.id);
  assert.equal(disabled.enabled, false);
  assert.equal((await keys.verify(key)).code, "DISABLED");
  await keys.enable(record.id);
  assert.equal((await keys.verify(key)).code, "VALID");
});

test("EXPIRED once expiresAt has passed", async () => {
  const keys = manager();
  const { key } = await keys.create({ expiresAt: new Date(Date.now() + 1_000) });
  assert.equal((await keys.verify(key)).code, "VALID");
  await new Promise((resolve) => setTimeout(resolve, 1_100));
  assert.equal((await keys.verify(key)).code, "EXPIRED");
});

test("INSUFFICIENT_SCOPE: required scopes the key lacks; patterns grant what they cover", async () => {
  const keys = manager();
  const { key } = await keys.create({ scopes: ["read", "billing:*"] });
  assert.equal((await keys.verify(key, { scopes: ["write"] })).code, "INSUFFICIENT_SCOPE");
  assert.equal((await keys.verify(key, { scopes: ["read", "write"] })).code, "INSUFFICIENT_SCOPE");
  assert.equal((await keys.verify(key, { scopes: ["billing:invoices"] })).code, "VALID");
  assert.equal((await keys.verify(key, { scopes: ["billing"] })).code, "INSUFFICIENT_SCOPE");
});

test("RATE_LIMITED past the key's rate limit, with the limit's state", async () => {
  const keys = manager();
  const { key } = await keys.create({ rateLimit: "2/hour" });
  const first = await keys.verify(key);
  assert.equal(first.code, "VALID");
  assert.equal(first.rateLimit?.limit, 2);
  assert.equal(first.rateLimit?.remaining, 1);
  assert.equal(first.rateLimit?.window, 3600);
  assert.ok(first.rateLimit?.resetAt instanceof Date);
  assert.equal((await keys.verify(key)).code, "VALID");
  const refused = await keys.verify(key);
  assert.equal(refused.code, "RATE_LIMITED");
  assert.equal(refused.rateLimit?.allowed, false);
  assert.equal(refused.rateLimit?.remaining, 0);
  assert.ok((refused.rateLimit?.retryAfter ?? 0) > 0);
});

test("USAGE_EXCEEDED when the credits run out; a cost spends several; a rate-limited call spends none", async () => {
  const keys = manager();
  const { key } = await keys.create({ remaining: 3 });
  const v = await keys.verify(key, { cost: 2 });
  assert.equal(v.code, "VALID");
  assert.equal(v.remaining, 1);
  const refused = await keys.verify(key, { cost: 2 });
  assert.equal(refused.code, "USAGE_EXCEEDED");
  assert.equal(refused.remaining, 1);
  assert.equal((await keys.verify(key)).remaining, 0);
  assert.equal((await keys.verify(key)).code, "USAGE_EXCEEDED");

  const limited = await keys.create({ remaining: 5, rateLimit: "1/hour" });
  await keys.verify(limited.key);
  assert.equal((await keys.verify(limited.key)).code, "RATE_LIMITED");
  assert.equal((await keys.get(limited.record.id)).remaining, 4);
});

test("every code has a sentence", () => {
  assert.deepEqual(Object.keys(VERIFICATION_CODES).sort(), [
    "DISABLED", "EXPIRED", "INSUFFICIENT_SCOPE", "MALFORMED", "NOT_FOUND", "RATE_LIMITED", "REVOKED",
    "USAGE_EXCEEDED", "VALID",
  ]);
});

test("a rotated key keeps working for its grace period; the new one works at once", async () => {
  const keys = manager();
  const old = await keys.create({ ownerId: "u1", scopes: ["read"], name: "deploy" });
  const rotated = await keys.rotate(old.record.id, { graceSeconds: 3600 });
  assert.notEqual(rotated.key, old.key);
  assert.equal(rotated.record.name, "deploy");
  assert.deepEqual(rotated.record.scopes, ["read"]);
  assert.equal(rotated.record.rotatedFrom, old.record.id);
  assert.equal(rotated.previous.rotatedTo, rotated.record.id);
  assert.equal((await keys.verify(old.key)).code, "VALID");
  assert.equal((await keys.verify(rotated.key)).code, "VALID");
  const immediate = await keys.rotate(rotated.record.id);
  assert.equal((await keys.verify(rotated.key)).code, "REVOKED");
  assert.equal((await keys.verify(immediate.key)).code, "VALID");
});

test("a verification that needs no I/O resolves on the calling thread: its promise is settled on return", async () => {
  const keys = manager();
  const { key } = await keys.create({ remaining: 10 });
  assert.equal(await settledAlready(keys.verify(key)), true);
  assert.equal(await settledAlready(keys.verify(key, { scopes: ["x"] })), true);
  assert.equal(await settledAlready(keys.verify("nope")), true);
});

test("a verification's record is frozen, and shows every change made since", async () => {
  const keys = manager();
  const { key, record } = await keys.create({ name: "before", remaining: 10, metadata: { tags: ["a"] } });
  const first = await keys.verify(key);
  assert.ok(Object.isFrozen(first.record));
  assert.ok(Object.isFrozen(first.record?.scopes));
  assert.ok(Object.isFrozen(/** @type {any} */ (first.record?.metadata).tags));
  assert.equal(first.remaining, 9);
  await keys.update(record.id, { name: "after", scopes: ["x"] });
  const second = await keys.verify(key);
  assert.equal(second.record?.name, "after");
  assert.deepEqual(second.record?.scopes, ["x"]);
  assert.equal(second.record?.remaining, 9, "the record as read, before this verification spent");
  assert.equal(second.remaining, 8);
  assert.equal(first.record?.name, "before", "an earlier verification keeps what it saw");
});
