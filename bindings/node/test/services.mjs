// Private PostgreSQL and Redis servers for the tests, started as the Rust tests start
// theirs (crates/keypal-testing): `initdb` + `postgres` in a temporary folder (as the
// `postgres` user when the tests run as root), `redis-server` without persistence, each
// on a free port of 127.0.0.1, stopped when the test file ends. KEYPAL_TEST_POSTGRES_URL
// and KEYPAL_TEST_REDIS_URL point the tests at servers of your own instead.
//
// A service that cannot be had skips its tests, except under CI=true, where it fails them.
// @ts-check

import { spawn, spawnSync } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

const PATIENCE_MS = 60_000;

export class Unavailable extends Error {}

/** @typedef {{ url: string, stop(): void }} Server */

/**
 * The server, or: a skip (`t.skip`) outside CI, a failure under CI=true.
 * @param {{ skip(message?: string): void }} t
 * @param {() => Promise<Server>} start
 * @returns {Promise<Server | null>}
 */
export async function need(t, start) {
  try {
    return await start();
  } catch (error) {
    if (error instanceof Unavailable && process.env.CI !== "true") {
      t.skip(error.message);
      return null;
    }
    throw error;
  }
}

/** @returns {Promise<number>} */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = /** @type {import("node:net").AddressInfo} */ (server.address());
      server.close(() => resolve(port));
    });
  });
}

/** @param {number} ms */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** @param {string} name */
function onPath(name) {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return dir;
  }
  return null;
}

function postgresBin() {
  const both = (/** @type {string} */ dir) => existsSync(join(dir, "initdb")) && existsSync(join(dir, "postgres"));
  if (process.env.KEYPAL_TEST_POSTGRES_BIN) return process.env.KEYPAL_TEST_POSTGRES_BIN;
  const onPathDir = onPath("initdb");
  if (onPathDir && both(onPathDir)) return onPathDir;
  const root = "/usr/lib/postgresql";
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => /^\d+$/.test(v) && both(join(root, v, "bin")))
        .sort((a, b) => Number(a) - Number(b))
    : [];
  if (versions.length === 0) {
    throw new Unavailable(
      "PostgreSQL is not available for the tests: no initdb and postgres on PATH nor in /usr/lib/postgresql/<version>/bin " +
        "(install the Debian package postgresql, or set KEYPAL_TEST_POSTGRES_URL)",
    );
  }
  return join(root, versions[versions.length - 1], "bin");
}

/** initdb refuses root: as root, run the server as the `postgres` user. */
function postgresUser() {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return {};
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .map((l) => l.split(":"))
    .find((fields) => fields[0] === "postgres");
  if (!line) throw new Unavailable("the tests run as root, which initdb refuses, and there is no `postgres` user");
  return { uid: Number(line[2]), gid: Number(line[3]) };
}

/** @type {Server[]} */
const servers = [];

process.on("exit", () => {
  for (const server of servers) server.stop();
});

/** A private PostgreSQL server: `{ url, stop() }` (stopped at exit anyway). @returns {Promise<Server>} */
export async function postgres() {
  if (process.env.KEYPAL_TEST_POSTGRES_URL) return { url: process.env.KEYPAL_TEST_POSTGRES_URL, stop() {} };
  const bin = postgresBin();
  const user = postgresUser();
  const dir = mkdtempSync(join(tmpdir(), "keypal-node-postgres-"));
  if (user.uid !== undefined) chownSync(dir, user.uid, user.gid);
  const data = join(dir, "data");
  const initdb = spawnSync(
    join(bin, "initdb"),
    ["-D", data, "--username=postgres", "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"],
    { cwd: dir, ...user, encoding: "utf8" },
  );
  if (initdb.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`initdb failed: ${initdb.stderr || initdb.error}`);
  }
  const port = await freePort();
  const child = spawn(
    join(bin, "postgres"),
    ["-D", data, "-p", String(port), "-k", dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
    { cwd: dir, ...user, stdio: ["ignore", "ignore", "pipe"] },
  );
  let log = "";
  child.stderr.on("data", (chunk) => (log += chunk));
  const server = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    stop() {
      if (child.exitCode === null) child.kill("SIGINT");
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    },
  };
  servers.push(server);
  child.unref();
  for (const stream of [child.stdout, child.stderr]) /** @type {any} */ (stream)?.unref?.();
  const deadline = Date.now() + PATIENCE_MS;
  // The server says it accepts connections on the last line of postmaster.pid.
  const pidFile = join(data, "postmaster.pid");
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`postgres exited: ${log}`);
    if (existsSync(pidFile) && readFileSync(pidFile, "utf8").includes("ready")) return server;
    await sleep(50);
  }
  throw new Error(`postgres was not ready after ${PATIENCE_MS / 1000} s: ${log}`);
}

/** @param {number} port @returns {Promise<boolean>} */
function answersPing(port) {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.on("error", () => resolve(false));
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (data) => {
      resolve(data.toString().startsWith("+PONG"));
      socket.destroy();
    });
  });
}

/** A private Redis server: `{ url, stop() }` (stopped at exit anyway). @returns {Promise<Server>} */
export async function redis() {
  if (process.env.KEYPAL_TEST_REDIS_URL) return { url: process.env.KEYPAL_TEST_REDIS_URL, stop() {} };
  const dir = onPath("redis-server");
  if (!dir) {
    throw new Unavailable(
      "Redis is not available for the tests: no redis-server on PATH (install the Debian package redis-server, or set KEYPAL_TEST_REDIS_URL)",
    );
  }
  const port = await freePort();
  const workdir = mkdtempSync(join(tmpdir(), "keypal-node-redis-"));
  const child = spawn(
    join(dir, "redis-server"),
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let log = "";
  child.stdout.on("data", (chunk) => (log += chunk));
  child.stderr.on("data", (chunk) => (log += chunk));
  const server = {
    url: `redis://127.0.0.1:${port}/0`,
    stop() {
      if (child.exitCode === null) child.kill("SIGTERM");
      rmSync(workdir, { recursive: true, force: true, maxRetries: 3 });
    },
  };
  servers.push(server);
  child.unref();
  for (const stream of [child.stdout, child.stderr]) /** @type {any} */ (stream)?.unref?.();
  const deadline = Date.now() + PATIENCE_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`redis-server exited: ${log}`);
    if (await answersPing(port)) return server;
    await sleep(50);
  }
  throw new Error(`redis-server was not ready after ${PATIENCE_MS / 1000} s: ${log}`);
}
