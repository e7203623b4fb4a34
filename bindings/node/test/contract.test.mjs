// @ts-check
// The contract of the package (its README opens with it): the program runs as an ES
// module and through require(), and does what its comments say.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

/** @param {any} seen */
function checkContract(seen) {
  assert.equal(typeof seen.key, "string");
  assert.match(seen.key, /^sk_live_[0-9A-Za-z]{32}$/);
  assert.match(seen.hash, /^\$sha256\$[0-9a-f]{64}$/);
  assert.equal(seen.isValid, true);
  assert.match(seen.issued, /^sk_live_[0-9A-Za-z]{32}$/);
  assert.notEqual(seen.issued, seen.key);

  const { result, record } = seen;
  assert.deepEqual(Object.keys(result), ["valid", "code", "record", "rateLimit", "remaining"]);
  assert.equal(result.valid, true);
  assert.equal(result.code, "VALID");
  assert.equal(result.rateLimit, null);
  assert.equal(result.remaining, null);
  assert.equal(result.record.id, record.id);
  assert.equal(result.record.ownerId, "user_123");
  assert.equal(result.record.name, "CI");
  assert.deepEqual(result.record.scopes, ["read"]);
  assert.ok(result.record.createdAt instanceof Date);
  assert.equal(seen.revoked, "REVOKED");

  // The key stored with its details verifies with them.
  assert.equal(seen.stored.code, "VALID");
  assert.deepEqual(seen.stored.record.scopes, ["read", "write"]);
  assert.ok(seen.stored.record.expiresAt instanceof Date);
  assert.equal(seen.stored.record.expiresAt.toISOString(), "2027-12-31T00:00:00.000Z");
  assert.equal(seen.stores.length, 3);
}

test("the contract program runs as an ES module (import ... from \"keypal\")", async () => {
  const { seen } = await import("./contract/contract.mjs");
  checkContract(seen);
});

test("the contract program runs through require(\"keypal\")", async () => {
  checkContract(await require("./contract/contract.cjs"));
});

test("the ES module and CommonJS entries export the same objects", async () => {
  const esm = /** @type {any} */ (await import("keypal"));
  const cjs = require("keypal");
  for (const name of ["createApiKeyManager", "MemoryStore", "SqliteStore", "PostgresStore", "RedisStore", "KeypalError"]) {
    assert.equal(esm[name], /** @type {any} */ (cjs)[name], name);
  }
  const express = await import("keypal/express");
  assert.equal(express.requireApiKey, require("keypal/express").requireApiKey);
});
