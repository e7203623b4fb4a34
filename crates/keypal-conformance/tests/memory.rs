//! The whole conformance suite against [`keypal::MemoryStore`].

mod memory {
    keypal_conformance::store_conformance!(async { keypal::MemoryStore::new() });
}
