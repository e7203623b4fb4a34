import { createApiKeyManager, MemoryStore, SqliteStore, PostgresStore, RedisStore } from "keypal";

const apiKeys = createApiKeyManager({
  prefix: "sk_live",
  length: 32,
  storage: new MemoryStore(),          // or new SqliteStore("keys.db"), new PostgresStore(url), new RedisStore(url)
});

const key = apiKeys.generateKey();                 // string
const hash = apiKeys.hashKey(key);                 // self-describing stored hash
const isValid = apiKeys.validateKey(key, hash);    // boolean, constant time

await apiKeys.store(key, { ownerId: "user_123", scopes: ["read", "write"], expiresAt: new Date("2027-12-31") });

const { key: issued, record } = await apiKeys.create({ ownerId: "user_123", scopes: ["read"], name: "CI" });
const result = await apiKeys.verify(issued, { scopes: ["read"] });
// { valid: true, code: "VALID", record: {...}, rateLimit: null, remaining: null }
await apiKeys.revoke(record.id);
(await apiKeys.verify(issued)).code;               // "REVOKED"

// What the test checks (not part of the program above).
export const seen = {
  key, hash, isValid, issued, record, result, stores: [SqliteStore, PostgresStore, RedisStore],
  revoked: (await apiKeys.verify(issued)).code,
  stored: await apiKeys.verify(key, { scopes: ["write"] }),
};
