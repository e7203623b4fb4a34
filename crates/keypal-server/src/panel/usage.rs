//! An application's usage dashboard, `/admin/apps/{id}/usage`: verifications over time
//! by outcome, the rate-limited and out-of-credit counts, the top keys, owners and tags,
//! as `GET /v1/analytics/verifications` answers them; and a key's own history, for its
//! page. Charts are SVG drawn here (`format::outcome_chart`): no script, no inline style.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::Response;
use keypal::{KeyId, Store};
use keypal_sql::{Granularity, UsageCounts};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use super::Shared;
use super::format::{self, Outcomes};
use super::page::{Layout, failed, render};
use super::session::PanelSession;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::routes::analytics::{AnalyticsParams, BucketView, CodeCounts, verifications};
use crate::state::State;

/// The ranges the dashboard offers: (parameter, label, buckets, granularity).
const RANGES: [(&str, &str, i64, Granularity); 4] = [
    ("24h", "24 hours", 24, Granularity::Hour),
    ("7d", "7 days", 168, Granularity::Hour),
    ("30d", "30 days", 30, Granularity::Day),
    ("90d", "90 days", 90, Granularity::Day),
];

/// Groups in each top list.
const TOP: u32 = 10;

/// A chart's bars, zero-filled, with the labels of its first and last bucket.
pub(super) struct Chart {
    /// The SVG.
    pub svg: String,
    /// The first bucket's start.
    pub first: String,
    /// The last bucket's start.
    pub last: String,
    /// Every verification in it, by outcome.
    pub sum: Outcomes,
}

/// A range link.
struct RangeLink {
    href: String,
    label: &'static str,
    current: bool,
}

/// A row of a top list.
struct TopRow {
    /// What the row is (a key's name and masked form, an owner id, a tag).
    label: String,
    /// A link to the key's page, for keys.
    href: Option<String>,
    total: u64,
    valid: u64,
    rate_limited: u64,
    out_of_credits: u64,
    refused: u64,
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage {
    layout: Layout,
    app_id: String,
    app_name: String,
    ranges: Vec<RangeLink>,
    range_label: &'static str,
    chart: Chart,
    keys: Vec<TopRow>,
    owners: Vec<TopRow>,
    tags: Vec<TopRow>,
}

/// `GET /admin/apps/{id}/usage` parameters.
#[derive(Deserialize, Default)]
pub struct UsageFilter {
    range: Option<String>,
}

/// The first bucket of `count` buckets of `granularity` ending with the one `now` is in.
fn first_bucket(now: OffsetDateTime, count: i64, granularity: Granularity) -> OffsetDateTime {
    let span = granularity.seconds();
    let current = now.unix_timestamp().div_euclid(span) * span;
    OffsetDateTime::from_unix_timestamp(current - (count - 1) * span).unwrap_or(now)
}

fn rfc3339(at: OffsetDateTime) -> Option<String> {
    at.format(&Rfc3339).ok()
}

/// A bucket's start as the chart's axis shows it: `Dec 3 14:00` (hours) or `Dec 3` (days).
fn axis_label(at: OffsetDateTime, granularity: Granularity) -> String {
    let text = if granularity == Granularity::Day {
        at.format(format_description!("[month repr:short] [day padding:none]"))
    } else {
        at.format(format_description!("[month repr:short] [day padding:none] [hour]:00"))
    };
    text.unwrap_or_default()
}

fn counts_of(c: &CodeCounts) -> UsageCounts {
    let mut counts = UsageCounts::default();
    counts.valid = c.valid;
    counts.revoked = c.revoked;
    counts.disabled = c.disabled;
    counts.expired = c.expired;
    counts.insufficient_scope = c.insufficient_scope;
    counts.rate_limited = c.rate_limited;
    counts.usage_exceeded = c.usage_exceeded;
    counts
}

/// Asks the analytics route (as this admin) for `params`.
async fn ask(state: &Arc<State>, session: &PanelSession, params: AnalyticsParams) -> Result<Vec<BucketView>, ApiError> {
    let ApiJson(answer) = verifications(session.admin(), AxumState(state.clone()), ApiQuery(params)).await?;
    Ok(answer.buckets)
}

/// The chart of `count` buckets of `granularity` up to now, for `params` (its range and
/// granularity are set here).
pub(super) async fn chart(
    state: &Arc<State>,
    session: &PanelSession,
    mut params: AnalyticsParams,
    count: i64,
    granularity: Granularity,
) -> Result<Chart, ApiError> {
    let now = OffsetDateTime::now_utc();
    let first = first_bucket(now, count, granularity);
    params.from = rfc3339(first);
    params.to = rfc3339(now + time::Duration::seconds(1));
    params.granularity = Some(granularity.as_str().to_owned());
    let buckets = ask(state, session, params).await?;
    let mut bars = vec![Outcomes::default(); usize::try_from(count).unwrap_or(0)];
    let span = granularity.seconds();
    for bucket in &buckets {
        let index = (bucket.start.unix_timestamp() - first.unix_timestamp()).div_euclid(span);
        if let Some(bar) = usize::try_from(index).ok().and_then(|i| bars.get_mut(i)) {
            bar.add(Outcomes::of(&counts_of(&bucket.counts)));
        }
    }
    let mut sum = Outcomes::default();
    for bar in &bars {
        sum.add(*bar);
    }
    let what = if granularity == Granularity::Day { "days" } else { "hours" };
    let last = OffsetDateTime::from_unix_timestamp(first.unix_timestamp() + (count - 1) * span).unwrap_or(now);
    Ok(Chart {
        svg: format::outcome_chart(&bars, what),
        first: axis_label(first, granularity),
        last: axis_label(last, granularity),
        sum,
    })
}

/// The top groups over `[from, now]`, each with its verifications by outcome, most first.
async fn top(
    state: &Arc<State>,
    session: &PanelSession,
    app_id: uuid::Uuid,
    from: OffsetDateTime,
    group_by: &str,
) -> Result<Vec<(String, Outcomes)>, ApiError> {
    let params = AnalyticsParams {
        app_id: Some(app_id),
        from: rfc3339(from),
        to: rfc3339(OffsetDateTime::now_utc() + time::Duration::seconds(1)),
        granularity: Some("day".to_owned()),
        group_by: Some(group_by.to_owned()),
        limit: Some(TOP),
        ..AnalyticsParams::default()
    };
    let mut groups: Vec<(String, Outcomes)> = Vec::new();
    for bucket in ask(state, session, params).await? {
        let group = bucket.group.clone().unwrap_or_default();
        let outcomes = Outcomes::of(&counts_of(&bucket.counts));
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, sum)) => sum.add(outcomes),
            None => groups.push((group, outcomes)),
        }
    }
    groups.sort_by(|a, b| b.1.total().cmp(&a.1.total()).then_with(|| a.0.cmp(&b.0)));
    Ok(groups)
}

fn row(label: String, href: Option<String>, o: Outcomes) -> TopRow {
    TopRow {
        label,
        href,
        total: o.total(),
        valid: o.valid,
        rate_limited: o.rate_limited,
        out_of_credits: o.out_of_credits,
        refused: o.refused,
    }
}

/// `GET /admin/apps/{id}/usage?range=24h|7d|30d|90d`.
pub async fn usage(
    session: PanelSession,
    AxumState(state): Shared,
    Path(id): Path<String>,
    Query(filter): Query<UsageFilter>,
) -> Response {
    match usage_page(&state, &session, &id, filter).await {
        Ok(page) => page,
        Err(e) => failed(&e),
    }
}

async fn usage_page(
    state: &Arc<State>,
    session: &PanelSession,
    id: &str,
    filter: UsageFilter,
) -> Result<Response, ApiError> {
    // Fresh numbers: write pending usage counts first.
    state.flush().await;
    let runtime = state.app_by_text(id)?;
    let app_id = runtime.app.id;
    let chosen = filter.range.as_deref().unwrap_or("24h");
    let &(_, range_label, count, granularity) = RANGES.iter().find(|(name, ..)| *name == chosen).unwrap_or(&RANGES[0]);
    let params = AnalyticsParams { app_id: Some(app_id), ..AnalyticsParams::default() };
    let chart = chart(state, session, params, count, granularity).await?;
    let from = first_bucket(OffsetDateTime::now_utc(), count, granularity);

    let mut keys = Vec::new();
    for (key, outcomes) in top(state, session, app_id, from, "key").await? {
        let record = match key.parse() {
            Ok(uuid) => state.store.get(KeyId(uuid)).await?,
            Err(_) => None,
        };
        let label = match &record {
            Some(r) => match &r.name {
                Some(name) => format!("{name} ({})", r.masked()),
                None => r.masked(),
            },
            None => format!("{key} (deleted)"),
        };
        let href = record.map(|_| format!("/admin/keys/{key}/edit"));
        keys.push(row(label, href, outcomes));
    }
    let owners = top(state, session, app_id, from, "owner").await?;
    let tags = top(state, session, app_id, from, "tag").await?;
    let page = UsagePage {
        layout: Layout::signed_in(format!("Usage of {}", runtime.app.name), "apps", session, None),
        app_id: app_id.to_string(),
        app_name: runtime.app.name.clone(),
        ranges: RANGES
            .iter()
            .map(|(name, label, ..)| RangeLink {
                href: format!("/admin/apps/{app_id}/usage?range={name}"),
                label,
                current: *label == range_label,
            })
            .collect(),
        range_label,
        chart,
        keys,
        owners: owners.into_iter().map(|(owner, o)| row(owner, None, o)).collect(),
        tags: tags.into_iter().map(|(tag, o)| row(tag, None, o)).collect(),
    };
    Ok(render(StatusCode::OK, &page))
}
