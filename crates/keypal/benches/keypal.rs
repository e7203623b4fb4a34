//! `cargo bench -p keypal`: generation, hashing per algorithm, and verification of
//! valid / malformed / not-found keys against a MemoryStore holding 100 000 keys,
//! next to the baseline "SHA-256 of the key + one hash-map lookup".

// Benchmark set-up: a failure to build the fixture aborts the run, which is what it should do.
#![allow(clippy::panic)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, LazyLock};

use divan::Bencher;
use keypal::hash::{Argon2Params, Argon2idHasher, BcryptHasher, HmacSha256Hasher, Sha256Hasher, Sha512Hasher, sha256};
use keypal::{Hasher, KeyManager, KeyRecord, MemoryStore, NewKey, PlainKey, RateLimit, Tier};

fn main() {
    divan::main();
}

/// Runs a future that never waits (every MemoryStore operation completes at once)
/// by polling it with a no-op waker: measures keypal, not an executor.
fn run<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

const KEYS: usize = 100_000;

struct Fixture {
    keys: KeyManager<MemoryStore>,
    plain: Vec<PlainKey>,
    /// The baseline: the same keys' records in a plain hash map keyed by SHA-256.
    map: HashMap<[u8; 32], Arc<KeyRecord>>,
    unknown: Vec<PlainKey>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let keys = KeyManager::builder()
        .prefix("sk_live")
        .length(32)
        .store(MemoryStore::new())
        .build()
        .unwrap_or_else(|e| panic!("bench manager: {e}"));
    let mut plain = Vec::with_capacity(KEYS);
    let mut map = HashMap::with_capacity(KEYS);
    pollster::block_on(async {
        for i in 0..KEYS {
            let created = keys
                .create(NewKey::new().owner_id(format!("owner_{}", i % 1000)))
                .await
                .unwrap_or_else(|e| panic!("create: {e}"));
            map.insert(sha256(created.key.expose().as_bytes()), Arc::new(created.record));
            plain.push(created.key);
        }
    });
    // Every key used once before measuring, as in a service that has been running:
    // a key's first use in a `last_used_at` interval also notes it (once per interval),
    // which the figures below are not about.
    for key in &plain {
        let verified = run(keys.verify(key.expose())).unwrap_or_else(|e| panic!("verify: {e}"));
        assert!(verified.is_valid());
    }
    let unknown = (0..1024).map(|_| keys.generate_key()).collect();
    Fixture { keys, plain, map, unknown }
});

/// Cycles through the first `working_set` keys, stepping by a prime so consecutive
/// lookups land far apart in the table: with 100 000 keys every lookup is a cache
/// miss (the worst case); with 1 000 the hot keys stay in the CPU caches, as with
/// real traffic where a few clients send most requests.
fn cycle<'a>(items: &'a [PlainKey], working_set: usize) -> impl FnMut() -> &'a str {
    let mut i = 0usize;
    let n = working_set.min(items.len());
    move || {
        i = (i + 7919) % n;
        items[i].expose()
    }
}

/// Presented keys: 1 000 of the stored keys (hot) or all 100 000 (cold).
const WORKING_SETS: [usize; 2] = [1_000, KEYS];

mod verify {
    use super::*;

    /// SHA-256 of the key + one hash-map lookup: the floor a verify is measured against.
    /// Each iteration handles a batch of keys, so the per-key figure is free of timer overhead.
    const BATCH: usize = 1_000;

    #[divan::bench(args = WORKING_SETS)]
    fn baseline_sha256_plus_map_lookup(bencher: Bencher, working_set: usize) {
        let f = &*FIXTURE;
        let mut next = cycle(&f.plain, working_set);
        bencher.counter(divan::counter::ItemsCount::new(BATCH)).bench_local(|| {
            for _ in 0..BATCH {
                let key = next();
                black_box(f.map.get(&sha256(key.as_bytes())).cloned());
            }
        });
    }

    #[divan::bench(args = WORKING_SETS)]
    fn valid_sha256(bencher: Bencher, working_set: usize) {
        let f = &*FIXTURE;
        let mut next = cycle(&f.plain, working_set);
        bencher.counter(divan::counter::ItemsCount::new(BATCH)).bench_local(|| {
            for _ in 0..BATCH {
                let v = run(f.keys.verify(next()));
                black_box(v.map(|v| v.is_valid()).unwrap_or(false));
            }
        });
    }

    #[divan::bench]
    fn malformed(bencher: Bencher) {
        let f = &*FIXTURE;
        bencher.bench_local(|| black_box(run(f.keys.verify(black_box("sk_live_tooShort")))).is_ok());
    }

    #[divan::bench]
    fn not_found(bencher: Bencher) {
        let f = &*FIXTURE;
        let mut next = cycle(&f.unknown, f.unknown.len());
        bencher.bench_local(|| black_box(run(f.keys.verify(next()))).is_ok());
    }
}

mod generate {
    use super::*;

    #[divan::bench]
    fn prd_sk_live_32(bencher: Bencher) {
        let f = &*FIXTURE;
        bencher.bench_local(|| black_box(f.keys.generate_key()));
    }

    #[divan::bench]
    fn kota_tier_id_secret(bencher: Bencher) {
        let keys = KeyManager::builder()
            .template("kota_{tier}_{id:12:base32}_{secret:36:hex}")
            .tier("free", Tier::new().rate_limit(RateLimit::per_hour(100)))
            .default_tier("free")
            .store(MemoryStore::new())
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        bencher.bench_local(|| black_box(keys.generate_key()));
    }
}

mod hash {
    use super::*;

    const KEY: &[u8] = b"sk_live_4fGh7Kq2Lm9Np3Rs5Tv8Wx1Yz6Ab0Cd";

    fn bench_hasher(bencher: Bencher, hasher: &dyn Hasher) {
        bencher.bench_local(|| black_box(hasher.hash(black_box(KEY))));
    }

    #[divan::bench]
    fn sha256(bencher: Bencher) {
        bench_hasher(bencher, &Sha256Hasher);
    }

    #[divan::bench]
    fn sha512(bencher: Bencher) {
        bench_hasher(bencher, &Sha512Hasher);
    }

    #[divan::bench]
    fn hmac_sha256(bencher: Bencher) {
        let hasher = HmacSha256Hasher::new([("k1".to_owned(), b"a-pepper-of-sixteen-bytes".to_vec())], "k1")
            .unwrap_or_else(|e| panic!("{e}"));
        bench_hasher(bencher, &hasher);
    }

    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn argon2id_owasp(bencher: Bencher) {
        let hasher = Argon2idHasher::new(Argon2Params::default()).unwrap_or_else(|e| panic!("{e}"));
        bench_hasher(bencher, &hasher);
    }

    #[divan::bench(sample_count = 10, sample_size = 1)]
    fn bcrypt_cost_10(bencher: Bencher) {
        let hasher = BcryptHasher::new(10).unwrap_or_else(|e| panic!("{e}"));
        bench_hasher(bencher, &hasher);
    }
}
