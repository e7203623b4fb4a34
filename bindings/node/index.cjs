"use strict";
// keypal for JavaScript: the TypeScript-first API over the Rust core (native.cjs loads the
// Node-API module). This file only converts arguments and results; every rule — formats,
// hashing, verification, policies, stores — is the Rust one.

const native = require("./native.cjs");

const MARK = "\u0001keypal:";
const CODES = native.verificationCodes();
/** The codes by their index in the numbers of verifications answered on the calling thread. */
const CODE_LIST = native.codeList();

/** An error of keypal, with a stable machine-readable `code`. */
class KeypalError extends Error {
  constructor(code, message, details) {
    super(message);
    this.name = "KeypalError";
    this.code = code;
    if (details) {
      for (const name of ["field", "limit", "existing"]) {
        if (details[name] !== undefined) this[name] = details[name];
      }
    }
  }
}

/** A configuration with problems: `problems` lists every one, each with its path. */
class KeypalConfigError extends KeypalError {
  constructor(problems) {
    const lines = problems.map((p) => `  - ${p.path || "(configuration)"}: ${p.message}`);
    super("CONFIG_INVALID", `the keypal configuration has ${problems.length} problem(s):\n${lines.join("\n")}`);
    this.name = "KeypalConfigError";
    this.problems = problems;
  }
}

/** The error a native call threw, as a KeypalError when it is one of keypal's. */
function fromNative(error) {
  if (error instanceof KeypalError) return error;
  const message = error && typeof error.message === "string" ? error.message : "";
  if (message.startsWith(MARK)) {
    let body;
    try {
      body = JSON.parse(message.slice(MARK.length));
    } catch {
      return new KeypalError("INTERNAL_ERROR", "keypal's native module answered in a form it should not");
    }
    if (Array.isArray(body.problems) && body.problems.length > 0) {
      return new KeypalConfigError(body.problems.map((p) => ({ path: p.path, message: p.message })));
    }
    return new KeypalError(body.code, body.message, body);
  }
  // Node-API's own argument checks (a number where a string is expected, ...).
  if (error && (error.code === "InvalidArg" || error.code === "StringExpected" || error.code === "NumberExpected" ||
      error.code === "ObjectExpected" || error.code === "ArrayExpected" || error.code === "BooleanExpected")) {
    return new KeypalError("INVALID_INPUT", message);
  }
  return error;
}

function rethrow(error) {
  throw fromNative(error);
}

/** A native result (a value, or a promise when the work had to wait for I/O) as a promise. */
function settle(result) {
  return result instanceof Promise ? result.then(undefined, rethrow) : Promise.resolve(result);
}

function call(operation) {
  try {
    return settle(operation());
  } catch (error) {
    return Promise.reject(fromNative(error));
  }
}

function invalid(field, message) {
  return new KeypalError("INVALID_INPUT", `${field}: ${message}`, { field });
}

function requireString(field, value) {
  if (typeof value !== "string") throw invalid(field, "expected a string");
  return value;
}

function optionalObject(field, value) {
  if (value === undefined || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) throw invalid(field, "expected an object");
  return value;
}

/** JSON for the native side: Dates as ISO strings (an invalid Date is refused), undefined dropped. */
function json(field, value) {
  try {
    return JSON.stringify(value, function (name, converted) {
      const original = this[name];
      if (original instanceof Date && Number.isNaN(original.getTime())) {
        throw invalid(name || field, "an invalid Date");
      }
      return converted;
    });
  } catch (error) {
    if (error instanceof KeypalError) throw error;
    throw invalid(field, error.message);
  }
}

const kNative = Symbol("keypal.native");
const kManager = Symbol("keypal.manager");

/** Keys in process memory: for tests, examples and processes that may lose their keys on restart. */
class MemoryStore {
  constructor() {
    this[kNative] = new native.NativeMemoryStore();
  }

  [kManager](config) {
    return native.NativeManager.withMemory(config, this[kNative]);
  }
}

function sqlOptions(options) {
  return options === undefined ? undefined : json("options", optionalObject("options", options));
}

class SqlStoreBase {
  #native;

  constructor(url, options) {
    this.#native = new native.NativeSqlStore(url, sqlOptions(options));
  }

  /** Opens the database now (and applies keypal's migrations); otherwise the first use does. */
  connect() {
    return call(() => this.#native.connect());
  }

  /** Closes the connections. */
  close() {
    return call(() => this.#native.close());
  }

  [kManager](config) {
    return native.NativeManager.withSql(config, this.#native);
  }
}

/** An SQLite database: a file (created if missing) or `":memory:"`. */
class SqliteStore extends SqlStoreBase {
  constructor(path = ":memory:", options) {
    requireString("path", path);
    let url;
    if (path === ":memory:") url = "sqlite::memory:";
    else if (path.startsWith("sqlite:")) url = path;
    else url = `sqlite://${path}`;
    super(url, options);
  }
}

/** A PostgreSQL database, by URL (`postgres://user:password@host:5432/db`). */
class PostgresStore extends SqlStoreBase {
  constructor(url, options) {
    requireString("url", url);
    if (!/^postgres(ql)?:/i.test(url)) {
      throw new KeypalError("DATABASE_URL_UNSUPPORTED", "a PostgresStore takes a postgres:// or postgresql:// URL");
    }
    super(url, options);
  }
}

/** A Redis server, by URL (`redis://host:6379/0`); every key is kept under `prefix` (default `keypal:`). */
class RedisStore {
  #native;

  constructor(url, options) {
    requireString("url", url);
    const { prefix } = optionalObject("options", options);
    if (prefix !== undefined) requireString("prefix", prefix);
    this.#native = new native.NativeRedisStore(url, prefix);
  }

  /** Connects now; otherwise the first use does. */
  connect() {
    return call(() => this.#native.connect());
  }

  [kManager](config) {
    return native.NativeManager.withRedis(config, this.#native);
  }
}

function isStore(value) {
  return value instanceof MemoryStore || value instanceof SqlStoreBase || value instanceof RedisStore;
}

const { keyOf, refusal, responseOf, rateLimitHeaders } = require("./http.cjs");

function verifyOptions(options) {
  const { scopes, cost } = optionalObject("options", options);
  if (scopes !== undefined && (!Array.isArray(scopes) || !scopes.every((s) => typeof s === "string"))) {
    throw invalid("scopes", "expected an array of strings");
  }
  if (cost !== undefined && (typeof cost !== "number" || !Number.isInteger(cost) || cost < 0)) {
    throw invalid("cost", "a whole number, zero or more");
  }
  return { scopes, cost };
}

/** Freezes a value and everything in it (the record of a verification is shared). */
function deepFreeze(value) {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

/** A verification whose record is frozen, as every verification's is. */
function frozenRecord(verification) {
  deepFreeze(verification.record);
  return verification;
}

/** The key manager: configured once, then used for every key. Made by `createApiKeyManager`. */
class ApiKeyManager {
  #native;
  #storage;
  /**
   * The record of each state the native manager numbered (its slot): a verification of a
   * key whose state was seen before comes back as one number and gets this (frozen) object.
   */
  #records = [];

  constructor(nativeManager, storage) {
    this.#native = nativeManager;
    this.#storage = storage;
  }

  /** The store this manager keeps its keys in. */
  get storage() {
    return this.#storage;
  }

  /** A new random key in the configured format (nothing is stored). */
  generateKey() {
    try {
      return this.#native.generateKey();
    } catch (error) {
      throw fromNative(error);
    }
  }

  /** The self-describing stored hash of a key under the configured algorithm. */
  hashKey(key) {
    return this.#native.hashKey(requireString("key", key));
  }

  /** Whether `key` matches the stored `hash` (any supported algorithm), in constant time. */
  validateKey(key, hash) {
    if (typeof key !== "string" || typeof hash !== "string") return false;
    return this.#native.validateKey(key, hash);
  }

  /** Whether `key` is well formed under an accepted format (checksum included); reads no store. */
  accepts(key) {
    return typeof key === "string" && this.#native.accepts(key);
  }

  /**
   * Verifies a presented key: `{ valid, code, record, rateLimit, remaining }`. Rejections are
   * codes, not errors; the promise rejects only when the store fails.
   */
  verify(key, options) {
    try {
      if (typeof key !== "string") throw invalid("key", "expected a string");
      let answer;
      if (options === undefined) {
        answer = this.#native.verify(key);
      } else {
        const { scopes, cost } = verifyOptions(options);
        answer = this.#native.verify(key, scopes, cost);
      }
      if (typeof answer === "number") return Promise.resolve(this.#decode(answer));
      if (answer instanceof Promise) return answer.then(frozenRecord, rethrow);
      if (typeof answer.n === "number") {
        if (answer.record !== undefined) {
          // A record state new to this side: keep it under its slot.
          if (answer.n & 16) this.#records = [];
          this.#records[((answer.n >>> 5) & 0xfffff) - 1] = deepFreeze(answer.record);
        }
        const verification = this.#decode(answer.n);
        if (answer.rateLimit !== undefined) verification.rateLimit = answer.rateLimit;
        return Promise.resolve(verification);
      }
      return Promise.resolve(frozenRecord(answer));
    } catch (error) {
      return Promise.reject(fromNative(error));
    }
  }

  /** A verification from its number (see `encode` in src/manager.rs). */
  #decode(n) {
    const index = n & 15;
    const slot = (n >>> 5) & 0xfffff;
    const credits = Math.floor(n / 33554432);
    return {
      valid: index === 0,
      code: CODE_LIST[index],
      record: slot === 0 ? null : this.#records[slot - 1],
      rateLimit: null,
      remaining: credits === 0 ? null : credits - 1,
    };
  }

  /** Creates a key: `{ key, record }` (the plaintext key is shown this once). */
  create(request) {
    return call(() => this.#native.create(json("request", optionalObject("request", request))));
  }

  /** Stores a key generated elsewhere (by `generateKey`, or another system) with its details. */
  store(key, details) {
    return call(() => this.#native.store(requireString("key", key), json("details", optionalObject("details", details))));
  }

  /** Imports a key issued elsewhere: its plaintext (`key`) or a `hash` of it. */
  import(request) {
    return call(() => this.#native.import(json("request", optionalObject("request", request))));
  }

  /** A key's record. */
  get(id) {
    return call(() => this.#native.get(requireString("id", id)));
  }

  /** A page of records, newest first: `{ items, nextCursor }`. */
  list(query) {
    return call(() => this.#native.list(json("query", optionalObject("query", query))));
  }

  /** How many keys match the query. */
  count(query) {
    return call(() => this.#native.count(json("query", optionalObject("query", query))));
  }

  /** Changes some fields (absent: unchanged; `null`: cleared). */
  update(id, patch) {
    return call(() => this.#native.update(requireString("id", id), json("patch", optionalObject("patch", patch))));
  }

  enable(id) {
    return call(() => this.#native.enable(requireString("id", id)));
  }

  disable(id) {
    return call(() => this.#native.disable(requireString("id", id)));
  }

  revoke(id) {
    return call(() => this.#native.revoke(requireString("id", id)));
  }

  /** Revokes every key of an owner; resolves with the revoked records. */
  revokeAll(ownerId) {
    return call(() => this.#native.revokeAll(requireString("ownerId", ownerId)));
  }

  /** Replaces a key: `{ key, record, previous }`; the old key keeps working for `graceSeconds`. */
  rotate(id, options) {
    return call(() => {
      const { graceSeconds } = optionalObject("options", options);
      if (graceSeconds !== undefined && (typeof graceSeconds !== "number" || !(graceSeconds >= 0))) {
        throw invalid("graceSeconds", "a number of seconds, zero or more");
      }
      return this.#native.rotate(requireString("id", id), graceSeconds);
    });
  }

  delete(id) {
    return call(() => this.#native.delete(requireString("id", id)));
  }

  /** The audit log, newest first: `{ items, nextCursor }`. */
  audit(query) {
    return call(() => this.#native.audit(json("query", optionalObject("query", query))));
  }

  /** Writes the pending `lastUsedAt` times now (call it before the process exits). */
  flushLastUsed() {
    return call(() => this.#native.flushLastUsed());
  }

  /**
   * Authenticates a Fetch API `Request`: resolves with the verification when the key is
   * valid, otherwise with a ready `Response` (401, 403, 429 or 503, as the Rust middleware answers).
   */
  async authenticate(request, options) {
    const { scopes = [], cost, realm } = optionalObject("options", options);
    if (!request || !request.headers || typeof request.headers.get !== "function") {
      throw invalid("request", "expected a Fetch API Request");
    }
    const key = keyOf(request.headers);
    if (key === null) return responseOf(refusal(null, { realm }));
    let verification;
    try {
      verification = await this.verify(key, { scopes, cost });
    } catch (error) {
      if (error instanceof KeypalError && error.code === "INVALID_INPUT") throw error;
      return responseOf(refusal(undefined));
    }
    if (verification.valid) return verification;
    return responseOf(refusal(verification, { realm, scopes }));
  }
}

/**
 * Makes a key manager. The configuration is the Rust `Config` in camelCase (`prefix`,
 * `length`, `template`, `hash`, `tiers`, `defaultTier`, `policy`, `legacyTemplates`,
 * `cache`, ...) plus `storage`; every problem is reported at once in a `KeypalConfigError`.
 */
function createApiKeyManager(options = {}) {
  if (options === null || typeof options !== "object" || Array.isArray(options)) {
    throw new KeypalConfigError([{ path: "", message: "the configuration is an object" }]);
  }
  const { storage, ...config } = options;
  const problems = [];
  if (storage !== undefined && !isStore(storage)) {
    problems.push({
      path: "storage",
      message: "must be a MemoryStore, SqliteStore, PostgresStore or RedisStore",
    });
  }
  const store = storage !== undefined && isStore(storage) ? storage : new MemoryStore();
  let text;
  try {
    text = json("config", config);
  } catch (error) {
    throw new KeypalConfigError([...problems, { path: error.field ?? "", message: error.message }]);
  }
  let manager;
  try {
    manager = store[kManager](text);
  } catch (error) {
    const converted = fromNative(error);
    if (converted instanceof KeypalConfigError) throw new KeypalConfigError([...problems, ...converted.problems]);
    throw converted;
  }
  if (problems.length > 0) throw new KeypalConfigError(problems);
  return new ApiKeyManager(manager, store);
}

/** The JSON Schema of createApiKeyManager's configuration (also shipped as keypal/config.schema.json). */
function configSchema() {
  return JSON.parse(native.configSchema());
}

/** Every verification code, with its sentence for people. */
const VERIFICATION_CODES = Object.freeze({ ...CODES });

module.exports = {
  createApiKeyManager,
  ApiKeyManager,
  MemoryStore,
  SqliteStore,
  PostgresStore,
  RedisStore,
  KeypalError,
  KeypalConfigError,
  configSchema,
  rateLimitHeaders,
  VERIFICATION_CODES,
};
