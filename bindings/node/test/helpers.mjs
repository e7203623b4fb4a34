// @ts-check
// What several test files share.

/**
 * Whether a promise is already settled: a settled one wins a race against a resolved
 * promise listed after it; a pending one loses.
 * @param {Promise<unknown>} promise
 */
export async function settledAlready(promise) {
  const pending = Symbol("pending");
  return (await Promise.race([promise, Promise.resolve(pending)])) !== pending;
}
