//! keypal's embedded migrations: one set per dialect, recorded in keypal's own table.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

/// Where keypal records its applied migrations, apart from the host application's `_sqlx_migrations`.
pub const MIGRATIONS_TABLE: &str = "keypal_migrations";

/// A migration: its version, description and SQL.
pub(crate) type Source = (i64, &'static str, &'static str);

/// A migrator for `sources` (a prefix of a dialect's list, for tests of older versions)
/// that records into [`MIGRATIONS_TABLE`].
pub(crate) fn migrator(sources: &[Source]) -> Migrator {
    let migrations = sources
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(sql),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    /// Two branches may each take a migration number: a database migrated by a binary
    /// with versions 1 and 3 takes version 2 when a binary with all three opens it
    /// (sqlx applies every version it has not recorded, in order, and refuses only a
    /// recorded version the binary does not know).
    #[tokio::test]
    async fn a_missing_version_is_applied_after_a_later_one() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.expect("memory database");
        let one: Source = (1, "one", "CREATE TABLE t1 (x INTEGER)");
        let two: Source = (2, "two", "CREATE TABLE t2 (x INTEGER)");
        let three: Source = (3, "three", "CREATE TABLE t3 (x INTEGER)");
        migrator(&[one, three]).run(&pool).await.expect("1 and 3");
        migrator(&[one, two, three]).run(&pool).await.expect("2 after 3");
        let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM keypal_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .expect("versions");
        assert_eq!(versions, [1, 2, 3]);
        sqlx::query("INSERT INTO t2 (x) VALUES (1)").execute(&pool).await.expect("table of version 2");
        let refused = migrator(&[one, two]).run(&pool).await;
        assert!(refused.is_err(), "a binary that lacks a recorded version refuses to run");
    }
}
