//! Usage analytics: `GET /v1/analytics/verifications` (management callers) and
//! `GET /v1/owners/{owner_id}/usage` (an application's backend, by its client secret).
//!
//! Both first write the counts pending in memory (unless that was done in the last few
//! seconds: [`crate::state::READ_FRESHNESS`]), then read keypal-sql's `keypal_minutes` and `keypal_counts`:
//! per minute (kept 48 hours by default), per hour (90 days) or per day (kept), for an
//! application, one owner or one key, for all verifications or one tag.

use std::sync::Arc;

use axum::extract::State as AxumState;
use keypal::{KeyId, Store, Tags};
use keypal_sql::{AnalyticsBucket, AnalyticsError, AnalyticsQuery, Granularity, GroupBy, InvalidQuery, UsageCounts};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Admin, ClientApp};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery, OwnerPath};
use crate::routes::apps::check_owner;
use crate::schema::{OwnerId, Tag};
use crate::state::State;

/// `GET /v1/analytics/verifications` parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsParams {
    /// The application (required unless `key_id` is given).
    pub app_id: Option<Uuid>,
    /// Only this key (its application when `app_id` is absent).
    pub key_id: Option<Uuid>,
    /// Only this owner's keys (not with `key_id`).
    #[param(inline, value_type = Option<OwnerId>)]
    pub owner_id: Option<String>,
    /// Only verifications carrying this tag.
    #[param(inline, value_type = Option<Tag>)]
    pub tag: Option<String>,
    /// Start, RFC 3339 (default: `to` minus an hour of minutes, a day of hours or 30 days).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-01-01T00:00:00Z")]
    pub from: Option<String>,
    /// End, RFC 3339, exclusive (default: now).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-01-02T00:00:00Z")]
    pub to: Option<String>,
    /// `minute` (range up to 48 hours), `hour` (up to 90 days, the default) or `day` (up to 1 096 days).
    #[param(inline, value_type = Option<GranularityName>)]
    pub granularity: Option<String>,
    /// `code` (the default: one series, counts by result code), `key` or `owner` (the
    /// top `limit` keys or owners of the application by verifications in the UTC days,
    /// or 7-day or 30-day periods, the range touches; not with `key_id` or `owner_id`),
    /// `tag` (the top `limit` tags; not with `tag`).
    #[param(inline, value_type = Option<GroupByName>)]
    pub group_by: Option<String>,
    /// Groups at most, 1-100 (default 10).
    #[param(minimum = 1, maximum = 100, example = 10)]
    pub limit: Option<u32>,
}

/// `GET /v1/owners/{owner_id}/usage` parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OwnerUsageParams {
    /// Start, RFC 3339 (default: `to` minus an hour of minutes, a day of hours or 30 days).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-01-01T00:00:00Z")]
    pub from: Option<String>,
    /// End, RFC 3339, exclusive (default: now).
    #[param(value_type = Option<String>, format = DateTime, example = "2026-01-02T00:00:00Z")]
    pub to: Option<String>,
    /// `minute` (range up to 48 hours), `hour` (up to 90 days, the default) or `day` (up to 1 096 days).
    #[param(inline, value_type = Option<GranularityName>)]
    pub granularity: Option<String>,
    /// Only verifications carrying this tag.
    #[param(inline, value_type = Option<Tag>)]
    pub tag: Option<String>,
    /// `code` (the default) or `tag` (the owner's top `limit` tags; not with `tag`).
    #[param(inline, value_type = Option<OwnerGroupByName>)]
    pub group_by: Option<String>,
    /// Groups at most, 1-100 (default 10).
    #[param(minimum = 1, maximum = 100, example = 10)]
    pub limit: Option<u32>,
}

/// What a range may cover, per granularity (a JSON schema cannot say it).
const RANGE_RULE: &str =
    "`from` before `to`; at most 48 hours of minute buckets, 90 days of hour buckets or 1 096 days of day buckets";

/// The rules of `GET /v1/analytics/verifications` that a JSON schema cannot say.
const ANALYTICS_RULES: &[(&str, &str)] = &[
    ("app_id", "required unless `key_id` is given; the key's own application when both are"),
    ("owner_id", "not with `key_id`"),
    ("group_by", "`key` and `owner` not with `key_id` or `owner_id`; `tag` not with `tag`"),
    ("tag", "no control characters"),
    ("from", RANGE_RULE),
    ("to", RANGE_RULE),
];

/// The rules of `GET /v1/owners/{owner_id}/usage` that a JSON schema cannot say.
const OWNER_USAGE_RULES: &[(&str, &str)] =
    &[("group_by", "`tag` not with `tag`"), ("tag", "no control characters"), ("from", RANGE_RULE), ("to", RANGE_RULE)];

/// The schema of a granularity's name.
pub struct GranularityName;
impl utoipa::PartialSchema for GranularityName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::schema::one_of(Granularity::ALL.iter().map(|g| g.as_str()))
    }
}
impl ToSchema for GranularityName {}

/// The schema of a grouping's name.
pub struct GroupByName;
impl utoipa::PartialSchema for GroupByName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::schema::one_of(["code", "key", "owner", "tag"])
    }
}
impl ToSchema for GroupByName {}

/// The schema of an owner's grouping's name.
pub struct OwnerGroupByName;
impl utoipa::PartialSchema for OwnerGroupByName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::schema::one_of(["code", "tag"])
    }
}
impl ToSchema for OwnerGroupByName {}

/// Verification counts by result code (codes that name no key, `MALFORMED` and
/// `NOT_FOUND`, are not counted per key).
#[derive(Debug, Serialize, ToSchema)]
pub struct CodeCounts {
    /// `VALID`.
    #[serde(rename = "VALID")]
    pub valid: u64,
    /// `REVOKED`.
    #[serde(rename = "REVOKED")]
    pub revoked: u64,
    /// `DISABLED`.
    #[serde(rename = "DISABLED")]
    pub disabled: u64,
    /// `EXPIRED`.
    #[serde(rename = "EXPIRED")]
    pub expired: u64,
    /// `INSUFFICIENT_SCOPE`.
    #[serde(rename = "INSUFFICIENT_SCOPE")]
    pub insufficient_scope: u64,
    /// `RATE_LIMITED`.
    #[serde(rename = "RATE_LIMITED")]
    pub rate_limited: u64,
    /// `USAGE_EXCEEDED`.
    #[serde(rename = "USAGE_EXCEEDED")]
    pub usage_exceeded: u64,
}

impl From<&UsageCounts> for CodeCounts {
    fn from(c: &UsageCounts) -> Self {
        CodeCounts {
            valid: c.valid,
            revoked: c.revoked,
            disabled: c.disabled,
            expired: c.expired,
            insufficient_scope: c.insufficient_scope,
            rate_limited: c.rate_limited,
            usage_exceeded: c.usage_exceeded,
        }
    }
}

/// The counts of one bucket (of one group, when grouped).
#[derive(Debug, Serialize, ToSchema)]
pub struct BucketView {
    /// The start of the bucket (UTC, aligned to its minute, hour or day).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub start: OffsetDateTime,
    /// The key id, owner id or tag, when grouped by one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The counts.
    pub counts: CodeCounts,
}

/// Buckets with verifications, oldest first (then by group); empty buckets are left out.
#[derive(Debug, Serialize, ToSchema)]
pub struct Buckets {
    /// The buckets.
    pub buckets: Vec<BucketView>,
}

impl From<Vec<AnalyticsBucket>> for Buckets {
    fn from(buckets: Vec<AnalyticsBucket>) -> Self {
        Buckets {
            buckets: buckets
                .iter()
                .map(|b| BucketView { start: b.start, group: b.group.clone(), counts: (&b.counts).into() })
                .collect(),
        }
    }
}

/// Reads an RFC 3339 time parameter.
fn time_param(name: &str, text: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    text.map(|t| {
        OffsetDateTime::parse(t, &Rfc3339)
            .map_err(|_| ApiError::invalid(name, "must be an RFC 3339 time, like 2026-01-01T00:00:00Z"))
    })
    .transpose()
}

/// The range and granularity of a request: `to` defaults to now, `from` to `to` minus an
/// hour (minutes), a day (hours) or 30 days (days).
pub fn range(
    from: Option<&str>,
    to: Option<&str>,
    granularity: Option<&str>,
) -> Result<(OffsetDateTime, OffsetDateTime, Granularity), ApiError> {
    let granularity = match granularity {
        None => Granularity::Hour,
        Some(name) => {
            Granularity::parse(name).ok_or_else(|| ApiError::invalid("granularity", "must be minute, hour or day"))?
        }
    };
    let to = time_param("to", to)?.unwrap_or_else(OffsetDateTime::now_utc);
    let default = match granularity {
        Granularity::Minute => time::Duration::hours(1),
        Granularity::Day => time::Duration::days(30),
        _ => time::Duration::days(1),
    };
    let from = match time_param("from", from)? {
        Some(from) => from,
        None => to.checked_sub(default).ok_or_else(|| ApiError::invalid("to", "is out of range"))?,
    };
    Ok((from, to, granularity))
}

/// A checked tag filter.
fn tag_param(tag: Option<String>) -> Result<Option<String>, ApiError> {
    match tag {
        Some(tag) if !Tags::is_valid(&tag) => {
            Err(ApiError::invalid("tag", "must be 1 to 64 characters without control characters"))
        }
        other => Ok(other),
    }
}

/// Answers `query`; a query the store refuses is 400 `INVALID_INPUT` naming its parameter.
pub async fn answer(state: &State, query: &AnalyticsQuery) -> Result<Buckets, ApiError> {
    state.flush_for_read().await;
    match state.store.analytics(query).await {
        Ok(buckets) => Ok(buckets.into()),
        Err(AnalyticsError::Invalid(invalid)) => {
            let field = match &invalid {
                InvalidQuery::EmptyRange => "to",
                InvalidQuery::RangeTooLong { .. } => "from",
                InvalidQuery::Grouping { .. } => "group_by",
                InvalidQuery::Tag => "tag",
                InvalidQuery::Limit => "limit",
                _ => "query",
            };
            let message = invalid.to_string();
            let message = message.strip_prefix("`to` ").unwrap_or(&message);
            Err(ApiError::invalid(field, message))
        }
        Err(AnalyticsError::Store(e)) => Err(e.into()),
        Err(other) => Err(ApiError::internal(&other)),
    }
}

/// Verification counts over time, by result code, for an application, an owner, a key
/// or a tag; split by key, owner or tag with `group_by`.
#[utoipa::path(get, path = "/v1/analytics/verifications", operation_id = "verification_analytics", tag = "analytics",
    params(AnalyticsParams), security(("admin_session" = [])),
    extensions(("x-keypal-rules" = json!(crate::openapi::rules(ANALYTICS_RULES)))),
    responses((status = 200, description = "the buckets with verifications, oldest first", body = Buckets),
        (status = 400, description = "INVALID_INPUT: a range longer than the granularity allows, an unknown granularity or grouping, a grouping that does not go with the filters"),
        (status = 404, description = "NOT_FOUND: no such application or key")))]
pub async fn verifications(
    _: Admin,
    AxumState(state): AxumState<Arc<State>>,
    ApiQuery(params): ApiQuery<AnalyticsParams>,
) -> Result<ApiJson<Buckets>, ApiError> {
    let (since, until, granularity) =
        range(params.from.as_deref(), params.to.as_deref(), params.granularity.as_deref())?;
    let namespace = match (params.app_id, params.key_id) {
        (Some(app), _) => state.app(app).ok_or_else(|| ApiError::not_found("application"))?.app.namespace(),
        (None, Some(_)) => String::new(),
        (None, None) => return Err(ApiError::invalid("app_id", "is required unless key_id is given")),
    };
    let mut query = AnalyticsQuery::new(Some(&namespace), since, until, granularity);
    if let Some(key) = params.key_id {
        if params.owner_id.is_some() {
            return Err(ApiError::invalid("owner_id", "cannot be combined with key_id"));
        }
        let record = state.store.get(KeyId(key)).await?.ok_or_else(|| ApiError::not_found("key"))?;
        let in_app = record.namespace.as_deref().filter(|ns| params.app_id.is_none() || *ns == namespace);
        let Some(key_namespace) = in_app else { return Err(ApiError::not_found("key")) };
        query.namespace = Some(key_namespace.to_owned());
        query = query.key(KeyId(key));
    }
    if let Some(owner) = &params.owner_id {
        query = query.owner(check_owner(owner)?);
    }
    if let Some(tag) = tag_param(params.tag)? {
        query = query.tag(tag);
    }
    match params.group_by.as_deref() {
        None | Some("code") => {}
        Some("key") => query = query.group_by(GroupBy::Key),
        Some("owner") => query = query.group_by(GroupBy::Owner),
        Some("tag") => query = query.group_by(GroupBy::Tag),
        Some(_) => return Err(ApiError::invalid("group_by", "must be code, key, owner or tag")),
    }
    if let Some(limit) = params.limit {
        query = query.limit(limit);
    }
    Ok(ApiJson(answer(&state, &query).await?))
}

/// An owner's verification counts over time in the calling application (its keys only),
/// for the usage page an application shows its users.
#[utoipa::path(get, path = "/v1/owners/{owner_id}/usage", operation_id = "owner_usage", tag = "owners",
    params(OwnerPath, OwnerUsageParams), security(("client_secret" = [])),
    extensions(("x-keypal-rules" = json!(crate::openapi::rules(OWNER_USAGE_RULES)))),
    responses((status = 200, description = "the owner's buckets with verifications, oldest first", body = Buckets),
        (status = 400, description = "INVALID_INPUT: a range longer than the granularity allows, an unknown granularity")))]
pub async fn owner_usage(
    client: ClientApp,
    AxumState(state): AxumState<Arc<State>>,
    ApiPath(OwnerPath { owner_id: owner }): ApiPath<OwnerPath>,
    ApiQuery(params): ApiQuery<OwnerUsageParams>,
) -> Result<ApiJson<Buckets>, ApiError> {
    let owner = check_owner(&owner)?;
    let (since, until, granularity) =
        range(params.from.as_deref(), params.to.as_deref(), params.granularity.as_deref())?;
    let namespace = client.runtime.app.namespace();
    let mut query = AnalyticsQuery::new(Some(&namespace), since, until, granularity).owner(owner);
    if let Some(tag) = tag_param(params.tag)? {
        query = query.tag(tag);
    }
    match params.group_by.as_deref() {
        None | Some("code") => {}
        Some("tag") => query = query.group_by(GroupBy::Tag),
        Some(_) => return Err(ApiError::invalid("group_by", "must be code or tag")),
    }
    if let Some(limit) = params.limit {
        query = query.limit(limit);
    }
    Ok(ApiJson(answer(&state, &query).await?))
}
