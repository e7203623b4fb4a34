//! The behavioural contract of keypal's cross-node invalidation buses (`RedisBus`,
//! `PgBus`): one set of tests and one set of benchmarks that every transport runs.
//!
//! A transport's test file implements [`BusUnderTest`] (how to make its buses on the
//! test server, and how to cut and refuse a subscriber's connections) and runs
//! [`bus_conformance!`](crate::bus_conformance). The test that needs stores,
//! [`a_key_revoked_on_a_is_refused_by_b_that_had_it_cached`], is called by hand with
//! the instances' stores and buses, since how a bus sits beside a store is the
//! transport's choice. The benchmarks are [`Propagation`] and
//! [`bus_benchmarks!`](crate::bus_benchmarks).

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use divan::Bencher;
use keypal::{Action, AuditContext, CacheMode, Code, Event, EventSink, Invalidation, KeyId, KeyManager, NewKey, Store};
use keypal_bus::{BusSink, BusSubscription};
use time::OffsetDateTime;
use tokio::runtime::Runtime;
use tokio::sync::{Mutex, mpsc};

/// How long a propagation may take before a test fails (the target is 100 ms).
pub const BOUND: Duration = Duration::from_secs(1);
/// Long enough that only an invalidation can explain a refusal.
const CACHE_TTL: Duration = Duration::from_secs(60);

/// One transport under test: how the suite makes its buses on the test server and
/// drives them. Implemented in the transport's test file, on a type of that file.
pub trait BusUnderTest: Send + Sync + Sized + 'static {
    /// The bus (`RedisBus`, `PgBus`).
    type Bus: Send + Sync + 'static;
    /// What publishing or subscribing fails with.
    type Error: fmt::Debug;
    /// A subscriber whose connections the test can cut and refuse.
    type Subscriber: FaultySubscriber<Self>;

    /// The bus's name, for the tests' output.
    const NAME: &'static str;

    /// A prefix (and so a channel) no other test uses.
    fn fresh_prefix() -> String;

    /// A bus on the test server announcing on the channel of `prefix`; panics, naming
    /// the server, when it does not answer.
    fn connect(&self, prefix: &str) -> impl Future<Output = Self::Bus> + Send;

    /// A subscriber on the channel of `prefix`, connecting as a user of its own.
    fn subscriber(&self, prefix: &str) -> impl Future<Output = Self::Subscriber> + Send;

    /// `bus`, checking its subscriptions after `every` of silence.
    fn ping_interval(bus: Self::Bus, every: Duration) -> Self::Bus;

    /// The bus's [`EventSink`].
    fn event_sink(bus: &Self::Bus) -> BusSink;

    /// Announces `message` now.
    fn publish(bus: &Self::Bus, message: &Invalidation) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Subscribes `handler` to the bus's channel.
    fn subscribe(
        bus: &Self::Bus,
        handler: impl Fn(Invalidation) + Send + Sync + 'static,
    ) -> impl Future<Output = Result<BusSubscription, Self::Error>> + Send;
}

/// A subscriber bus connecting as a user (role) of its own, so that cutting and
/// refusing its connections touches nothing else.
pub trait FaultySubscriber<T: BusUnderTest>: Send + Sync {
    /// The subscriber's bus.
    fn bus(&self) -> &T::Bus;

    /// Cuts the subscriber's listening connections; how many there were.
    fn cut(&self) -> impl Future<Output = u64> + Send;

    /// Makes the server refuse the subscriber's new connections.
    fn refuse(&self) -> impl Future<Output = ()> + Send;

    /// Lets the subscriber's new connections in again.
    fn admit(&self) -> impl Future<Output = ()> + Send;

    /// Whether the server sees a connection listening on the channel.
    fn listening(&self) -> impl Future<Output = bool> + Send;

    /// Removes the user (role), once its subscriptions are dropped.
    fn clean_up(self) -> impl Future<Output = ()> + Send;
}

/// A subscription whose messages land in a channel.
async fn collect<T: BusUnderTest>(bus: &T::Bus) -> (BusSubscription, mpsc::UnboundedReceiver<Invalidation>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let subscription = T::subscribe(bus, move |message| {
        let _ = tx.send(message);
    })
    .await
    .expect("subscribe");
    (subscription, rx)
}

async fn publish<T: BusUnderTest>(bus: &T::Bus, message: &Invalidation) {
    T::publish(bus, message).await.expect("publish");
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Invalidation>, within: Duration) -> Invalidation {
    tokio::time::timeout(within, rx.recv()).await.expect("no message in time").expect("the subscription ended")
}

/// A key event of `action` on `id`.
fn event(action: Action, id: KeyId, who: &str) -> Event {
    let mut event = Event::new(action, OffsetDateTime::now_utc(), AuditContext::new(who));
    event.key_id = Some(id);
    event
}

/// Verifies `key` on `b` until it is refused as revoked; how long that took.
async fn until_revoked<S: Store>(b: &KeyManager<S>, key: &str) -> Duration {
    let start = Instant::now();
    loop {
        let code = b.verify(key).await.expect("verify on B").code();
        if code == Code::Revoked {
            return start.elapsed();
        }
        assert_eq!(code, Code::Valid);
        assert!(start.elapsed() < BOUND, "B still accepts the revoked key after {:?}", start.elapsed());
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Instances A, B and a silent one share the keys (`stores`: three connections to one
/// store); A announces on `buses[0]`, B listens on `buses[1]` (one channel). A key
/// revoked on A is refused by B, which had it cached as valid, within [`BOUND`]; a key
/// revoked without an announcement stays cached on B.
pub async fn a_key_revoked_on_a_is_refused_by_b_that_had_it_cached<T: BusUnderTest, S: Store>(
    stores: [S; 3],
    buses: [T::Bus; 2],
) {
    let [store_a, store_b, store_c] = stores;
    let [bus_a, bus_b] = buses;
    let a = KeyManager::builder()
        .store(store_a)
        .cache(CacheMode::On)
        .cache_ttl(CACHE_TTL)
        .event_sink(T::event_sink(&bus_a))
        .build()
        .unwrap();
    let b = Arc::new(KeyManager::builder().store(store_b).cache(CacheMode::On).cache_ttl(CACHE_TTL).build().unwrap());
    // An instance that announces nothing: its changes show what B does without the bus.
    let silent = KeyManager::builder().store(store_c).cache(CacheMode::Off).build().unwrap();
    let cache = Arc::clone(&b);
    let subscription = T::subscribe(&bus_b, move |message: Invalidation| message.apply(&cache)).await.unwrap();

    // Without an announcement B keeps serving its cached result: the cache is on.
    let unannounced = a.create(NewKey::new()).await.unwrap();
    assert_eq!(b.verify(unannounced.key.expose()).await.unwrap().code(), Code::Valid);
    silent.revoke(&unannounced.record.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.verify(unannounced.key.expose()).await.unwrap().code(), Code::Valid, "B's cache was not used");

    let mut after_return = Vec::new();
    for _ in 0..20 {
        let created = a.create(NewKey::new()).await.unwrap();
        assert_eq!(b.verify(created.key.expose()).await.unwrap().code(), Code::Valid);
        assert_eq!(b.verify(created.key.expose()).await.unwrap().code(), Code::Valid);
        let start = Instant::now();
        a.revoke(&created.record.id).await.unwrap();
        let revoke_took = start.elapsed();
        let propagation = until_revoked(&b, created.key.expose()).await;
        after_return.push((revoke_took, propagation));
    }
    let mut propagation: Vec<Duration> = after_return.iter().map(|(_, p)| *p).collect();
    propagation.sort();
    println!(
        "{}: B refused the revoked key {:?} (median; max {:?}) after A's revoke returned; A's revoke took {:?} (first)",
        T::NAME,
        propagation[propagation.len() / 2],
        propagation[propagation.len() - 1],
        after_return[0].0
    );
    assert!(subscription.received() >= 20);
    assert_eq!(subscription.reconnects(), 0);
}

/// A subscription whose connection is cut comes back and says `All`, then hears later
/// messages; while the server refuses it, no `All` (the task keeps trying), then `All`
/// once it is let in again. One reconnection is counted per loss.
pub async fn a_lost_subscription_comes_back_says_all_and_hears_later_messages<T: BusUnderTest>(transport: T) {
    let prefix = T::fresh_prefix();
    let publisher = transport.connect(&prefix).await;
    let subscriber = transport.subscriber(&prefix).await;
    let (subscription, mut rx) = collect::<T>(subscriber.bus()).await;

    let before = KeyId::new();
    publish::<T>(&publisher, &Invalidation::Key(before)).await;
    assert_eq!(next(&mut rx, BOUND).await, Invalidation::Key(before));

    assert_eq!(subscriber.cut().await, 1, "the subscriber's connection was not found");
    assert_eq!(next(&mut rx, Duration::from_secs(10)).await, Invalidation::All);
    assert_eq!(subscription.reconnects(), 1);
    assert!(subscriber.listening().await, "nothing listens on the channel again");
    let after = KeyId::new();
    publish::<T>(&publisher, &Invalidation::Key(after)).await;
    assert_eq!(next(&mut rx, BOUND).await, Invalidation::Key(after));

    // While the server refuses the subscriber, no `All` yet; once it accepts, `All`.
    subscriber.refuse().await;
    assert_eq!(subscriber.cut().await, 1, "the subscriber's connection was not found");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(rx.try_recv().is_err(), "All before the subscription was back");
    assert!(subscription.is_running());
    subscriber.admit().await;
    assert_eq!(next(&mut rx, Duration::from_secs(20)).await, Invalidation::All);
    assert_eq!(subscription.reconnects(), 2);
    publish::<T>(&publisher, &Invalidation::Settings).await;
    assert_eq!(next(&mut rx, BOUND).await, Invalidation::Settings);

    drop(subscription);
    subscriber.clean_up().await;
}

/// A silent subscription checked every 20 ms stays (no reconnection, no `All`) and
/// hears the next message.
pub async fn idle_checks_keep_the_subscription<T: BusUnderTest>(transport: T) {
    let prefix = T::fresh_prefix();
    let publisher = transport.connect(&prefix).await;
    let subscriber = T::ping_interval(transport.connect(&prefix).await, Duration::from_millis(20));
    let (subscription, mut rx) = collect::<T>(&subscriber).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(subscription.reconnects(), 0);
    assert!(rx.try_recv().is_err());
    publish::<T>(&publisher, &Invalidation::App("billing".into())).await;
    assert_eq!(next(&mut rx, BOUND).await, Invalidation::App("billing".into()));
}

/// The sink announces changes to existing keys (not `verified`, `created`,
/// `imported`), every one of a burst of 1000, and nothing else; another prefix's
/// channel hears none of it.
pub async fn the_sink_announces_changes_to_existing_keys_only_and_every_one_of_a_burst<T: BusUnderTest>(transport: T) {
    let prefix = T::fresh_prefix();
    let publisher = transport.connect(&prefix).await;
    let subscriber = transport.connect(&prefix).await;
    let (_subscription, mut rx) = collect::<T>(&subscriber).await;
    let sink = T::event_sink(&publisher);

    let quiet = KeyId::new();
    for action in [Action::Verified, Action::Created, Action::Imported] {
        sink.record(&event(action, quiet, "bus-test"));
    }
    let mut expected = HashSet::new();
    let changes =
        [Action::Revoked, Action::Rotated, Action::Enabled, Action::Disabled, Action::Updated, Action::Deleted];
    for i in 0..1000 {
        let id = KeyId::new();
        sink.record(&event(changes[i % changes.len()], id, "bus-test"));
        expected.insert(Invalidation::Key(id));
    }
    let mut received = HashSet::new();
    while received.len() < expected.len() {
        let message = next(&mut rx, Duration::from_secs(5)).await;
        assert_ne!(message, Invalidation::Key(quiet), "a non-change was announced");
        received.insert(message);
    }
    assert_eq!(received, expected);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(rx.try_recv().is_err());

    // Another prefix's channel hears nothing of it.
    let other = transport.connect(&T::fresh_prefix()).await;
    let (_other_subscription, mut other_rx) = collect::<T>(&other).await;
    sink.record(&event(Action::Revoked, KeyId::new(), "bus-test"));
    assert!(matches!(next(&mut rx, BOUND).await, Invalidation::Key(_)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(other_rx.try_recv().is_err());
}

/// Runs the bus conformance tests that need only the transport (the tests of this
/// module taking a `T: BusUnderTest`), in a module `conformance`.
///
/// The argument is an expression yielding the [`BusUnderTest`] value, evaluated once
/// per test (with `use super::*;` in scope). With `optional`, it yields an `Option`
/// and each test ends at once, passing, on `None` (the server is missing; under
/// `CI=true`, `keypal-testing` fails the test instead).
///
/// Expands to one `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` per test.
#[macro_export]
macro_rules! bus_conformance {
    (optional $transport:expr $(,)?) => {
        $crate::__bus_conformance_emit!(optional $transport);
    };
    ($transport:expr $(,)?) => {
        $crate::__bus_conformance_emit!(required $transport);
    };
}

/// The tests of [`bus_conformance!`]. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __bus_conformance_emit {
    ($how:ident $transport:expr) => {
        $crate::__bus_conformance_emit!(
            @tests ($how $transport)
            a_lost_subscription_comes_back_says_all_and_hears_later_messages,
            idle_checks_keep_the_subscription,
            the_sink_announces_changes_to_existing_keys_only_and_every_one_of_a_burst,
        );
    };
    (@transport optional $transport:expr) => {
        $transport
    };
    (@transport required $transport:expr) => {
        Some($transport)
    };
    (@tests ($how:ident $transport:expr) $($name:ident),* $(,)?) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            use $crate::tokio as __keypal_conformance_tokio;

            $(
                #[__keypal_conformance_tokio::test(
                    crate = "__keypal_conformance_tokio",
                    flavor = "multi_thread",
                    worker_threads = 2
                )]
                async fn $name() {
                    let Some(transport) = $crate::__bus_conformance_emit!(@transport $how $transport) else { return };
                    $crate::bus::$name(transport).await;
                }
            )*
        }
    };
}

/// The runtime the benchmarks run on (two worker threads).
pub static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
});

/// What B's subscription hands each message to in the benchmarks.
pub type Handler = Box<dyn Fn(Invalidation) + Send + Sync>;

/// The fixture of the bus benchmarks: managers A and B with the verified cache on
/// (60 s TTL), each on a store of its own over the same keys; A announces on a bus and
/// B applies what its subscription hears. Run its benchmarks with
/// [`bus_benchmarks!`](crate::bus_benchmarks).
///
/// - `revoke_alone`: A's revoke (the baseline the others include).
/// - `revoke_until_b_refuses`: A revokes, then B's subscription applies the
///   announcement and B's next verify refuses the key (asserted): the end-to-end figure.
/// - `event_to_handler`: one key event handed to A's sink until B's handler has it:
///   the bus alone (queue, send, delivery to the subscriber).
///
/// Each sample is one operation, so divan's median is the p50 latency.
pub struct Propagation<S: Store> {
    a: KeyManager<S>,
    b: Arc<KeyManager<S>>,
    sink: BusSink,
    /// The key ids B's handler has applied, in order.
    heard: Mutex<mpsc::UnboundedReceiver<KeyId>>,
    _subscription: BusSubscription,
}

impl<S: Store> Propagation<S> {
    /// The fixture on `stores` (A's, B's), with A announcing on `sink` and B
    /// subscribing its handler with `subscribe_b` (inside [`RUNTIME`]).
    pub async fn new<F, E>(stores: [S; 2], sink: BusSink, subscribe_b: impl FnOnce(Handler) -> F) -> Self
    where
        F: Future<Output = Result<BusSubscription, E>>,
        E: fmt::Debug,
    {
        let [store_a, store_b] = stores;
        let a = KeyManager::builder().store(store_a).cache(CacheMode::On).cache_ttl(CACHE_TTL);
        let a = a.event_sink(sink.clone()).build().expect("manager A");
        let b = KeyManager::builder().store(store_b).cache(CacheMode::On).cache_ttl(CACHE_TTL).build();
        let b = Arc::new(b.expect("manager B"));
        let (tx, rx) = mpsc::unbounded_channel();
        let cache = Arc::clone(&b);
        let subscription = subscribe_b(Box::new(move |message: Invalidation| {
            message.apply(&cache);
            if let Invalidation::Key(id) = message {
                let _ = tx.send(id);
            }
        }))
        .await
        .expect("subscribe B");
        Self { a, b, sink, heard: Mutex::new(rx), _subscription: subscription }
    }

    /// A key created on A and cached as valid on B: `(id, key)`.
    fn cached_on_b(&self) -> (KeyId, String) {
        RUNTIME.block_on(async {
            let created = self.a.create(NewKey::new()).await.expect("create on A");
            let key = created.key.expose().to_owned();
            for _ in 0..2 {
                assert_eq!(self.b.verify(&key).await.expect("verify on B").code(), Code::Valid);
            }
            (created.record.id, key)
        })
    }

    /// Waits until B's handler has applied `id`.
    async fn heard(&self, id: KeyId) {
        let mut heard = self.heard.lock().await;
        let wait = async { while heard.recv().await.expect("subscription alive") != id {} };
        tokio::time::timeout(Duration::from_secs(5), wait).await.expect("B heard nothing within 5 s");
    }

    /// A's revoke of a key B had cached.
    pub fn revoke_alone(&self, bencher: Bencher) {
        bencher.with_inputs(|| self.cached_on_b()).bench_local_values(|(id, _key)| {
            RUNTIME.block_on(async { self.a.revoke(&id).await.expect("revoke on A") });
        });
    }

    /// A's revoke until B refuses the key.
    pub fn revoke_until_b_refuses(&self, bencher: Bencher) {
        bencher.with_inputs(|| self.cached_on_b()).bench_local_values(|(id, key)| {
            RUNTIME.block_on(async {
                self.a.revoke(&id).await.expect("revoke on A");
                self.heard(id).await;
                assert_eq!(self.b.verify(&key).await.expect("verify on B").code(), Code::Revoked);
            });
        });
    }

    /// A key event handed to A's sink until B's handler has it.
    pub fn event_to_handler(&self, bencher: Bencher) {
        bencher.with_inputs(|| event(Action::Revoked, KeyId::new(), "bench")).bench_local_values(|event| {
            self.sink.record(&event);
            RUNTIME.block_on(self.heard(event.key_id.expect("a key id")));
        });
    }
}

/// The bus benchmarks (see [`Propagation`]) over `$fixture`, an expression of type
/// `&Propagation<_>` (typically a `LazyLock` static built inside [`RUNTIME`]). The
/// bench target needs `divan` and `harness = false`, and its `main` calls `divan::main()`.
#[macro_export]
macro_rules! bus_benchmarks {
    ($fixture:expr) => {
        #[divan::bench(sample_count = 300, sample_size = 1)]
        fn revoke_alone(bencher: divan::Bencher) {
            $fixture.revoke_alone(bencher);
        }

        #[divan::bench(sample_count = 300, sample_size = 1)]
        fn revoke_until_b_refuses(bencher: divan::Bencher) {
            $fixture.revoke_until_b_refuses(bencher);
        }

        #[divan::bench(sample_count = 1000, sample_size = 1)]
        fn event_to_handler(bencher: divan::Bencher) {
            $fixture.event_to_handler(bencher);
        }
    };
}
