//! What is due after an evaluation: per target, which groups changed or are due for a
//! repeat (webhook, e-mail) or whether Alertmanager needs its re-send, and the payloads ready
//! to send. Reads the database; never waits on a network.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};
use sqlx::{FromRow, SqlitePool};

use super::store::{self, Group, Queued, Target};
use super::target::Kind;
use crate::alerts::fingerprint;
use crate::alerts::rules::{Matchers, Severity};

/// One alert as notifications describe it.
#[derive(Debug, Clone, FromRow)]
pub struct AlertRow {
    pub id: i64,
    pub rule_id: Option<i64>,
    pub rule_name: String,
    pub severity: String,
    pub fingerprint: String,
    pub host_name: String,
    pub vm_uuid: Option<String>,
    pub vm_name: Option<String>,
    pub summary: String,
    pub pending_since: i64,
    pub firing_since: Option<i64>,
    pub ended_at: Option<i64>,
    pub ack_at: Option<i64>,
}

const ALERT_COLUMNS: &str = "id, rule_id, rule_name, severity, fingerprint, host_name, vm_uuid,
    vm_name, summary, pending_since, firing_since, ended_at, ack_at";

pub async fn firing_alerts(pool: &SqlitePool) -> sqlx::Result<Vec<AlertRow>> {
    sqlx::query_as(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE state = 'firing' ORDER BY rule_name, host_name, vm_name, id"
    ))
    .fetch_all(pool)
    .await
}

/// The latest resolved alert of each of these fingerprints.
pub async fn resolved_alerts(pool: &SqlitePool, fps: &[String]) -> sqlx::Result<Vec<AlertRow>> {
    if fps.is_empty() {
        return Ok(Vec::new());
    }
    let list = serde_json::to_string(fps).unwrap_or_else(|_| "[]".into());
    let rows: Vec<AlertRow> = sqlx::query_as(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts
         WHERE state = 'resolved' AND fingerprint IN (SELECT value FROM json_each(?))
         ORDER BY ended_at DESC, id DESC"
    ))
    .bind(list)
    .fetch_all(pool)
    .await?;
    let mut seen = BTreeSet::new();
    Ok(rows.into_iter().filter(|r| seen.insert(r.fingerprint.clone())).collect())
}

impl AlertRow {
    fn severity(&self) -> Severity {
        Severity::parse(&self.severity).unwrap_or(Severity::Critical)
    }

    fn since(&self) -> i64 {
        self.firing_since.unwrap_or(self.pending_since)
    }

    fn group_key(&self) -> String {
        group_key(&self.rule_name, &self.host_name)
    }

    fn silenced(&self, silences: &[Matchers]) -> bool {
        silences
            .iter()
            .any(|m| m.matches(&self.rule_name, &self.host_name, self.vm_name.as_deref()))
    }
}

/// A group's key: its labels as Alertmanager writes a group key.
pub fn group_key(rule: &str, host: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!("{{alertname={},host={}}}", q(rule), q(host))
}

/// The one group of an Alertmanager target (Alertmanager groups by itself).
pub const ALERTMANAGER_GROUP: &str = "alertmanager";

/// Milliseconds as RFC 3339 in UTC, always with milliseconds, so that the strings compare as
/// the times do.
pub fn rfc3339(ms: i64) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".into())
}

/// What planning needs besides the database.
pub struct Context<'a> {
    pub now: i64,
    /// Where links point: `public_url`, or Rocket's address.
    pub base: &'a str,
    pub resend_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
    /// Each rule's condition in words, by rule id.
    pub descriptions: &'a HashMap<i64, String>,
}

impl Context<'_> {
    fn link(&self, a: &AlertRow) -> String {
        match &a.vm_uuid {
            Some(uuid) => format!("{}/vms/{}/{}", self.base, a.host_name, uuid),
            None => format!("{}/alerts/{}", self.base, a.id),
        }
    }

    fn labels(&self, a: &AlertRow) -> BTreeMap<&'static str, String> {
        let mut l = BTreeMap::new();
        l.insert("alertname", a.rule_name.clone());
        l.insert("severity", a.severity.clone());
        l.insert("host", a.host_name.clone());
        if let Some(uuid) = &a.vm_uuid {
            l.insert("uuid", uuid.clone());
            l.insert("vm", a.vm_name.clone().unwrap_or_else(|| uuid.clone()));
        }
        l
    }

    fn annotations(&self, a: &AlertRow) -> BTreeMap<&'static str, String> {
        let mut m = BTreeMap::new();
        m.insert("summary", a.summary.clone());
        let description = a
            .rule_id
            .and_then(|id| self.descriptions.get(&id).cloned())
            .unwrap_or_else(|| a.rule_name.clone());
        m.insert("description", description);
        m
    }
}

/// The fingerprint an Alertmanager payload's alert stands for (from its labels).
fn fingerprint_of_labels(labels: &Value) -> Option<String> {
    let name = labels.get("alertname")?.as_str()?;
    let host = labels.get("host")?.as_str()?;
    let subject = match labels.get("uuid").and_then(Value::as_str) {
        Some(uuid) => format!("vm:{host}/{uuid}"),
        None => format!("host:{host}"),
    };
    Some(fingerprint(name, &subject))
}

/// The alerts a (superseded) payload was to report as resolved, so the newer one still does.
pub fn resolved_in(kind: &Kind, created_at: i64, payload: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<Value>(payload) else { return Vec::new() };
    let strings = |a: Option<&Value>| -> Vec<String> {
        a.and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    match kind {
        Kind::Email(_) => strings(v.get("resolved")),
        Kind::Webhook { .. } => v
            .get("alerts")
            .and_then(Value::as_array)
            .map(|alerts| {
                alerts
                    .iter()
                    .filter(|a| a.get("status").and_then(Value::as_str) == Some("resolved"))
                    .filter_map(|a| a.get("fingerprint")?.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        Kind::Alertmanager { .. } => {
            let at = rfc3339(created_at);
            v.as_array()
                .map(|alerts| {
                    alerts
                        .iter()
                        .filter(|a| {
                            a.get("endsAt")
                                .and_then(Value::as_str)
                                .is_some_and(|e| e <= at.as_str())
                        })
                        .filter_map(|a| fingerprint_of_labels(a.get("labels")?))
                        .collect()
                })
                .unwrap_or_default()
        }
    }
}

/// Plans one target: the notifications to queue now.
pub async fn plan_target(
    pool: &SqlitePool,
    ctx: &Context<'_>,
    target: &Target,
    firing: &[AlertRow],
    silences: &[Matchers],
) -> sqlx::Result<Vec<Queued>> {
    let groups = store::groups(pool, target.id).await?;
    let eligible: Vec<&AlertRow> =
        firing.iter().filter(|a| a.severity() >= target.min_severity).collect();
    let (held, live): (Vec<&AlertRow>, Vec<&AlertRow>) =
        eligible.into_iter().partition(|a| a.silenced(silences));
    let held: BTreeSet<&str> = held.iter().map(|a| a.fingerprint.as_str()).collect();
    let mut out = Vec::new();
    match &target.kind {
        Kind::Alertmanager { .. } => {
            let prev = groups.get(ALERTMANAGER_GROUP).cloned().unwrap_or_default();
            if let Some(q) =
                plan_group(pool, ctx, target, ALERTMANAGER_GROUP, &live, &held, &prev).await?
            {
                out.push(q);
            }
        }
        Kind::Webhook { .. } | Kind::Email(_) => {
            let mut by_key: BTreeMap<String, Vec<&AlertRow>> = BTreeMap::new();
            for a in &live {
                by_key.entry(a.group_key()).or_default().push(a);
            }
            for (key, g) in &groups {
                if !g.firing.is_empty() {
                    by_key.entry(key.clone()).or_default();
                }
            }
            for (key, alerts) in by_key {
                let prev = groups.get(&key).cloned().unwrap_or_default();
                if let Some(q) = plan_group(pool, ctx, target, &key, &alerts, &held, &prev).await? {
                    out.push(q);
                }
            }
        }
    }
    Ok(out)
}

async fn plan_group(
    pool: &SqlitePool,
    ctx: &Context<'_>,
    target: &Target,
    key: &str,
    live: &[&AlertRow],
    held: &BTreeSet<&str>,
    prev: &Group,
) -> sqlx::Result<Option<Queued>> {
    let cur: BTreeSet<&str> = live.iter().map(|a| a.fingerprint.as_str()).collect();
    let prev_set: BTreeSet<&str> = prev.firing.iter().map(String::as_str).collect();
    // Silenced alerts sent before stay in the group's set: neither sent again nor resolved.
    let prev_live: BTreeSet<&str> = prev_set.difference(held).copied().collect();
    let mut resolved: BTreeSet<String> =
        prev_live.difference(&cur).map(|s| s.to_string()).collect();
    let changed = cur != prev_live;
    let since_last = prev.last_sent_at.map(|t| ctx.now - t);
    let due = match &target.kind {
        Kind::Alertmanager { .. } => {
            (changed || since_last.is_none_or(|s| s >= ctx.resend_ms))
                && !(cur.is_empty() && resolved.is_empty())
        }
        _ if changed => {
            // A group that was quiet sends at once; a change to a group that is already
            // notified waits for the group interval.
            prev_live.is_empty() || since_last.is_none_or(|s| s >= ctx.group_interval_ms)
        }
        _ => {
            !cur.is_empty()
                && live.iter().any(|a| a.ack_at.is_none())
                && since_last.is_none_or(|s| s >= ctx.repeat_interval_ms)
        }
    };
    if !due {
        return Ok(None);
    }
    for (created_at, payload) in store::queued_payloads(pool, target.id, key).await? {
        for fp in resolved_in(&target.kind, created_at, &payload) {
            if !cur.contains(fp.as_str()) && !held.contains(fp.as_str()) {
                resolved.insert(fp);
            }
        }
    }
    let resolved_list: Vec<String> = resolved.into_iter().collect();
    let resolved_rows: Vec<AlertRow> = resolved_alerts(pool, &resolved_list)
        .await?
        .into_iter()
        .filter(|a| a.severity() >= target.min_severity)
        .collect();
    let mut group_firing: Vec<String> = cur.iter().map(|s| s.to_string()).collect();
    group_firing.extend(prev_set.intersection(held).map(|s| s.to_string()));
    group_firing.sort();
    group_firing.dedup();
    if live.is_empty() && resolved_rows.is_empty() {
        // Nothing to say (the resolved alerts are gone from the history): just remember.
        let mut conn = pool.acquire().await?;
        store::write_group(&mut conn, target.id, key, &group_firing, None).await?;
        return Ok(None);
    }
    let resolved_refs: Vec<&AlertRow> = resolved_rows.iter().collect();
    let payload = match &target.kind {
        Kind::Alertmanager { .. } => alertmanager_payload(ctx, live, &resolved_refs),
        Kind::Webhook { .. } => webhook_payload(ctx, &target.name, key, live, &resolved_refs),
        Kind::Email(_) => email_payload(ctx, live, &resolved_refs),
    };
    Ok(Some(Queued {
        target_id: target.id,
        group_key: key.to_string(),
        firing: !live.is_empty(),
        alert_count: live.len() + resolved_refs.len(),
        payload: payload.to_string(),
        group_firing,
    }))
}

/// Alertmanager's v2 `postableAlerts`: firing alerts end 4 re-sends from now (Alertmanager
/// resolves them itself if vmdeck goes quiet; at least 4 evaluation ticks), resolved ones when they ended.
pub fn alertmanager_payload(
    ctx: &Context<'_>,
    firing: &[&AlertRow],
    resolved: &[&AlertRow],
) -> Value {
    let item = |a: &AlertRow, ends: i64| {
        json!({
            "labels": ctx.labels(a),
            "annotations": ctx.annotations(a),
            "startsAt": rfc3339(a.since()),
            "endsAt": rfc3339(ends),
            "generatorURL": ctx.link(a),
        })
    };
    // Evaluation (which re-sends) runs at least every TICK, whatever the resend setting.
    let every = ctx.resend_ms.max(i64::try_from(crate::alerts::TICK.as_millis()).unwrap_or(30_000));
    let ends = ctx.now + 4 * every;
    Value::Array(
        firing
            .iter()
            .map(|a| item(a, ends))
            .chain(resolved.iter().map(|a| item(a, a.ended_at.unwrap_or(ctx.now))))
            .collect(),
    )
}

/// Alertmanager's webhook JSON, version 4.
pub fn webhook_payload(
    ctx: &Context<'_>,
    receiver: &str,
    key: &str,
    firing: &[&AlertRow],
    resolved: &[&AlertRow],
) -> Value {
    let all: Vec<(&AlertRow, bool)> =
        firing.iter().map(|a| (*a, false)).chain(resolved.iter().map(|a| (*a, true))).collect();
    let common = |maps: Vec<BTreeMap<&'static str, String>>| -> BTreeMap<&'static str, String> {
        let mut it = maps.into_iter();
        let mut common = it.next().unwrap_or_default();
        for m in it {
            common.retain(|k, v| m.get(k) == Some(v));
        }
        common
    };
    let common_labels = common(all.iter().map(|(a, _)| ctx.labels(a)).collect());
    let common_annotations = common(all.iter().map(|(a, _)| ctx.annotations(a)).collect());
    let mut group_labels = BTreeMap::new();
    if let Some((a, _)) = all.first() {
        group_labels.insert("alertname", a.rule_name.clone());
        group_labels.insert("host", a.host_name.clone());
    }
    let alerts: Vec<Value> = all
        .iter()
        .map(|(a, is_resolved)| {
            json!({
                "status": if *is_resolved { "resolved" } else { "firing" },
                "labels": ctx.labels(a),
                "annotations": ctx.annotations(a),
                "startsAt": rfc3339(a.since()),
                // Alertmanager writes the zero time for alerts without an end.
                "endsAt": if *is_resolved { rfc3339(a.ended_at.unwrap_or(ctx.now)) } else { "0001-01-01T00:00:00Z".to_string() },
                "generatorURL": ctx.link(a),
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{key}"),
        "truncatedAlerts": 0,
        "status": if firing.is_empty() { "resolved" } else { "firing" },
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": common_labels,
        "commonAnnotations": common_annotations,
        "externalURL": ctx.base,
        "alerts": alerts,
    })
}

/// An e-mail's subject and plain-text body (and, for superseding, what it resolved).
pub fn email_payload(ctx: &Context<'_>, firing: &[&AlertRow], resolved: &[&AlertRow]) -> Value {
    let first = firing.first().or(resolved.first());
    let (rule, host) =
        first.map(|a| (a.rule_name.as_str(), a.host_name.as_str())).unwrap_or_default();
    let subject = if firing.is_empty() {
        format!("[RESOLVED] {rule} on {host}")
    } else {
        format!("[FIRING:{}] {rule} on {host}", firing.len())
    };
    let time = |ms: i64| crate::web::format::absolute(ms);
    let mut body = String::new();
    let describe = |body: &mut String, a: &AlertRow| {
        body.push_str(&format!("- {}\n", a.summary));
        if let Some(uuid) = &a.vm_uuid {
            body.push_str(&format!(
                "  VM: {} ({uuid})\n",
                a.vm_name.as_deref().unwrap_or(uuid.as_str())
            ));
        }
        body.push_str(&format!("  Host: {}\n", a.host_name));
        body.push_str(&format!("  Severity: {}\n", a.severity));
        body.push_str(&format!("  Since: {}\n", time(a.since())));
        if let Some(end) = a.ended_at {
            body.push_str(&format!("  Resolved: {}\n", time(end)));
        }
        body.push_str(&format!("  Link: {}\n\n", ctx.link(a)));
    };
    if !firing.is_empty() {
        body.push_str(&format!("Firing ({}):\n\n", firing.len()));
        for a in firing {
            describe(&mut body, a);
        }
    }
    if !resolved.is_empty() {
        body.push_str(&format!("Resolved ({}):\n\n", resolved.len()));
        for a in resolved {
            describe(&mut body, a);
        }
    }
    if let Some(d) = first.and_then(|a| ctx.annotations(a).remove("description")) {
        body.push_str(&format!("Rule {rule}: {d}\n"));
    }
    body.push_str(&format!("-- \nvmdeck, {}\n", ctx.base));
    json!({
        "subject": subject,
        "body": body,
        "resolved": resolved.iter().map(|a| a.fingerprint.clone()).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_with_milliseconds_and_sort_as_strings() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert!(rfc3339(999) < rfc3339(1_000));
    }

    #[test]
    fn group_keys_quote_their_labels() {
        assert_eq!(group_key("VM down", "lab"), r#"{alertname="VM down",host="lab"}"#);
    }

    #[test]
    fn superseded_alertmanager_payloads_give_back_their_resolved_alerts() {
        let p = json!([
            {"labels": {"alertname": "down", "host": "lab", "uuid": "u1"}, "endsAt": rfc3339(500)},
            {"labels": {"alertname": "down", "host": "lab", "uuid": "u2"}, "endsAt": rfc3339(5_000)},
        ]);
        let kind = Kind::Alertmanager { url: "http://am".into() };
        assert_eq!(
            resolved_in(&kind, 1_000, &p.to_string()),
            vec![fingerprint("down", "vm:lab/u1")]
        );
    }
}
