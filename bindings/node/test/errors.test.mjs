// @ts-check
// Errors are KeypalError with a stable code; plaintext keys never show in util.inspect of
// a record, a verification or an error.
import { test } from "node:test";
import assert from "node:assert/strict";
import { inspect } from "node:util";
import { createApiKeyManager, KeypalError } from "keypal";

/** @param {string} code @param {string} [field] */
function keypal(code, field) {
  return (/** @type {any} */ e) => e instanceof KeypalError && e.code === code && (field === undefined || e.field === field);
}

test("stable codes: NOT_FOUND, INVALID_INPUT (naming the field), ALREADY_REVOKED, KEY_LIMIT_REACHED", async () => {
  const keys = createApiKeyManager({ prefix: "sk_test", policy: { maxActiveKeysPerOwner: 1 } });
  await assert.rejects(keys.get("0190a0f2-7c4e-7d2a-9b1e-3f5c2a9d8e71"), keypal("NOT_FOUND"));
  await assert.rejects(keys.get("not-an-id"), keypal("INVALID_INPUT", "id"));
  await assert.rejects(keys.create(/** @type {any} */ ({ scopes: "read" })), keypal("INVALID_INPUT", "scopes"));
  await assert.rejects(keys.create(/** @type {any} */ ({ ownerId: "u", colour: "red" })), keypal("INVALID_INPUT", "colour"));
  await assert.rejects(keys.create({ expiresAt: new Date("nonsense") }), keypal("INVALID_INPUT", "expiresAt"));
  await assert.rejects(keys.create({ expiresAt: new Date(Date.now() - 60_000) }), keypal("INVALID_INPUT", "expiresAt"));
  await assert.rejects(keys.create({ rateLimit: "often" }), keypal("INVALID_INPUT", "rateLimit"));
  await assert.rejects(keys.create({ name: " " }), keypal("INVALID_INPUT", "name"));
  await assert.rejects(keys.verify(/** @type {any} */ (42)), keypal("INVALID_INPUT", "key"));
  await assert.rejects(keys.verify("x", { cost: -1 }), keypal("INVALID_INPUT", "cost"));
  await assert.rejects(keys.list({ limit: 0 }), keypal("INVALID_INPUT", "limit"));
  await assert.rejects(keys.audit(/** @type {any} */ ({ action: "exploded" })), keypal("INVALID_INPUT", "action"));
  const { record } = await keys.create({ ownerId: "u" });
  await assert.rejects(keys.create({ ownerId: "u" }), keypal("KEY_LIMIT_REACHED"));
  await assert.rejects(keys.rotate(record.id, { graceSeconds: 1e12 }), keypal("INVALID_INPUT", "graceSeconds"));
  await keys.revoke(record.id);
  await assert.rejects(keys.revoke(record.id), keypal("ALREADY_REVOKED"));
  await assert.rejects(keys.update(record.id, /** @type {any} */ ({ expiresAt: new Date(Date.now() + 60_000), bogus: 1 })), keypal("INVALID_INPUT"));
});

test("no plaintext key in util.inspect of a record, a verification or an error", async () => {
  const keys = createApiKeyManager({ prefix: "sk_test" });
  const { key, record } = await keys.create({ ownerId: "u", name: "n" });
  const secret = key.slice("sk_test_".length);
  const verification = await keys.verify(key);
  for (const value of [record, verification, await keys.get(record.id), (await keys.list()).items]) {
    const text = inspect(value, { depth: 10, showHidden: true });
    assert.doesNotMatch(text, new RegExp(secret));
    assert.doesNotMatch(text, /\$sha256\$/, "nor its stored hash");
  }
  const errors = [];
  for (const attempt of [
    () => keys.store(key, {}),
    () => keys.store(key.slice(0, -2), {}),
    () => keys.import(/** @type {any} */ ({ key, hash: { algorithm: "sha256", value: "00" } })),
    () => keys.import({ hash: { algorithm: "sha256", value: key } }),
  ]) {
    try {
      await attempt();
    } catch (error) {
      errors.push(error);
    }
  }
  assert.equal(errors.length, 4);
  for (const error of errors) {
    assert.ok(error instanceof KeypalError);
    const text = inspect(error, { depth: 10, showHidden: true });
    assert.doesNotMatch(text, new RegExp(secret.slice(0, 20)));
  }
});

test("errors are Error instances with a name, a message and a stack", async () => {
  const keys = createApiKeyManager();
  const error = await keys.get("nope").catch((/** @type {any} */ e) => e);
  assert.ok(error instanceof Error);
  assert.equal(error.name, "KeypalError");
  assert.match(error.message, /id/);
  assert.equal(typeof error.stack, "string");
});
