"use strict";
// keypal/express: an Express middleware that verifies the request's API key
// (`Authorization: Bearer <key>` or `x-api-key`) and puts the verification on
// `req.apiKey`; refusals are answered as ApiKeyManager.authenticate answers them.

const { KeypalError } = require("./index.cjs");
const { keyOf, refusal, rateLimitHeaders } = require("./http.cjs");

function send(res, answer) {
  res.status(answer.status).set(answer.headers).json({ error: { code: answer.code, message: answer.message } });
}

/**
 * The middleware: `app.use(requireApiKey(apiKeys, { scopes: ["read"] }))`. A valid key
 * goes on (`req.apiKey` is the verification, with the RateLimit headers set); any other
 * request is answered 401, 403, 429 or 503.
 */
function requireApiKey(apiKeys, options = {}) {
  if (!apiKeys || typeof apiKeys.verify !== "function") {
    throw new KeypalError("INVALID_INPUT", "requireApiKey: expected a manager made by createApiKeyManager");
  }
  const { scopes = [], cost, realm } = options;
  return function keypalApiKey(req, res, next) {
    const key = keyOf({ get: (name) => req.get(name) ?? null });
    if (key === null) {
      send(res, refusal(null, { realm }));
      return;
    }
    apiKeys.verify(key, { scopes, cost }).then(
      (verification) => {
        if (verification.valid) {
          res.set(rateLimitHeaders(verification));
          req.apiKey = verification;
          next();
        } else {
          send(res, refusal(verification, { realm, scopes }));
        }
      },
      (error) => {
        if (error instanceof KeypalError && error.code === "INVALID_INPUT") next(error);
        else send(res, refusal(undefined));
      },
    );
  };
}

module.exports = { requireApiKey, default: requireApiKey };
