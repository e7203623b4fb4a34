//! The server the HTTP fuzz targets send requests to: one per process, on a runtime of
//! its own, renewed now and then so the in-memory database (keys created and deleted,
//! audit events) stays small however long the fuzzer runs.

use std::cell::RefCell;

use crate::invariants::Fixture;

/// Iterations between two new servers.
const RENEW_EVERY: u32 = 20_000;

struct Current {
    runtime: tokio::runtime::Runtime,
    fixture: Option<Fixture>,
    iterations: u32,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Runs `check` on the current server, starting one first when needed.
pub fn with_fixture(check: impl AsyncFnOnce(&Fixture)) {
    CURRENT.with_borrow_mut(|current| {
        let current = current.get_or_insert_with(|| Current {
            runtime: tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime"),
            fixture: None,
            iterations: 0,
        });
        if current.iterations.is_multiple_of(RENEW_EVERY) {
            let old = current.fixture.take();
            current.runtime.block_on(async move { drop(old) });
            current.fixture = Some(current.runtime.block_on(Fixture::new()));
        }
        current.iterations = current.iterations.wrapping_add(1);
        let fixture = current.fixture.as_ref().expect("a fixture");
        current.runtime.block_on(check(fixture));
    });
}
