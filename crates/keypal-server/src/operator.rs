//! The operator's commands (`keypal apps ...`, `keypal keys ...`) on a deployment's
//! database: the same functions the management API's handlers call, with the same
//! rules and audit events (the actor is `cli`), and every change announced on the
//! deployment's bus (PostgreSQL `NOTIFY`, or Redis with `redis_url`) so running servers
//! apply it at once. A SQLite deployment has no bus: a server on the same file keeps a
//! cached verification up to its `cache_ttl`.

use std::sync::Arc;

use keypal::{AuditContext, Invalidation, KeyId, KeyRecord, ListQuery};
use uuid::Uuid;

use crate::cluster::Bus;
use crate::config::ServeConfig;
use crate::deployment::Deployment;
use crate::error::ApiError;
use crate::routes::{apps as app_routes, keys as key_routes};
use crate::serve::ServeError;
use crate::state::{AppRuntime, Shared, State};

pub use crate::apps::{AppView, NewApp, TierInput};
pub use crate::keys::{
    CreatedKey, CreditOpName, CreditsRequest, KeyPatchRequest, KeyView, NewKeyRequest, RefillView, RotateRequest,
};
pub use crate::routes::apps::{CreatedApp, KeyList, KeyListParams};
pub use crate::routes::import::{
    BATCH, ITEM_FIELDS, ImportReport, ImportResult, ImportStatus, KeyImporter, MAX_LINE, NumberedItem, export_item,
    line_item, line_too_long,
};

/// Who the audit log says made the operator's changes.
pub const ACTOR: &str = "cli";

/// An opened deployment, ready for the operator's commands.
pub struct Operator {
    state: Arc<State>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator").finish_non_exhaustive()
    }
}

impl Operator {
    /// Loads the deployment's applications and connects to its bus (as `keypal serve`
    /// does with `config`); generates nothing (no admin password, no service key).
    pub async fn open(deployment: Deployment, config: &ServeConfig) -> Result<Self, ServeError> {
        let Deployment { store, secrets, .. } = deployment;
        let bus = Bus::for_config(config, &store).await?;
        let shared = Shared { bus, ..Shared::default() };
        let state = State::load(Arc::new(store), Arc::new(secrets), shared).await?;
        Ok(Operator { state })
    }

    /// Closes the database.
    pub async fn close(self) {
        self.state.store.close().await;
    }

    /// The audit context of the operator's changes (actor [`ACTOR`]).
    pub fn context() -> AuditContext {
        AuditContext::new(ACTOR)
    }

    /// The application with this id or label (404 `NOT_FOUND` when none).
    fn runtime(&self, app: &str) -> Result<Arc<AppRuntime>, ApiError> {
        let apps = self.state.apps();
        let by_id = app.parse::<Uuid>().ok().and_then(|id| apps.iter().find(|r| r.app.id == id));
        by_id
            .or_else(|| apps.iter().find(|r| r.app.label == app))
            .cloned()
            .ok_or_else(|| ApiError::not_found("application"))
    }

    /// Every application, oldest first, with its key counts.
    pub async fn apps(&self) -> Result<Vec<AppView>, ApiError> {
        let mut views = Vec::new();
        for runtime in self.state.apps() {
            views.push(app_routes::view(&runtime).await?);
        }
        Ok(views)
    }

    /// The application with this id or label, with its key counts.
    pub async fn app(&self, app: &str) -> Result<AppView, ApiError> {
        app_routes::view(&*self.runtime(app)?).await
    }

    /// Creates an application (`POST /v1/apps`); its client secret is shown once.
    pub async fn create_app(&self, request: NewApp) -> Result<CreatedApp, ApiError> {
        app_routes::create_app(&self.state, Self::context(), request).await
    }

    /// Every key of the application with this id or label, newest first (revoked ones
    /// with `include_revoked`), only `owner`'s when given.
    pub async fn keys(
        &self,
        app: &str,
        owner: Option<String>,
        include_revoked: bool,
    ) -> Result<Vec<KeyView>, ApiError> {
        let id = self.runtime(app)?.app.id;
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let params = KeyListParams {
                owner_id: owner.clone(),
                include_revoked: Some(include_revoked),
                limit: Some(1000),
                cursor,
            };
            let page = app_routes::list_app_keys(&self.state, id, params).await?;
            keys.extend(page.keys);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// One key.
    pub async fn key(&self, id: Uuid) -> Result<KeyView, ApiError> {
        let (_, record, _) = key_routes::find(&self.state, id).await?;
        Ok(KeyView::from(&*record))
    }

    /// Creates a key in the application with this id or label (`POST /v1/apps/{id}/keys`);
    /// the key is shown once.
    pub async fn create_key(&self, app: &str, request: NewKeyRequest) -> Result<CreatedKey, ApiError> {
        let id = self.runtime(app)?.app.id;
        app_routes::create_key_in(&self.state, Self::context(), id, request).await
    }

    /// Changes a key (`PATCH /v1/keys/{id}`), announced on the bus.
    pub async fn update_key(&self, id: Uuid, request: KeyPatchRequest) -> Result<KeyView, ApiError> {
        let record = key_routes::update_key(&self.state, Self::context(), id, request).await?;
        self.announce_key(&record).await;
        Ok(KeyView::from(&record))
    }

    /// Sets, increments or decrements a key's credits (`POST /v1/keys/{id}/credits`),
    /// announced on the bus.
    pub async fn change_key_credits(&self, id: Uuid, request: CreditsRequest) -> Result<KeyView, ApiError> {
        let record = key_routes::change_credits(&self.state, Self::context(), id, &request).await?;
        self.announce_key(&record).await;
        Ok(KeyView::from(&record))
    }

    /// Revokes a key (`POST /v1/keys/{id}/revoke`), announced on the bus.
    pub async fn revoke_key(&self, id: Uuid) -> Result<KeyView, ApiError> {
        let record = key_routes::revoke_key(&self.state, Self::context(), id).await?;
        self.announce_key(&record).await;
        Ok(KeyView::from(&record))
    }

    /// Replaces a key (`POST /v1/keys/{id}/rotate`); the old key's change is announced on
    /// the bus, and the new key is shown once.
    pub async fn rotate_key(&self, id: Uuid, request: RotateRequest) -> Result<CreatedKey, ApiError> {
        let created = key_routes::rotate_key(&self.state, Self::context(), id, request).await?;
        self.state.announce(Invalidation::Key(KeyId(id))).await;
        Ok(created)
    }

    /// An importer of keys into the application with this id or label (`POST
    /// /v1/apps/{id}/keys/import`'s rules); `skip_limits` imports keys past their owner's
    /// limit of active keys.
    pub fn importer(&self, app: &str, skip_limits: bool) -> Result<KeyImporter, ApiError> {
        Ok(KeyImporter::new(self.runtime(app)?, Self::context(), skip_limits))
    }

    /// A page of at most 1000 of the application's active keys (disabled ones
    /// included), newest first from `cursor`, each as the import item that brings it
    /// back ([`export_item`]), or `None` for a key
    /// that cannot be moved; and the next page's cursor.
    pub async fn export_keys(
        &self,
        app: &str,
        cursor: Option<Uuid>,
    ) -> Result<(Vec<(KeyId, Option<serde_json::Value>)>, Option<Uuid>), ApiError> {
        let runtime = self.runtime(app)?;
        let mut query = ListQuery::new().active_only(true).limit(1000);
        if let Some(cursor) = cursor {
            query = query.cursor(cursor);
        }
        let page = runtime.keys.list(query).await?;
        let items = page.items.iter().map(|r| (r.id, export_item(r))).collect();
        Ok((items, page.next_cursor))
    }

    /// Announces a change to a key, and waits for it to be sent: the command may end
    /// right after, before a queued announcement would go out.
    async fn announce_key(&self, record: &KeyRecord) {
        self.state.announce(Invalidation::Key(record.id)).await;
    }
}
