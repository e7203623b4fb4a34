// Types of keypal/express.
import type { ApiKeyManager, AuthenticateOptions, ValidVerification } from "./index.js";

/** The middleware's signature (Express's `RequestHandler`, without depending on its types). */
export type ApiKeyMiddleware = (req: any, res: any, next: (error?: unknown) => void) => void;

/**
 * Verifies the request's key (`Authorization: Bearer` or `x-api-key`): a valid key goes on
 * with the verification on `req.apiKey`; any other request is answered 401, 403, 429 or 503.
 */
export declare function requireApiKey(apiKeys: ApiKeyManager, options?: AuthenticateOptions): ApiKeyMiddleware;
export default requireApiKey;

declare global {
  namespace Express {
    interface Request {
      /** The verification of the request's API key (set by keypal/express). */
      apiKey?: ValidVerification;
    }
  }
}
