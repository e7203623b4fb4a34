// The ES module entry of keypal: the same objects as the CommonJS one (index.cjs).
import keypal from "./index.cjs";

export const {
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
} = keypal;
export default keypal;
