//! The sharing task: each tick it publishes this instance's calls and new
//! decisions, relays its events, and reads the other instances' calls,
//! the log and their events (one to three round trips each way).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Instant;

use redis::Value;
use tokio::sync::mpsc;

use super::wire::{self, decided_by, LogEntry, SharedCall};
use super::{bulk, items, unreadable, Cluster, ClusterError, Member, ALIVE, TICK};
use crate::api::enforce::{CallState, EnforcedDecision};
use crate::api::operations::CallView;
use crate::events::hub::StreamEvent;
use crate::events::Events;

/// Log entries and events read per tick (the rest on the next ones).
const READ_BATCH: usize = 500;

/// An instance not seen for a day leaves the set of names.
const FORGET_INSTANCE_MS: i64 = 86_400_000;

/// How long an instance's place in the log is kept while it is away (an
/// instance back after longer reads the log from its start again:
/// labels and list additions apply once however often they are read).
const CURSOR_TTL_SECS: u64 = 30 * 86_400;

/// What the task remembers between ticks.
struct Tick {
    /// The calls last published, as sent, and their version.
    published: String,
    version: u64,
    /// The decisions shared of calls still in progress, by id (shared
    /// again as ended when their call leaves the list).
    decisions: HashMap<String, EnforcedDecision>,
    /// Decisions offered by the pipeline, not yet sent.
    unsent: Vec<EnforcedDecision>,
    /// How far the log and the events stream were read (`None`: not yet
    /// known; the log's is kept in the store across restarts).
    log_cursor: Option<String>,
    events_cursor: Option<String>,
    /// This instance's events, for the relay.
    relay: Option<mpsc::Receiver<StreamEvent>>,
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The task: until `member` is dropped.
pub(super) async fn run(cluster: Arc<Cluster>, member: Weak<dyn Member>, events: Option<Events>) {
    let mut tick = Tick {
        published: String::new(),
        version: 0,
        decisions: HashMap::new(),
        unsent: Vec::new(),
        log_cursor: None,
        events_cursor: None,
        relay: None,
    };
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    // Until the first connection, nothing is tried (the store's own task
    // reports it unreachable).
    let mut connected_once = false;
    loop {
        every.tick().await;
        let Some(m) = member.upgrade() else {
            return;
        };
        connected_once |= cluster.redis.is_up();
        if !connected_once {
            continue;
        }
        if let (None, Some(ev)) = (&tick.relay, &events) {
            tick.relay = ev.relay_out().ok();
        }
        let outcome = match publish(&cluster, &mut tick, m.calls_to_share()).await {
            Ok(()) => read(&cluster, &mut tick, &m, events.as_ref()).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("cluster: sharing with the other instances again");
            }
            Ok(()) => {}
            Err(e) => {
                cluster.metrics.tick_failures.fetch_add(1, Relaxed);
                if !failing {
                    failing = true;
                    tracing::warn!(error = %e, "cluster: cannot share with the other instances; the console lists this instance's calls only");
                }
            }
        }
    }
}

/// Publishes this instance's calls (when they changed; renews them
/// otherwise), its name, the decisions the pipeline made since the last
/// tick and those of calls that ended, and its events since then.
async fn publish(
    cluster: &Cluster,
    tick: &mut Tick,
    calls: Vec<CallView>,
) -> Result<(), ClusterError> {
    let keys = &cluster.keys;
    let me = cluster.instance.as_str();
    let ttl_ms = u64::try_from(ALIVE.as_millis()).unwrap_or(u64::MAX);
    let shared: Vec<SharedCall> = calls.iter().map(SharedCall::of).collect();
    let json = serde_json::to_string(&shared).map_err(|e| unreadable("calls", e))?;
    let mut pipe = redis::pipe();
    if json != tick.published {
        tick.version += 1;
        pipe.cmd("SET")
            .arg(keys.calls(me))
            .arg(&json)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("SET")
            .arg(keys.version(me))
            .arg(tick.version)
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
    } else {
        pipe.cmd("PEXPIRE")
            .arg(keys.calls(me))
            .arg(ttl_ms)
            .ignore()
            .cmd("PEXPIRE")
            .arg(keys.version(me))
            .arg(ttl_ms)
            .ignore();
    }
    // The previous owner of this name, to tell two instances that share
    // one (the only reply of this pipeline that is read).
    pipe.cmd("SET")
        .arg(keys.owner(me))
        .arg(&cluster.incarnation)
        .arg("PX")
        .arg(ttl_ms)
        .arg("GET");
    let now = unix_ms();
    pipe.cmd("ZADD")
        .arg(keys.instances())
        .arg(now)
        .arg(me)
        .ignore()
        // Names gone a day (pods renamed at each restart) are forgotten.
        .cmd("ZREMRANGEBYSCORE")
        .arg(keys.instances())
        .arg("-inf")
        .arg(now - FORGET_INSTANCE_MS)
        .ignore();
    // Decisions: each once as the pipeline offered it (as ended when its
    // call is already gone, a refused one), and once more as ended when
    // its call leaves the list. Kept until sent.
    let live: HashSet<&str> = shared
        .iter()
        .filter_map(|c| c.decision.as_ref()?.id.as_deref())
        .collect();
    tick.unsent.extend(cluster.offered());
    // While the store does not take them, the oldest go (counted).
    if let Some(over) = tick.unsent.len().checked_sub(super::PENDING_MAX) {
        tick.unsent.drain(..over);
        cluster
            .metrics
            .decisions_dropped
            .fetch_add(over as u64, Relaxed);
    }
    for d in &tick.unsent {
        let ended = !live.contains(d.decision_id.as_str());
        put_decision(&mut pipe, cluster, d, ended);
    }
    let ended: Vec<String> = tick
        .decisions
        .keys()
        .filter(|id| !live.contains(id.as_str()))
        .cloned()
        .collect();
    for id in &ended {
        if let Some(d) = tick.decisions.get(id) {
            put_decision(&mut pipe, cluster, d, true);
        }
    }
    let mut relayed = 0u64;
    if let Some(rx) = &mut tick.relay {
        loop {
            match rx.try_recv() {
                Ok(e) if e.origin.is_none() => {
                    relayed += 1;
                    pipe.cmd("XADD")
                        .arg(keys.events())
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(wire::EVENTS_MAX)
                        .arg("*")
                        .arg("from")
                        .arg(me)
                        .arg("id")
                        .arg(&*e.id)
                        .arg("kind")
                        .arg(&*e.kind)
                        .arg("data")
                        .arg(&*e.data)
                        .ignore();
                    if relayed >= READ_BATCH as u64 {
                        break;
                    }
                }
                Ok(_) => {}
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    // Cut for falling behind: subscribe again next tick.
                    cluster.metrics.relay_cut.fetch_add(1, Relaxed);
                    tracing::warn!("cluster: the event relay fell behind and lost events");
                    tick.relay = None;
                    break;
                }
            }
        }
    }
    let sent = cluster.redis.pipeline(&pipe).await;
    let replies = match sent {
        Ok(r) => r,
        Err(e) => {
            // Publish everything again next tick.
            tick.published.clear();
            return Err(e.into());
        }
    };
    if let Some(other) = replies
        .first()
        .and_then(bulk)
        .filter(|o| *o != cluster.incarnation.as_bytes())
    {
        let before = cluster.metrics.name_conflicts.fetch_add(1, Relaxed);
        if before == 0 {
            tracing::error!(instance = me, other = %String::from_utf8_lossy(other), "cluster: another running instance uses this instance's name: give each its own [instance] name (their calls, decisions and labels mix up)");
        }
    }
    cluster.metrics.events_out.fetch_add(relayed, Relaxed);
    for id in &ended {
        tick.decisions.remove(id);
    }
    for d in std::mem::take(&mut tick.unsent) {
        if live.contains(d.decision_id.as_str()) {
            tick.decisions.insert(d.decision_id.clone(), d);
        }
    }
    tick.published = json;
    Ok(())
}

/// Shares `d` under its decision id, and as its call's latest; `ended`:
/// its call is no longer in progress.
fn put_decision(pipe: &mut redis::Pipeline, cluster: &Cluster, d: &EnforcedDecision, ended: bool) {
    let state = if ended { CallState::Ended } else { d.state };
    let json = serde_json::to_string(&EnforcedDecision { state, ..d.clone() });
    if let Ok(json) = json {
        pipe.cmd("SET")
            .arg(cluster.keys.decision(&d.decision_id))
            .arg(json)
            .arg("EX")
            .arg(wire::DECISION_TTL_SECS)
            .ignore()
            .cmd("SET")
            .arg(cluster.keys.call(&d.call_id))
            .arg(&d.decision_id)
            .arg("EX")
            .arg(wire::DECISION_TTL_SECS)
            .ignore();
    }
}

/// A stream entry: its id, and its fields (field → value).
type Entry = (String, HashMap<Vec<u8>, Vec<u8>>);

/// Stream entries of an `XRANGE` reply.
fn entries(v: &Value) -> Vec<Entry> {
    items(v)
        .iter()
        .filter_map(|e| {
            let [id, fields] = items(e) else {
                return None;
            };
            let id = String::from_utf8_lossy(bulk(id)?).into_owned();
            let map = match fields {
                Value::Map(pairs) => pairs
                    .iter()
                    .filter_map(|(k, v)| Some((bulk(k)?.to_vec(), bulk(v)?.to_vec())))
                    .collect(),
                other => items(other)
                    .chunks(2)
                    .filter_map(|kv| match kv {
                        [k, v] => Some((bulk(k)?.to_vec(), bulk(v)?.to_vec())),
                        _ => None,
                    })
                    .collect(),
            };
            Some((id, map))
        })
        .collect()
}

/// The range after `cursor` (exclusive), or from the start.
fn after(cursor: Option<&str>) -> String {
    cursor.map_or_else(|| "-".to_owned(), |c| format!("({c}"))
}

/// Reads the live instances and their calls, the log and the events.
async fn read(
    cluster: &Cluster,
    tick: &mut Tick,
    member: &Arc<dyn Member>,
    events: Option<&Events>,
) -> Result<(), ClusterError> {
    let keys = &cluster.keys;
    let me = cluster.instance.as_str();
    let alive_since = unix_ms() - i64::try_from(ALIVE.as_millis()).unwrap_or(0);
    if tick.log_cursor.is_none() {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(keys.cursor(me));
        let replies = cluster.redis.pipeline(&pipe).await?;
        tick.log_cursor = Some(replies.first().and_then(bulk).map_or_else(
            || "0-0".to_owned(),
            |b| String::from_utf8_lossy(b).into_owned(),
        ));
    }
    let mut pipe = redis::pipe();
    pipe.cmd("ZRANGEBYSCORE")
        .arg(keys.instances())
        .arg(alive_since)
        .arg("+inf")
        .cmd("XRANGE")
        .arg(keys.log())
        .arg(after(tick.log_cursor.as_deref()))
        .arg("+")
        .arg("COUNT")
        .arg(READ_BATCH);
    match &tick.events_cursor {
        // From now on: the relay is live only.
        None => pipe
            .cmd("XREVRANGE")
            .arg(keys.events())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1),
        Some(c) => pipe
            .cmd("XRANGE")
            .arg(keys.events())
            .arg(after(Some(c)))
            .arg("+")
            .arg("COUNT")
            .arg(READ_BATCH),
    };
    let replies = cluster.redis.pipeline(&pipe).await?;
    let [names, log, relayed] = replies.as_slice() else {
        return Err(unreadable("replies", "not three"));
    };
    let names: Vec<String> = items(names)
        .iter()
        .filter_map(bulk)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .filter(|n| n != me)
        .collect();
    read_calls(cluster, &names).await?;
    apply_log(cluster, tick, member, entries(log)).await?;
    let relayed = entries(relayed);
    match &tick.events_cursor {
        None => {
            tick.events_cursor = Some(
                relayed
                    .first()
                    .map_or_else(|| "0-0".to_owned(), |(id, _)| id.clone()),
            );
        }
        Some(_) => {
            if let Some((id, _)) = relayed.last() {
                tick.events_cursor = Some(id.clone());
            }
            let batch: Vec<StreamEvent> = relayed
                .into_iter()
                .filter_map(|(_, f)| {
                    let from = f.get(b"from".as_slice())?;
                    if from.as_slice() == me.as_bytes() {
                        return None;
                    }
                    let text = |k: &[u8]| f.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
                    Some(StreamEvent {
                        seq: 0,
                        id: text(b"id")?.into(),
                        kind: text(b"kind")?.into(),
                        data: text(b"data")?.into(),
                        origin: Some(String::from_utf8_lossy(from).into_owned().into()),
                    })
                })
                .collect();
            if let (Some(ev), false) = (events, batch.is_empty()) {
                cluster
                    .metrics
                    .events_in
                    .fetch_add(batch.len() as u64, Relaxed);
                ev.relay_in(&batch);
            }
        }
    }
    Ok(())
}

/// Reads the calls of the instances in `names` whose version changed.
async fn read_calls(cluster: &Cluster, names: &[String]) -> Result<(), ClusterError> {
    let keys = &cluster.keys;
    let mut versions = Vec::new();
    if !names.is_empty() {
        let mut pipe = redis::pipe();
        for n in names {
            pipe.cmd("GET").arg(keys.version(n));
        }
        let replies = cluster.redis.pipeline(&pipe).await?;
        versions = replies
            .iter()
            .map(|v| bulk(v).map(|b| String::from_utf8_lossy(b).into_owned()))
            .collect();
    }
    let changed: Vec<(&String, String)> = {
        let remote = cluster.lock();
        names
            .iter()
            .zip(versions)
            .filter_map(|(n, v)| {
                let v = v?;
                let same = remote.instances.get(n).is_some_and(|(old, _)| *old == v);
                (!same).then_some((n, v))
            })
            .collect()
    };
    let mut read = Vec::new();
    if !changed.is_empty() {
        let mut pipe = redis::pipe();
        for (n, _) in &changed {
            pipe.cmd("GET").arg(keys.calls(n));
        }
        let replies = cluster.redis.pipeline(&pipe).await?;
        for ((n, v), reply) in changed.into_iter().zip(replies) {
            // One instance's unreadable list (a newer version's?) must not
            // hide the others'.
            let calls: Vec<SharedCall> = match bulk(&reply).map(serde_json::from_slice) {
                Some(Ok(calls)) => calls,
                Some(Err(e)) => {
                    tracing::warn!(instance = %n, error = %e, "cluster: another instance's calls are unreadable; not listed");
                    Vec::new()
                }
                None => Vec::new(),
            };
            read.push((n.clone(), v, calls));
        }
    }
    let live: HashSet<&String> = names.iter().collect();
    let mut remote = cluster.lock();
    remote.instances.retain(|n, _| live.contains(n));
    for (n, v, calls) in read {
        remote.instances.insert(n, (v, calls));
    }
    remote.read_at = Some(Instant::now());
    Ok(())
}

/// Applies the log's new entries: labels on this instance's decisions
/// into its audit trail, other instances' list additions to its lists.
async fn apply_log(
    cluster: &Cluster,
    tick: &mut Tick,
    member: &Arc<dyn Member>,
    log: Vec<Entry>,
) -> Result<(), ClusterError> {
    let me = cluster.instance.as_str();
    let Some((last, _)) = log.last() else {
        return Ok(());
    };
    let last = last.clone();
    for (id, fields) in log {
        let (Some(kind), Some(body)) = (
            fields.get(b"kind".as_slice()),
            fields.get(b"body".as_slice()),
        ) else {
            continue;
        };
        let Some(entry) = LogEntry::parse(kind, body) else {
            tracing::debug!(entry = %id, "cluster: log entry not understood; skipped");
            continue;
        };
        if entry.from_instance() == me {
            continue;
        }
        match entry {
            LogEntry::Label(label) if decided_by(&label.decision_id, me) => {
                member.import_label(&label);
                cluster.metrics.imported_labels.fetch_add(1, Relaxed);
            }
            LogEntry::Label(_) => {}
            LogEntry::List(change) => {
                let m = member.clone();
                let applied =
                    tokio::task::spawn_blocking(crate::logs::in_current_span(move || {
                        m.import_list_change(&change)
                    }))
                    .await;
                if applied.is_ok() {
                    cluster.metrics.imported_list_changes.fetch_add(1, Relaxed);
                }
            }
        }
    }
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(cluster.keys.cursor(me))
        .arg(&last)
        .arg("EX")
        .arg(CURSOR_TTL_SECS)
        .ignore();
    cluster.redis.pipeline(&pipe).await?;
    tick.log_cursor = Some(last);
    Ok(())
}
