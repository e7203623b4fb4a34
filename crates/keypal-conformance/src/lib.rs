//! # keypal-conformance
//!
//! The behavioural contract of keypal's [`Store`](keypal::Store) trait: one set of
//! tests that every store runs (memory, SQLite, PostgreSQL, Redis). A store that
//! passes them is correct; nothing else is.
//!
//! Each test is a public `async fn name<S: Store>(store: S)` that panics with a clear
//! message when the store misbehaves. The store it receives must be fresh and empty.
//! Tests in [`concurrency`] spawn tasks, so every test must run inside a
//! multi-threaded tokio runtime, which [`store_conformance!`] provides.
//!
//! A store crate runs the whole suite with one macro call in a test file; the
//! expression is evaluated once per test and must produce a fresh, empty store (an
//! SQL store creates a new schema or database per call, a Redis store a new prefix):
//!
//! ```
//! mod memory {
//!     keypal_conformance::store_conformance!(async { keypal::MemoryStore::new() });
//! }
//! # fn main() {}
//! ```
//!
//! This expands to one `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]`
//! per test, grouped in one module per theme (`memory::insert::...`,
//! `memory::concurrency::...`), so `cargo test concurrency` runs one theme. The
//! expression is evaluated inside those modules with `use super::*;` in scope, so
//! it may name helpers of the module the macro is called in. The caller needs no
//! tokio dependency of its own: the runtime comes from this crate's [`tokio`] re-export.
//!
//! [`TESTS`] lists every test by `theme::name`.
//!
//! ## Timestamps
//!
//! Records and events carry timestamps truncated to whole microseconds, the precision
//! of the SQL stores, so they read back equal on every store.
//!
//! ## Buses
//!
//! [`bus`] is the same for the cross-node invalidation buses (`RedisBus`, `PgBus`): one
//! set of tests, run by [`bus_conformance!`] against any [`bus::BusUnderTest`], and one
//! set of benchmarks, [`bus_benchmarks!`].
// Panicking is how a test reports failure: `unwrap`, `expect` and `panic!` are the
// assertions of this crate, so the workspace lints against them do not apply here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The runtime the generated tests run on (re-exported so callers need no tokio dependency).
pub use tokio;

/// Asserts that `$result` is `Err` matching `$pattern`, with a message naming the operation.
macro_rules! assert_err {
    ($result:expr, $pattern:pat, $($what:tt)+) => {
        match $result {
            Err($pattern) => {}
            other => panic!(
                "{}: expected Err({}), got {:?}",
                format_args!($($what)+),
                stringify!($pattern),
                other
            ),
        }
    };
}

pub mod audit;
pub mod bus;
pub mod concurrency;
pub mod credits;
pub mod fixtures;
pub mod hash_change;
pub mod insert;
pub mod limits;
pub mod list;
pub mod rotation;
pub mod state;
pub mod touch;

/// Every test of the suite, as `theme::name` (the module and function in this crate).
pub const TESTS: &[&str] = crate::__conformance_list!(__conformance_names);

/// Runs the whole conformance suite against a store.
///
/// The argument is an expression of type `impl Future<Output = S>` where `S: Store`,
/// typically an `async { ... }` block; it is evaluated once per test and must yield a
/// fresh, empty store. Invoke it inside a test module (one invocation per module):
///
/// ```
/// mod memory {
///     keypal_conformance::store_conformance!(async { keypal::MemoryStore::new() });
/// }
/// # fn main() {}
/// ```
///
/// The factory may call helpers of the invoking module (it is expanded in submodules
/// with `use super::*;`), for example one that creates a fresh schema:
///
/// ```
/// mod fresh {
///     async fn fresh_store() -> keypal::MemoryStore {
///         keypal::MemoryStore::new()
///     }
///     keypal_conformance::store_conformance!(fresh_store());
/// }
/// # fn main() {}
/// ```
///
/// A store whose server may be missing from the machine takes `optional` and a factory
/// yielding `Option<S>`: each test ends at once, passing, on `None` (the factory says why,
/// as `keypal-testing` does: it prints one line, or fails the test under `CI=true`):
///
/// ```
/// mod maybe {
///     async fn store_if_available() -> Option<keypal::MemoryStore> {
///         Some(keypal::MemoryStore::new())
///     }
///     keypal_conformance::store_conformance!(optional store_if_available());
/// }
/// # fn main() {}
/// ```
///
/// Expands to one `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]` per
/// entry of [`TESTS`], in one submodule per theme.
#[macro_export]
macro_rules! store_conformance {
    (optional $factory:expr $(,)?) => {
        $crate::__conformance_list!(__conformance_emit, optional $factory);
    };
    ($factory:expr $(,)?) => {
        $crate::__conformance_list!(__conformance_emit, required $factory);
    };
}

/// The list of tests, fed to a callback macro of this crate (named by `$callback`). Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_list {
    ($callback:ident $(, $($args:tt)*)?) => {
        $crate::$callback! {
            ($($($args)*)?)
            insert {
                insert_returns_the_record_and_get_reads_it_back_equal,
                find_by_id_lookup_returns_the_record,
                find_by_digest_lookup_returns_the_record,
                find_by_hint_returns_every_candidate,
                unknown_id_and_lookups_find_nothing,
                metadata_of_any_json_kind_round_trips,
                unicode_and_special_characters_round_trip,
                disabled_revoked_and_rotated_fields_round_trip,
                insert_with_taken_id_lookup_is_duplicate_and_changes_nothing,
                insert_with_taken_digest_is_duplicate_and_changes_nothing,
                insert_with_taken_record_id_is_duplicate_and_changes_nothing,
                shared_hints_and_equal_text_of_another_lookup_kind_are_not_duplicates,
                insert_many_stores_each_record_on_its_own,
            }
            limits {
                owner_limit_refuses_at_the_limit,
                revoked_keys_do_not_count_against_the_owner_limit,
                expired_keys_do_not_count_against_the_owner_limit,
                keys_in_their_grace_window_do_not_count_against_the_owner_limit,
                disabled_keys_still_count_against_the_owner_limit,
                other_owners_and_namespaces_do_not_count_against_the_owner_limit,
                keys_without_owner_are_not_limited,
            }
            list {
                empty_store_lists_and_counts_nothing,
                list_returns_newest_first,
                list_filters_by_namespace,
                list_filters_by_owner,
                list_hides_revoked_keys_unless_asked,
                list_pages_with_a_cursor_without_gaps_or_duplicates,
                list_last_full_page_has_no_next_cursor,
                list_shows_a_key_in_its_grace_window_as_not_revoked,
                list_active_only_is_the_limit_definition,
                list_searches_names_and_owners,
                count_ignores_cursor_and_limit,
            }
            state {
                update_sets_or_clears_each_field_alone,
                update_of_several_fields_sets_them_all,
                update_of_unknown_key_is_not_found,
                set_enabled_toggles_and_bumps_version,
                set_enabled_of_unknown_key_is_not_found,
                revoke_sets_revoked_at_and_bumps_version,
                second_revoke_is_already_revoked_and_keeps_the_first_time,
                revoking_a_key_in_its_grace_window_revokes_it_now,
                revoke_of_unknown_key_is_not_found,
                revoke_owner_revokes_only_that_owner_in_that_namespace,
                revoke_owner_without_namespace_only_revokes_keys_without_namespace,
                revoke_owner_of_unknown_owner_revokes_nothing,
                replace_hash_swaps_when_expected_matches,
                replace_hash_refuses_when_expected_differs,
                replace_hash_of_unknown_key_returns_false,
                replace_hash_moves_the_lookup_with_the_hash,
                replace_hash_to_a_taken_lookup_is_duplicate_and_changes_nothing,
                delete_returns_the_record_and_removes_it_everywhere,
                delete_frees_the_lookup_value,
                delete_of_unknown_key_returns_none,
            }
            rotation {
                rotate_inserts_the_replacement_and_marks_the_old_key,
                rotated_key_in_its_grace_window_can_be_revoked_now,
                rotating_a_revoked_key_is_already_revoked_and_inserts_nothing,
                rotating_a_key_in_its_grace_window_again_is_already_revoked,
                rotating_with_a_taken_lookup_is_duplicate_and_leaves_the_old_key_unchanged,
                rotating_with_a_taken_record_id_is_duplicate_and_leaves_the_old_key_unchanged,
                rotating_an_unknown_key_is_not_found_and_inserts_nothing,
            }
            credits {
                consume_on_unlimited_key_is_unlimited,
                consume_spends_and_reports_what_is_left,
                consume_exactly_what_is_left_reaches_zero_then_exhausts,
                consume_more_than_left_is_exhausted_and_spends_nothing,
                consume_of_unknown_key_is_not_found,
                consume_tops_up_once_per_boundary,
                consume_after_a_boundary_refills_an_empty_key,
                consume_without_a_stored_refill_ignores_the_boundary,
                adjust_credits_sets_increments_and_decrements,
                adjust_credits_refuses_what_does_not_apply,
                adjust_credits_applies_a_due_refill_first,
            }
            touch {
                touch_sets_last_used_at_only,
                touch_only_moves_forward,
                touch_ignores_unknown_ids,
                touch_updates_many_keys_in_one_batch,
                touch_after_revoke_keeps_the_revocation,
                touch_after_disable_keeps_the_key_disabled,
                touch_after_update_keeps_the_update,
            }
            audit {
                empty_store_has_no_audit_events,
                event_reads_back_with_key_owner_and_namespace_filled_in,
                each_successful_change_appends_one_event,
                failed_operations_append_nothing,
                usage_writes_append_nothing,
                audit_filters_by_key_owner_action_and_namespace,
                audit_time_range_includes_since_and_excludes_until,
                audit_pages_newest_first_with_a_cursor,
            }
            hash_change {
                every_hash_change_keeps_existing_keys_verifying,
                a_re_hashed_key_is_re_stored_once,
            }
            concurrency {
                concurrent_inserts_respect_the_owner_limit,
                concurrent_inserts_of_one_lookup_succeed_once,
                concurrent_consumes_spend_each_credit_once,
                concurrent_consumes_across_a_refill_boundary_refill_once,
                concurrent_credit_changes_are_all_kept,
                concurrent_revokes_succeed_exactly_once,
                concurrent_rotations_of_one_key_succeed_exactly_once,
                touch_racing_revoke_never_undoes_the_revocation,
                concurrent_changes_to_different_fields_are_all_kept,
                concurrent_writes_page_through_the_audit_log_without_gaps,
            }
        }
    };
}

/// Callback of [`__conformance_list!`]: one tokio test per entry. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_emit {
    (($how:ident $factory:expr) $($theme:ident { $($name:ident),* $(,)? })*) => {
        $(
            mod $theme {
                #[allow(unused_imports)]
                use super::*;
                use $crate::tokio as __keypal_conformance_tokio;

                $(
                    #[__keypal_conformance_tokio::test(
                        crate = "__keypal_conformance_tokio",
                        flavor = "multi_thread",
                        worker_threads = 4
                    )]
                    async fn $name() {
                        let Some(store) = $crate::__conformance_store!($how $factory) else { return };
                        $crate::$theme::$name(store).await;
                    }
                )*
            }
        )*
    };
}

/// The store of one test: `Some(store)`, or `None` to skip it. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_store {
    (required $factory:expr) => {
        Some($factory.await)
    };
    (optional $factory:expr) => {
        $factory.await
    };
}

/// Callback of [`__conformance_list!`]: the names as `theme::name` strings. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_names {
    (() $($theme:ident { $($name:ident),* $(,)? })*) => {
        &[$($(concat!(stringify!($theme), "::", stringify!($name)),)*)*]
    };
}

#[cfg(test)]
mod tests {
    /// Every public test function of a theme module is in [`super::TESTS`] (so the
    /// macro runs it), and every entry names an existing function.
    #[test]
    fn every_test_function_is_listed() {
        let sources = [
            ("insert", include_str!("insert.rs")),
            ("limits", include_str!("limits.rs")),
            ("list", include_str!("list.rs")),
            ("state", include_str!("state.rs")),
            ("rotation", include_str!("rotation.rs")),
            ("credits", include_str!("credits.rs")),
            ("touch", include_str!("touch.rs")),
            ("audit", include_str!("audit.rs")),
            ("hash_change", include_str!("hash_change.rs")),
            ("concurrency", include_str!("concurrency.rs")),
        ];
        let mut defined = Vec::new();
        for (theme, source) in sources {
            for line in source.lines() {
                if let Some(rest) = line.strip_prefix("pub async fn ") {
                    let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    defined.push(format!("{theme}::{name}"));
                }
            }
        }
        let mut listed: Vec<String> = super::TESTS.iter().map(|s| (*s).to_owned()).collect();
        defined.sort();
        listed.sort();
        assert_eq!(defined, listed, "the functions defined and the tests listed in __conformance_list! differ");
        let mut unique = listed.clone();
        unique.dedup();
        assert_eq!(unique.len(), listed.len(), "a test is listed twice");
    }
}
