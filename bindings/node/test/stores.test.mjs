// @ts-check
// The whole lifecycle on each of the four stores (PostgreSQL and Redis are private
// servers started for this file, see services.mjs), and what a store shares.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApiKeyManager, KeypalError, MemoryStore, PostgresStore, RedisStore, SqliteStore } from "keypal";
import { need, postgres, redis } from "./services.mjs";
import { settledAlready } from "./helpers.mjs";

const dir = mkdtempSync(join(tmpdir(), "keypal-node-stores-"));
after(() => rmSync(dir, { recursive: true, force: true }));

let unique = 0;
/** A fresh name, for a schema, a Redis prefix or a file. */
function fresh() {
  unique += 1;
  return `t${process.pid}_${unique}`;
}

/**
 * @param {any} error
 * @param {string} code
 */
function isKeypal(error, code) {
  return error instanceof KeypalError && error.code === code;
}

/**
 * The lifecycle suite over one kind of store.
 * @param {string} name
 * @param {(t: import("node:test").TestContext) => Promise<(() => any) | null>} storeFactory
 *   makes a function returning a new store object on one shared database, or null (skipped)
 * @param {{ inMemory: boolean }} kind
 */
function lifecycle(name, storeFactory, { inMemory }) {
  describe(name, () => {
    /** @type {(() => any) | null} */
    let newStore = null;
    /** @type {any} */
    let shared = null;

    before(async (t) => {
      // @ts-ignore the before hook's context has skip() in Node 20.
      newStore = await storeFactory(t);
      if (newStore) shared = newStore();
    });

    /** @param {import("node:test").TestContext} t @param {object} [config] */
    function manager(t, config = {}) {
      if (!newStore) {
        t.skip("the store is not available here");
        return null;
      }
      return createApiKeyManager({ prefix: "sk_test", ...config, storage: shared });
    }

    test("create, verify, revoke; a revocation is seen at once", async (t) => {
      const keys = manager(t);
      if (!keys) return;
      const { key, record } = await keys.create({ ownerId: "alice", scopes: ["read"], metadata: { team: "infra" } });
      const v = await keys.verify(key, { scopes: ["read"] });
      assert.equal(v.code, "VALID");
      assert.ok(Object.isFrozen(v.record), "a verification's record is frozen, whether the store was read or not");
      assert.deepEqual(v.record?.metadata, { team: "infra" });
      await keys.revoke(record.id);
      assert.equal((await keys.verify(key)).code, "REVOKED");
      await assert.rejects(keys.revoke(record.id), (e) => isKeypal(e, "ALREADY_REVOKED"));
    });

    test("store keeps a key generated elsewhere; import takes a plaintext or a hash; twice is ALREADY_EXISTS", async (t) => {
      const keys = manager(t);
      if (!keys) return;
      const key = keys.generateKey();
      const stored = await keys.store(key, { ownerId: "bob", name: "generated" });
      assert.equal(stored.name, "generated");
      assert.equal((await keys.verify(key)).record?.id, stored.id);
      await assert.rejects(keys.store(key, {}), (e) => isKeypal(e, "ALREADY_EXISTS"));

      const plain = keys.generateKey();
      const imported = await keys.import({ key: plain, ownerId: "bob", createdAt: new Date("2024-01-02T03:04:05Z") });
      assert.equal(imported.createdAt.toISOString(), "2024-01-02T03:04:05.000Z");
      assert.equal((await keys.verify(plain)).code, "VALID");

      const known = keys.generateKey();
      const { createHash } = await import("node:crypto");
      const digest = createHash("sha256").update(known).digest("hex");
      await keys.import({ hash: { algorithm: "sha256", value: digest }, ownerId: "carol" });
      const v = await keys.verify(known);
      assert.equal(v.code, "VALID");
      assert.equal(v.record?.ownerId, "carol");
    });

    test("get, list (by owner, paged, revoked or not), count, update, delete", async (t) => {
      const keys = manager(t);
      if (!keys) return;
      const owner = fresh();
      const made = [];
      for (let i = 0; i < 5; i += 1) made.push(await keys.create({ ownerId: owner, name: `key ${i}` }));
      assert.equal((await keys.get(made[0].record.id)).name, "key 0");

      const first = await keys.list({ ownerId: owner, limit: 2 });
      assert.deepEqual(first.items.map((r) => r.name), ["key 4", "key 3"]);
      assert.equal(typeof first.nextCursor, "string");
      const second = await keys.list({ ownerId: owner, limit: 10, cursor: first.nextCursor });
      assert.deepEqual(second.items.map((r) => r.name), ["key 2", "key 1", "key 0"]);
      assert.equal(second.nextCursor, null);

      await keys.revoke(made[4].record.id);
      assert.equal((await keys.list({ ownerId: owner })).items.length, 4);
      assert.equal((await keys.list({ ownerId: owner, includeRevoked: true })).items.length, 5);
      assert.equal(await keys.count({ ownerId: owner }), 4);

      const id = made[0].record.id;
      const updated = await keys.update(id, { name: "renamed", scopes: ["a", "b"], metadata: "plain", remaining: 7 });
      assert.equal(updated.name, "renamed");
      assert.deepEqual(updated.scopes, ["a", "b"]);
      assert.equal(updated.metadata, "plain");
      assert.equal(updated.remaining, 7);
      const cleared = await keys.update(id, { name: null, remaining: null });
      assert.equal(cleared.name, null);
      assert.equal(cleared.remaining, null);
      assert.deepEqual(cleared.scopes, ["a", "b"], "fields left out are unchanged");

      const deleted = await keys.delete(id);
      assert.equal(deleted.id, id);
      await assert.rejects(keys.get(id), (e) => isKeypal(e, "NOT_FOUND"));
      assert.equal((await keys.verify(made[0].key)).code, "NOT_FOUND");
    });

    test("the audit log records each change, newest first", async (t) => {
      const keys = manager(t);
      if (!keys) return;
      const owner = fresh();
      const { record } = await keys.create({ ownerId: owner });
      await keys.disable(record.id);
      await keys.enable(record.id);
      await keys.revoke(record.id);
      const page = await keys.audit({ keyId: record.id });
      assert.deepEqual(page.items.map((e) => e.action), ["revoked", "enabled", "disabled", "created"]);
      assert.ok(page.items.every((e) => e.at instanceof Date && e.ownerId === owner));
      const byOwner = await keys.audit({ ownerId: owner, action: "created" });
      assert.equal(byOwner.items.length, 1);
    });

    test("an owner's limit of active keys holds under concurrent creates", async (t) => {
      const keys = manager(t, { policy: { maxActiveKeysPerOwner: 3 } });
      if (!keys) return;
      const owner = fresh();
      const results = await Promise.allSettled(Array.from({ length: 12 }, () => keys.create({ ownerId: owner })));
      const created = results.filter((r) => r.status === "fulfilled");
      const refused = results.filter((r) => r.status === "rejected");
      assert.equal(created.length, 3);
      assert.ok(refused.every((r) => r.status === "rejected" && isKeypal(r.reason, "KEY_LIMIT_REACHED") && r.reason.limit === 3));
      assert.equal(await keys.count({ ownerId: owner, activeOnly: true }), 3);
    });

    test("managers over separate store objects on one database share their keys", async (t) => {
      const keys = manager(t);
      if (!keys || !newStore) return;
      const other = createApiKeyManager({ prefix: "sk_test", storage: inMemory ? shared : newStore() });
      const { key, record } = await keys.create({ ownerId: "dave" });
      assert.equal((await other.verify(key)).record?.id, record.id);
      await other.revoke(record.id);
      assert.equal((await other.get(record.id)).revokedAt instanceof Date, true);
    });

    test("flushLastUsed writes the time of the last use", async (t) => {
      const keys = manager(t);
      if (!keys) return;
      const { key, record } = await keys.create({});
      const before = Date.now();
      await keys.verify(key);
      await keys.flushLastUsed();
      const used = (await keys.get(record.id)).lastUsedAt;
      assert.ok(used instanceof Date);
      assert.ok(used.getTime() >= before - 1000);
    });

    if (inMemory) {
      test("verifications settle on the calling thread", async (t) => {
        const keys = manager(t);
        if (!keys) return;
        const { key } = await keys.create({});
        assert.equal(await settledAlready(keys.verify(key)), true);
      });
    } else {
      test("a cached verification settles on the calling thread; a change drops it", async (t) => {
        const keys = manager(t);
        if (!keys) return;
        const { key, record } = await keys.create({});
        await keys.get(record.id); // the store is open
        assert.equal((await keys.verify(key)).code, "VALID");
        const cached = keys.verify(key);
        assert.equal(await settledAlready(cached), true);
        assert.equal((await cached).code, "VALID");
        await keys.revoke(record.id);
        assert.equal((await keys.verify(key)).code, "REVOKED", "a change through the manager drops the cached result");
      });
    }
  });
}

lifecycle("MemoryStore", async () => () => new MemoryStore(), { inMemory: true });

lifecycle("SqliteStore in memory", async () => {
  const store = new SqliteStore(":memory:");
  return () => store;
}, { inMemory: false });

lifecycle("SqliteStore in a file", async () => {
  const file = join(dir, `${fresh()}.db`);
  return () => new SqliteStore(file);
}, { inMemory: false });

/** @type {{ url: string, stop(): void } | null} */
let pg = null;
/** @type {{ url: string, stop(): void } | null} */
let rd = null;
after(() => {
  pg?.stop();
  rd?.stop();
});

lifecycle("PostgresStore", async (t) => {
  pg = await need(t, postgres);
  if (!pg) return null;
  const url = pg.url;
  const schema = fresh();
  return () => new PostgresStore(url, { schema });
}, { inMemory: false });

lifecycle("RedisStore", async (t) => {
  rd = await need(t, redis);
  if (!rd) return null;
  const url = rd.url;
  const prefix = `${fresh()}:`;
  return () => new RedisStore(url, { prefix });
}, { inMemory: false });

describe("opening a store", () => {
  test("an unreachable PostgreSQL is DATABASE_UNREACHABLE, on connect() or on first use", async () => {
    const store = new PostgresStore("postgres://postgres@127.0.0.1:1/postgres", { acquireTimeout: 2 });
    await assert.rejects(store.connect(), (e) => isKeypal(e, "DATABASE_UNREACHABLE"));
    const keys = createApiKeyManager({ storage: store });
    await assert.rejects(keys.verify(keys.generateKey()), (e) => isKeypal(e, "DATABASE_UNREACHABLE"));
  });

  test("an SQLite file in a folder that does not exist is DATABASE_UNREACHABLE", async () => {
    const store = new SqliteStore(join(dir, "missing", "keys.db"));
    await assert.rejects(store.connect(), (e) => isKeypal(e, "DATABASE_UNREACHABLE"));
  });

  test("an unreachable Redis is REDIS_UNREACHABLE", async () => {
    const store = new RedisStore("redis://127.0.0.1:1/0");
    await assert.rejects(store.connect(), (e) => isKeypal(e, "REDIS_UNREACHABLE"));
  });

  test("a PostgresStore takes only PostgreSQL URLs; the password never shows in util.inspect", async () => {
    assert.throws(() => new PostgresStore("mysql://x"), (e) => isKeypal(e, "DATABASE_URL_UNSUPPORTED"));
    const { inspect } = await import("node:util");
    const store = new PostgresStore("postgres://user:hunter2secret@127.0.0.1:1/db");
    assert.doesNotMatch(inspect(store, { showHidden: true, depth: 5 }), /hunter2secret/);
  });
});
