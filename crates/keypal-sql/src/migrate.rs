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
