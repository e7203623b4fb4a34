//! Login throttling: after five failed logins from one address within 15 minutes,
//! further attempts from it are refused (429) until the window has passed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per address per window.
pub const MAX_FAILURES: u32 = 5;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Failed logins per address.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl LoginThrottle {
    /// `Some(seconds to wait)` when `ip` may not try now.
    pub fn check(&self, ip: IpAddr) -> Option<u64> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        failures.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
        match failures.get(&ip) {
            Some((count, since)) if *count >= MAX_FAILURES => {
                Some(WINDOW.saturating_sub(now.duration_since(*since)).as_secs().max(1))
            }
            _ => None,
        }
    }

    /// Counts a failed login.
    pub fn fail(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        entry.0 += 1;
    }

    /// Forgets the failures of an address that logged in.
    pub fn succeed(&self, ip: IpAddr) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_block_that_address_only() {
        let throttle = LoginThrottle::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..MAX_FAILURES {
            assert_eq!(throttle.check(a), None);
            throttle.fail(a);
        }
        assert!(throttle.check(a).is_some_and(|s| s > 0 && s <= WINDOW.as_secs()));
        assert_eq!(throttle.check(b), None);
        throttle.succeed(a);
        assert_eq!(throttle.check(a), None);
    }
}
