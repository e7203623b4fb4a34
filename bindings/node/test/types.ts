// Type checks of the package's declarations (tsc --noEmit; not run): what compiles and
// what must not. The contract program first, as TypeScript.
import { createApiKeyManager, MemoryStore, SqliteStore, PostgresStore, RedisStore } from "keypal";
import { KeypalConfigError, KeypalError, type KeyRecord, type Verification } from "keypal";
import { requireApiKey } from "keypal/express";

export async function contract(): Promise<"REVOKED" | string> {
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
  const stores = [SqliteStore, PostgresStore, RedisStore];
  const checks: [string, boolean, Verification, number] = [hash, isValid, result, stores.length];
  void checks;
  return (await apiKeys.verify(issued)).code;               // "REVOKED"
}

export async function narrowing(v: Verification): Promise<string | null> {
  if (v.valid) {
    const record: KeyRecord = v.record; // a valid verification always has its record
    return record.ownerId;
  }
  // @ts-expect-error a refused verification may have no record
  const record: KeyRecord = v.record;
  void record;
  const code: "VALID" | "MALFORMED" | "NOT_FOUND" | "REVOKED" | "DISABLED" | "EXPIRED" | "INSUFFICIENT_SCOPE" | "RATE_LIMITED" | "USAGE_EXCEEDED" = v.code;
  return code;
}

export function configuration(): void {
  createApiKeyManager({
    template: "kota_{tier}_{id:12:base32}_{secret:36:hex}",
    tiers: { free: { rateLimit: "100/hour" }, team: { segment: "team", rateLimit: "10000/hour" } },
    defaultTier: "free",
    hash: { algorithm: "bcrypt", bcryptCost: 10 },
    policy: { maxActiveKeysPerOwner: 10, expiry: { max: "365d" }, name: { required: true } },
    cache: { mode: "auto", ttl: "10s" },
    legacyTemplates: ["sk_old_{secret:24:base62}"],
    storage: new SqliteStore("keys.db", { busyTimeout: 5 }),
  });
  // @ts-expect-error an unknown setting
  createApiKeyManager({ prefx: "sk_live" });
  // @ts-expect-error storage is a store object
  createApiKeyManager({ storage: "keys.db" });
  // @ts-expect-error an unknown algorithm
  createApiKeyManager({ hash: { algorithm: "md5" } });
}

export async function lifecycle(): Promise<void> {
  const keys = createApiKeyManager();
  const { record } = await keys.create({ ownerId: "u", remaining: 10, rateLimit: "10/minute", metadata: { plan: "pro" } });
  await keys.update(record.id, { name: null, expiresAt: null, scopes: ["read"] });
  const page = await keys.list({ ownerId: "u", limit: 10 });
  await keys.list({ cursor: page.nextCursor });
  const rotated = await keys.rotate(record.id, { graceSeconds: 60 });
  const previous: KeyRecord = rotated.previous;
  void previous;
  await keys.import({ hash: { algorithm: "sha256", value: "ab".repeat(32) }, ownerId: "u" });
  await keys.import({ key: keys.generateKey() });
  // @ts-expect-error an import needs the key or its hash
  await keys.import({ ownerId: "u" });
  const events = await keys.audit({ action: "revoked", since: new Date(0) });
  const at: Date = events.items[0].at;
  void at;
  // @ts-expect-error scopes are strings
  await keys.verify("k", { scopes: [1] });
  try {
    await keys.get("id");
  } catch (error) {
    if (error instanceof KeypalConfigError) error.problems.map((p) => p.path);
    else if (error instanceof KeypalError) void error.code;
  }
}

export async function onTheRequestPath(request: Request): Promise<Response> {
  const keys = createApiKeyManager();
  const result = await keys.authenticate(request, { scopes: ["read"] });
  if (result instanceof Response) return result;
  return Response.json({ owner: result.record.ownerId });
}

export const middleware = requireApiKey(createApiKeyManager(), { scopes: ["read"] });
