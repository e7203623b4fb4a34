// @ts-check
// Packaging: `npm pack` makes a tarball that installs into an empty project, where the
// contract program runs as an ES module and through require(), and keypal/express and the
// JSON Schema resolve. (Run after `npm run build`, which puts the native module in place.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const packageDir = fileURLToPath(new URL("..", import.meta.url));
const npm = process.platform === "win32" ? "npm.cmd" : "npm";

const checks = `
if (typeof key !== "string" || !isValid) throw new Error("generate, hash, validate");
if (result.code !== "VALID" || result.record.ownerId !== "user_123") throw new Error("verify: " + result.code);
const revoked = (await apiKeys.verify(issued)).code;
if (revoked !== "REVOKED") throw new Error("revoke: " + revoked);
console.log("contract ok", typeof hash, [SqliteStore, PostgresStore, RedisStore].length);
`;

test("npm pack's tarball installs into an empty project where the contract runs as ESM and CommonJS", (t) => {
  const work = mkdtempSync(join(tmpdir(), "keypal-node-pack-"));
  t.after(() => rmSync(work, { recursive: true, force: true }));
  const packed = execFileSync(npm, ["pack", "--pack-destination", work, "--json"], { cwd: packageDir, encoding: "utf8" });
  const [{ filename }] = JSON.parse(packed);
  assert.equal(filename, "keypal-0.1.0.tgz");

  const project = join(work, "project");
  mkdirSync(project);
  writeFileSync(join(project, "package.json"), JSON.stringify({ name: "empty-project", version: "1.0.0", private: true }));
  copyFileSync(join(work, filename), join(project, filename));
  execFileSync(npm, ["install", `./${filename}`, "--offline", "--no-audit", "--no-fund"], { cwd: project, encoding: "utf8" });

  // The README's program, exactly, then the checks.
  const readme = readFileSync(join(packageDir, "README.md"), "utf8");
  const program = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.ok(program && program.includes('from "keypal"'), "the README opens with the contract program");
  writeFileSync(join(project, "contract.mjs"), program + checks);
  assert.match(execFileSync(process.execPath, ["contract.mjs"], { cwd: project, encoding: "utf8" }), /contract ok string 3/);

  const cjs = program
    .replace(/^import \{([^}]*)\} from "keypal";/m, 'const {$1} = require("keypal");\n(async () => {')
    .concat(checks, "})().catch((error) => { console.error(error); process.exit(1); });\n");
  writeFileSync(join(project, "contract.cjs"), cjs);
  assert.match(execFileSync(process.execPath, ["contract.cjs"], { cwd: project, encoding: "utf8" }), /contract ok string 3/);

  writeFileSync(
    join(project, "more.mjs"),
    `import { requireApiKey } from "keypal/express";
import { createRequire } from "node:module";
const schema = createRequire(import.meta.url)("keypal/config.schema.json");
console.log(typeof requireApiKey, "defaultTier" in schema.properties);
`,
  );
  assert.equal(execFileSync(process.execPath, ["more.mjs"], { cwd: project, encoding: "utf8" }).trim(), "function true");
});
