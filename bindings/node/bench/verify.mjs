// @ts-check
// The benchmark of docs/PERFORMANCE.md ("keypal for Node.js"): one run, in one process.
//
//   npm run build && node bench/verify.mjs [keys]
//
// - verify: 100 000 valid SHA-256 keys in a MemoryStore, each verified in turn, against the
//   JavaScript floor measured here too: node:crypto's SHA-256 of the key plus a Map lookup,
//   the least any pure-JavaScript key library must do per verification;
// - create, on a MemoryStore and an SQLite file;
// - verify on an SQLite file: the first verification of each key (a store read, on the
//   module's threads) and the next one (the verified-result cache, on the calling thread).
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApiKeyManager, MemoryStore, SqliteStore } from "keypal";

const KEYS = Number(process.argv[2] ?? 100_000);
const SQLITE_KEYS = Math.min(KEYS, 20_000);
const ROUNDS = 7;

/** Operations per second of `count` operations taking `ms` milliseconds. */
const rate = (/** @type {number} */ count, /** @type {number} */ ms) => Math.round((count * 1000) / ms);
const fmt = (/** @type {number} */ n) => n.toLocaleString("en-US");

/** @param {string} name @param {number} count @param {number} ms */
function report(name, count, ms) {
  const perSecond = rate(count, ms);
  console.log(`${name.padEnd(58)} ${fmt(perSecond).padStart(12)} /s ${((ms * 1e6) / count / 1000).toFixed(2).padStart(8)} µs`);
  return perSecond;
}

/**
 * The best of ROUNDS runs of `run` (each doing `count` operations).
 * @param {string} name @param {number} count @param {() => unknown} run
 */
async function best(name, count, run) {
  let fastest = Infinity;
  for (let round = 0; round < ROUNDS; round += 1) {
    const start = performance.now();
    await run();
    fastest = Math.min(fastest, performance.now() - start);
  }
  return report(name, count, fastest);
}

/**
 * `base` and `run` measured in alternation, ROUNDS times each (the machine's load shifts
 * both alike): the best rate of each, and the median of the rounds' ratios run / base.
 * @param {[string, () => unknown]} base @param {[string, () => unknown]} run @param {number} count
 */
async function paired(base, run, count) {
  let fastestBase = Infinity;
  let fastestRun = Infinity;
  const ratios = [];
  for (let round = 0; round < ROUNDS; round += 1) {
    let start = performance.now();
    await base[1]();
    const baseMs = performance.now() - start;
    start = performance.now();
    await run[1]();
    const runMs = performance.now() - start;
    fastestBase = Math.min(fastestBase, baseMs);
    fastestRun = Math.min(fastestRun, runMs);
    ratios.push(baseMs / runMs);
  }
  report(base[0], count, fastestBase);
  report(run[0], count, fastestRun);
  ratios.sort((a, b) => a - b);
  return { median: ratios[Math.floor(ratios.length / 2)], low: ratios[0], high: ratios[ratios.length - 1] };
}

console.log(`node ${process.version}, ${KEYS} keys (SQLite: ${SQLITE_KEYS}), best of ${ROUNDS} rounds\n`);

// --- create, MemoryStore ---
const memory = createApiKeyManager({ prefix: "sk_live", length: 32, storage: new MemoryStore() });
const keys = new Array(KEYS);
let start = performance.now();
for (let i = 0; i < KEYS; i += 1) {
  keys[i] = (await memory.create({ ownerId: `user_${i % 1000}` })).key;
}
report("create, MemoryStore (one at a time)", KEYS, performance.now() - start);

// --- the JavaScript floor: SHA-256 of the key + a Map lookup ---
const table = new Map();
for (let i = 0; i < KEYS; i += 1) {
  table.set(createHash("sha256").update(keys[i]).digest("hex"), { id: i, ownerId: `user_${i % 1000}` });
}
let found = 0;
let valid = 0;
// Every key verified once first, as in a service that has been running (a key's first
// verification notes its use and hands its record over to the JavaScript side once).
for (let i = 0; i < KEYS; i += 1) await memory.verify(keys[i]);
const cold = await paired(
  ["floor: node:crypto SHA-256 + Map.get", () => {
    for (let i = 0; i < KEYS; i += 1) {
      if (table.get(createHash("sha256").update(keys[i]).digest("hex")) !== undefined) found += 1;
    }
  }],
  ["verify, MemoryStore (await each)", async () => {
    for (let i = 0; i < KEYS; i += 1) {
      if ((await memory.verify(keys[i])).valid) valid += 1;
    }
  }],
  KEYS,
);
await best("verify, MemoryStore, reading record.ownerId", KEYS, async () => {
  for (let i = 0; i < KEYS; i += 1) {
    if ((await memory.verify(keys[i])).record?.ownerId) valid += 1;
  }
});
await best("verify with scopes and cost, MemoryStore", KEYS, async () => {
  for (let i = 0; i < KEYS; i += 1) {
    if ((await memory.verify(keys[i], { scopes: [], cost: 1 })).valid) valid += 1;
  }
});
if (valid !== 3 * ROUNDS * KEYS || found !== ROUNDS * KEYS) throw new Error("a key did not verify");

// The same, over a hot working set: the first 1 000 keys (of the 100 000 stored), 100
// times over, so lookups stay in the CPU caches (a few clients sending most requests).
const HOT = Math.min(1_000, KEYS);
const hot = await paired(
  [`floor, hot (${HOT} keys x 100)`, () => {
    for (let r = 0; r < 100; r += 1) {
      for (let i = 0; i < HOT; i += 1) {
        if (table.get(createHash("sha256").update(keys[i]).digest("hex")) === undefined) throw new Error("missing");
      }
    }
  }],
  [`verify, MemoryStore, hot (${HOT} keys x 100)`, async () => {
    for (let r = 0; r < 100; r += 1) {
      for (let i = 0; i < HOT; i += 1) {
        if (!(await memory.verify(keys[i])).valid) throw new Error("not valid");
      }
    }
  }],
  HOT * 100,
);
/** @param {{ median: number, low: number, high: number }} r */
const ratio = (r) => `${r.median.toFixed(2)}x (rounds ${r.low.toFixed(2)}-${r.high.toFixed(2)})`;
console.log(`\nverify throughput / floor's, median of ${ROUNDS} alternating rounds: all keys ${ratio(cold)}, hot ${ratio(hot)}\n`);

// --- a rate limit: every verification also reports the limit's state ---
const limited = createApiKeyManager({ prefix: "sk_live", length: 32, storage: new MemoryStore() });
/** @type {string[]} */
const limitedKeys = [];
for (let i = 0; i < HOT; i += 1) limitedKeys.push((await limited.create({ rateLimit: "1000000000/day" })).key);
for (const key of limitedKeys) await limited.verify(key);
await best(`verify with a rate limit, hot (${HOT} keys x 100)`, HOT * 100, async () => {
  for (let r = 0; r < 100; r += 1) {
    for (let i = 0; i < HOT; i += 1) {
      if (!(await limited.verify(limitedKeys[i])).rateLimit) throw new Error("no rate limit");
    }
  }
});
console.log();

// --- SQLite ---
const dir = mkdtempSync(join(tmpdir(), "keypal-bench-"));
try {
  const sqlite = createApiKeyManager({ prefix: "sk_live", length: 32, storage: new SqliteStore(join(dir, "keys.db")) });
  await sqlite.count();
  const sqliteKeys = new Array(SQLITE_KEYS);
  start = performance.now();
  for (let i = 0; i < SQLITE_KEYS; i += 1) {
    sqliteKeys[i] = (await sqlite.create({ ownerId: `user_${i % 1000}` })).key;
  }
  report("create, SQLite file (one at a time, each durable)", SQLITE_KEYS, performance.now() - start);

  start = performance.now();
  for (let i = 0; i < SQLITE_KEYS; i += 1) {
    if (!(await sqlite.verify(sqliteKeys[i])).valid) throw new Error("not valid");
  }
  report("verify, SQLite file, first time (store read)", SQLITE_KEYS, performance.now() - start);
  await best("verify, SQLite file, cached (calling thread)", SQLITE_KEYS, async () => {
    for (let i = 0; i < SQLITE_KEYS; i += 1) {
      if (!(await sqlite.verify(sqliteKeys[i])).valid) throw new Error("not valid");
    }
  });

  const fresh = createApiKeyManager({ prefix: "sk_live", length: 32, storage: new SqliteStore(join(dir, "keys.db")) });
  await fresh.count();
  const BATCH = 64;
  start = performance.now();
  for (let i = 0; i < SQLITE_KEYS; i += BATCH) {
    const batch = sqliteKeys.slice(i, i + BATCH).map((key) => fresh.verify(key));
    for (const v of await Promise.all(batch)) if (!v.valid) throw new Error("not valid");
  }
  report(`verify, SQLite file, first time, ${BATCH} at once`, SQLITE_KEYS, performance.now() - start);
  await fresh.flushLastUsed();
  await sqlite.flushLastUsed();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
