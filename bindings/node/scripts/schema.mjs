// Writes config.schema.json, the JSON Schema of createApiKeyManager's configuration,
// from the native module (the Rust Config's schema in camelCase).
import { createRequire } from "node:module";
import { writeFileSync } from "node:fs";

const require = createRequire(import.meta.url);
const native = require("../native.cjs");
const url = new URL("../config.schema.json", import.meta.url);
writeFileSync(url, JSON.stringify(JSON.parse(native.configSchema()), null, 2) + "\n");
