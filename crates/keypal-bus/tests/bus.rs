//! The publishing and subscription tasks over a scripted in-process transport: what
//! every bus (Redis, PostgreSQL) inherits, checked without a server.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keypal::{Action, AuditContext, Event, EventSink, Invalidation, KeyId};
use keypal_bus::{BusSink, BusSubscription, Heard, Listener, Transport};
use tokio::sync::mpsc;

/// Records what it is asked to send (refusing while `failing`), and hands out
/// listeners that hear what the test feeds them.
#[derive(Default)]
struct Scripted {
    sent: Mutex<Vec<Vec<Invalidation>>>,
    failing: AtomicBool,
    listeners: Mutex<VecDeque<mpsc::UnboundedReceiver<Heard>>>,
}

impl Scripted {
    /// A listener to be handed out next; what is sent on the returned sender is heard.
    fn add_listener(&self) -> mpsc::UnboundedSender<Heard> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.listeners.lock().unwrap().push_back(rx);
        tx
    }
}

struct Fed(mpsc::UnboundedReceiver<Heard>);

impl Transport for Scripted {
    type Listener = Fed;
    type Error = ();

    async fn send(&self, batch: &[Invalidation]) -> Result<(), ()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(());
        }
        self.sent.lock().unwrap().push(batch.to_vec());
        Ok(())
    }

    async fn listen(&self) -> Result<Fed, ()> {
        self.listeners.lock().unwrap().pop_front().map(Fed).ok_or(())
    }
}

impl Listener for Fed {
    async fn recv(&mut self) -> Heard {
        self.0.recv().await.unwrap_or(Heard::Closed)
    }

    async fn check(&mut self) -> bool {
        true
    }
}

/// Waits (up to 10 s) until `done` holds.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..2_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out");
}

#[tokio::test]
async fn messages_reach_the_handler_a_panic_is_contained_and_a_lost_subscription_says_all() {
    let transport = Arc::new(Scripted::default());
    let first = transport.add_listener();
    let second = transport.add_listener();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&heard);
    let listener = transport.listen().await.unwrap();
    let subscription = BusSubscription::spawn(Arc::clone(&transport), listener, Duration::from_secs(30), move |m| {
        if m == Invalidation::App("bad".into()) {
            panic!("a handler that panics");
        }
        log.lock().unwrap().push(m);
    });
    let key = Invalidation::Key(KeyId::new());
    first.send(Heard::Message(Invalidation::Settings)).unwrap();
    first.send(Heard::Message(Invalidation::App("bad".into()))).unwrap();
    // The transport made the subscription again by itself: messages may be lost.
    first.send(Heard::Resubscribed).unwrap();
    // Lost for good: the task listens again (on `second`) and says `All`.
    first.send(Heard::Lost).unwrap();
    second.send(Heard::Message(key.clone())).unwrap();
    until(|| heard.lock().unwrap().len() == 4).await;
    assert_eq!(*heard.lock().unwrap(), [Invalidation::Settings, Invalidation::All, Invalidation::All, key]);
    assert_eq!((subscription.received(), subscription.reconnects()), (3, 2));
    assert!(subscription.is_running());
    // A closed transport ends the task.
    second.send(Heard::Closed).unwrap();
    until(|| !subscription.is_running()).await;
}

#[tokio::test]
async fn a_failed_send_is_retried_and_an_overflowing_queue_becomes_one_all() {
    let transport = Arc::new(Scripted::default());
    let sink = BusSink::spawn(Arc::clone(&transport));
    let event = |action| {
        let mut event = Event::new(action, time::OffsetDateTime::now_utc(), AuditContext::default());
        event.key_id = Some(KeyId::new());
        event
    };
    // Only changes to existing keys are announced.
    sink.record(&event(Action::Verified));
    sink.record(&event(Action::Created));
    let revoked = event(Action::Revoked);
    sink.record(&revoked);
    sink.record(&revoked);
    until(|| !transport.sent.lock().unwrap().is_empty()).await;
    let announced = Invalidation::Key(revoked.key_id.unwrap());
    assert_eq!(*transport.sent.lock().unwrap(), [vec![announced]], "one batch, duplicates dropped");

    // While sends fail, more is recorded than the queue holds.
    transport.failing.store(true, Ordering::SeqCst);
    transport.sent.lock().unwrap().clear();
    for _ in 0..6_000 {
        sink.record(&event(Action::Revoked));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    transport.failing.store(false, Ordering::SeqCst);
    // The batch in flight and what overflowed become one `all`; what stayed queued
    // (the queue holds 4 096, the batch in flight took up to 256 of them) follows.
    until(|| transport.sent.lock().unwrap().iter().map(Vec::len).sum::<usize>() > 3_800).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = transport.sent.lock().unwrap().clone();
    assert_eq!(sent[0], [Invalidation::All], "what was dropped is announced as `all`, first");
    assert!(sent.iter().all(|batch| batch.len() <= 256), "batches of at most 256");
    assert_eq!(sent.iter().flatten().filter(|m| **m == Invalidation::All).count(), 1);
    assert!(sent.iter().map(Vec::len).sum::<usize>() <= 1 + 4_096);
}
