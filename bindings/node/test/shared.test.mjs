// @ts-check
// One database, two languages: keys a Node service creates verify in a Rust service on the
// same SQLite file (examples/rust_side.rs, the keypal and keypal-sql crates), and the other
// way round; a revocation made in Node is seen by Rust.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createApiKeyManager, SqliteStore } from "keypal";

const packageDir = fileURLToPath(new URL("..", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "keypal-node-shared-"));
const file = join(dir, "keys.db");
let rustSide = "";

before(() => {
  // Built by `cargo test` (which builds the examples); built here when it is not there yet.
  const targetDir = process.env.CARGO_TARGET_DIR ?? join(packageDir, "target");
  rustSide = join(targetDir, "debug", "examples", "rust_side");
  if (!existsSync(rustSide)) {
    execFileSync("cargo", ["build", "--example", "rust_side"], { cwd: packageDir, stdio: "inherit" });
  }
});
after(() => rmSync(dir, { recursive: true, force: true }));

/** @param {string[]} args */
function rust(...args) {
  return execFileSync(rustSide, args, { encoding: "utf8" }).trim();
}

test("keys created in Node verify in Rust on the same SQLite file, and the other way round", async () => {
  const store = new SqliteStore(file);
  const keys = createApiKeyManager({ prefix: "sk_shared", storage: store });
  const { key, record } = await keys.create({ ownerId: "node", scopes: ["read"] });
  await keys.flushLastUsed();

  assert.equal(rust("verify", `sqlite://${file}`, key), "VALID node");

  const fromRust = rust("create", `sqlite://${file}`);
  assert.match(fromRust, /^sk_shared_[0-9A-Za-z]{32}$/);
  const v = await keys.verify(fromRust, { scopes: ["read"] });
  assert.equal(v.code, "VALID");
  assert.equal(v.record?.ownerId, "rust");

  await keys.revoke(record.id);
  assert.equal(rust("verify", `sqlite://${file}`, key), "REVOKED node");
  assert.equal(rust("verify", `sqlite://${file}`, keys.generateKey()), "NOT_FOUND");
  await store.close();
});
