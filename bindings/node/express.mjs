// keypal/express as an ES module (the same function as express.cjs).
import express from "./express.cjs";

export const { requireApiKey } = express;
export default requireApiKey;
