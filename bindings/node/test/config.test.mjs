// @ts-check
// The configuration: the Rust Config in camelCase, every problem reported at once with its path.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { configSchema, createApiKeyManager, KeypalConfigError, KeypalError, MemoryStore } from "keypal";

/** @param {any} config */
function problemsOf(config) {
  try {
    createApiKeyManager(config);
  } catch (error) {
    assert.ok(error instanceof KeypalConfigError);
    assert.ok(error instanceof KeypalError);
    assert.equal(error.code, "CONFIG_INVALID");
    return error.problems;
  }
  assert.fail("the configuration was accepted");
}

test("every problem at once, each with its camelCase path", () => {
  const problems = problemsOf({
    length: 8,
    hash: { algorithm: "hmac-sha256", bcryptCost: 12 },
    policy: { maxActiveKeysPerOwner: 0, name: { minLength: 5, maxLength: 2 } },
    cache: { ttl: "0s" },
    legacyTemplates: ["{nope}"],
    storage: "keys.db",
  });
  const paths = problems.map((/** @type {any} */ p) => p.path);
  for (const path of [
    "storage", "length", "hash.bcryptCost", "hash.peppers", "policy.maxActiveKeysPerOwner", "policy.name",
    "cache.ttl", "legacyTemplates[0]",
  ]) {
    assert.ok(paths.includes(path), `${path} in ${paths.join(", ")}`);
  }
  for (const p of problems) assert.equal(typeof p.message, "string");
});

test("unknown settings are named, with the known ones", () => {
  const problems = problemsOf({ prefx: "sk", hash: { algo: "sha256" }, tiers: { pro: { rateLimits: "1/hour" } } });
  assert.deepEqual(problems.map((/** @type {any} */ p) => p.path).sort(), ["hash.algo", "prefx", "tiers.pro.rateLimits"]);
  assert.match(problems.find((/** @type {any} */ p) => p.path === "prefx")?.message ?? "", /prefix/);
});

test("a value of the wrong type is named by its path", () => {
  const problems = problemsOf({ hash: { algorithm: "md5" } });
  assert.equal(problems[0].path, "hash.algorithm");
  const types = problemsOf({ length: "32" });
  assert.equal(types[0].path, "length");
});

test("templates, tiers and a default tier, as the Rust Config has them", async () => {
  const problems = problemsOf({ template: "kota_{tier}_{id:12:base32}_{secret:36:hex}", tiers: { free: {} } });
  assert.deepEqual(problems.map((/** @type {any} */ p) => p.path), ["defaultTier"]);

  const keys = createApiKeyManager({
    template: "kota_{tier}_{id:12:base32}_{secret:36:hex}",
    tiers: { free: { rateLimit: "100/hour" }, team_plus: { segment: "teamplus", rateLimit: "10000/hour" } },
    defaultTier: "free",
    hash: { algorithm: "bcrypt", bcryptCost: 4 },
    policy: { maxActiveKeysPerOwner: 10, name: { required: true } },
    storage: new MemoryStore(),
  });
  assert.match(keys.generateKey(), /^kota_free_[a-z2-7]{12}_[0-9a-f]{36}$/);
  const { key, record } = await keys.create({ tier: "team_plus", name: "ci" });
  assert.match(key, /^kota_teamplus_/);
  assert.equal(record.tier, "team_plus");
  const v = await keys.verify(key);
  assert.equal(v.code, "VALID");
  assert.equal(v.rateLimit?.limit, 10_000);
  assert.equal(v.rateLimit?.window, 3600, "the tier's limit, per hour");
  await assert.rejects(keys.create({}), (e) => e instanceof KeypalError && e.code === "INVALID_INPUT" && e.field === "name");
  // A tier name is the user's: reported as written.
  const tierProblems = problemsOf({ tiers: { my_tier: { segment: "a b" } } });
  assert.deepEqual(tierProblems.map((/** @type {any} */ p) => p.path), ["tiers.my_tier.segment"]);
});

test("legacy templates keep old keys verifying; HMAC peppers", async () => {
  const old = createApiKeyManager({ prefix: "sk_old", length: 24 });
  const oldKey = old.generateKey();
  const keys = createApiKeyManager({
    prefix: "sk_live",
    legacyTemplates: ["sk_old_{secret:24:base62}"],
    hash: { algorithm: "hmac-sha256", peppers: { k1: "a-pepper-of-sixteen-bytes-or-more" } },
  });
  await keys.store(oldKey, { ownerId: "u" });
  assert.equal((await keys.verify(oldKey)).code, "VALID");
  const hash = keys.hashKey(oldKey);
  assert.match(hash, /^\$hmac-sha256\$kid=k1\$/);
  assert.equal(keys.validateKey(oldKey, hash), true);
  assert.equal(keys.validateKey(oldKey + "x", hash), false);
});

test("the configuration is an object", () => {
  assert.throws(() => createApiKeyManager(/** @type {any} */ ("sk_live")), KeypalConfigError);
  assert.ok(createApiKeyManager().generateKey().length > 0, "an empty configuration has defaults");
});

test("the JSON Schema ships in the package and is the Rust Config's in camelCase", () => {
  const require = createRequire(import.meta.url);
  const shipped = /** @type {any} */ (JSON.parse(readFileSync(require.resolve("keypal/config.schema.json"), "utf8")));
  assert.deepEqual(configSchema(), shipped);
  assert.ok("defaultTier" in shipped.properties);
  assert.ok("legacyTemplates" in shipped.properties);
  assert.ok("storage" in shipped.properties);
  assert.ok(!("default_tier" in shipped.properties));
});
