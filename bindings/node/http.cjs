"use strict";
// The HTTP side of keypal, shared by ApiKeyManager.authenticate (Fetch API) and
// keypal/express: where a request carries its key, and how a refusal is answered — the
// statuses and headers of the Rust middleware (keypal-axum).

const native = require("./native.cjs");

const CODES = native.verificationCodes();

const MISSING_KEY = "MISSING_KEY";
const VERIFICATION_UNAVAILABLE = "VERIFICATION_UNAVAILABLE";

/** The key a request carries: `Authorization: Bearer <key>` (scheme in any case), else `x-api-key`. */
function keyOf(headers) {
  const authorization = headers.get("authorization");
  if (authorization) {
    const space = authorization.indexOf(" ");
    if (space > 0 && authorization.slice(0, space).toLowerCase() === "bearer") {
      const token = authorization.slice(space + 1).trim();
      if (token) return token;
    }
  }
  const header = headers.get("x-api-key");
  if (header && header.trim()) return header.trim();
  return null;
}

function quoted(text) {
  let out = "";
  for (const c of String(text)) {
    if (c === '"' || c === "\\") out += `\\${c}`;
    else if (c >= " " && c <= "~") out += c;
  }
  return out;
}

function untilSeconds(at) {
  return Math.max(0, Math.ceil((at.getTime() - Date.now()) / 1000));
}

/**
 * The refusal of a request, as the Rust middleware (keypal-axum) answers it: status,
 * stable code, message and headers.
 */
function refusal(verification, { realm = "api", scopes = [] } = {}) {
  const headers = {};
  let status;
  let code;
  let message;
  if (verification === null) {
    status = 401;
    code = MISSING_KEY;
    message = "an API key is required";
    headers["www-authenticate"] = `Bearer realm="${quoted(realm)}"`;
  } else if (verification === undefined) {
    status = 503;
    code = VERIFICATION_UNAVAILABLE;
    message = "the API key could not be verified now; try again";
    headers["retry-after"] = "1";
  } else {
    code = verification.code;
    message = CODES[code] ?? code;
    if (code === "INSUFFICIENT_SCOPE") {
      status = 403;
      let value = `Bearer realm="${quoted(realm)}", error="insufficient_scope"`;
      if (scopes.length > 0) value += `, scope="${scopes.map(quoted).join(" ")}"`;
      headers["www-authenticate"] = value;
    } else if (code === "RATE_LIMITED" || code === "USAGE_EXCEEDED") {
      status = 429;
    } else {
      status = 401;
      headers["www-authenticate"] = `Bearer realm="${quoted(realm)}", error="invalid_token"`;
    }
    Object.assign(headers, rateLimitHeaders(verification));
    if (code === "RATE_LIMITED") {
      const limit = verification.rateLimit;
      const wait = limit ? (limit.retryAfter ?? (limit.resetAt.getTime() - Date.now()) / 1000) : 1;
      headers["retry-after"] = String(Math.max(1, Math.ceil(wait)));
    }
  }
  return { status, code, message, headers };
}

/**
 * The IETF `RateLimit-Policy` and `RateLimit` headers of a verification (none when the
 * key has no rate limit): `"default";q=<limit>;w=<period in seconds>` and `"default";r=<remaining>;t=<seconds>`.
 */
function rateLimitHeaders(verification) {
  const limit = verification && verification.rateLimit;
  if (!limit) return {};
  return {
    "ratelimit-policy": limit.window == null ? `"default";q=${limit.limit}` : `"default";q=${limit.limit};w=${limit.window}`,
    ratelimit: `"default";r=${limit.remaining};t=${untilSeconds(limit.resetAt)}`,
  };
}

/** A refusal as a Fetch API `Response` with the JSON body `{"error": {"code", "message"}}`. */
function responseOf(answer) {
  const body = JSON.stringify({ error: { code: answer.code, message: answer.message } });
  return new Response(body, {
    status: answer.status,
    headers: { "content-type": "application/json", ...answer.headers },
  });
}

module.exports = { MISSING_KEY, VERIFICATION_UNAVAILABLE, keyOf, refusal, rateLimitHeaders, responseOf };
