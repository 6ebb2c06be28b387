//! What the agent remembers of events for its API: the recent user events
//! (`/v1/event/list`) and a live stream of member events with their reasons and times
//! (`/v1/grapevine/events`, `grapevine monitor`).

use grapevine::{Event, Member, Node};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, watch};

/// User events kept for `/v1/event/list` (Consul keeps 256 too).
const USER_EVENTS_KEPT: usize = 256;

/// A user event as the agent received it.
#[derive(Clone, Debug, Serialize)]
pub struct UserEventView {
    /// The event's id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its payload.
    #[serde(skip)]
    pub payload: Vec<u8>,
    /// The member that raised it.
    pub origin: String,
    /// Who it was for (Consul's node, service and tag filters).
    #[serde(skip)]
    pub filters: super::event_filters::Filters,
    /// The order in which this agent received it (Consul's `LTime` slot), from 1.
    pub ltime: u64,
    /// When it arrived, seconds since the UNIX epoch.
    pub time: f64,
}

/// One event of the stream: a member changed state, a user event arrived, or this node
/// refuted an accusation.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StreamEvent {
    /// `member-join`, `member-suspect`, `member-alive`, `member-failed`, `member-leave`,
    /// `member-update`, `member-reap`, `refute` or `user`.
    pub event: &'static str,
    /// Why: joined, suspected, refuted, failed, left, updated, reaped, or the user event's
    /// name for `user`.
    pub reason: String,
    /// The member concerned (this node for `refute`, the origin for `user`).
    pub name: String,
    /// Its address, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Its incarnation as now known, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u32>,
    /// For a suspicion: who accused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuser: Option<String>,
    /// For a suspicion or failure: whether this node's own probe or timer decided it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<bool>,
    /// When this agent saw it, seconds since the UNIX epoch.
    pub time: f64,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// An event's kind, as the stream and the handlers name it (`GRAPEVINE_EVENT`).
pub fn kind(e: &Event) -> Option<&'static str> {
    Some(match e {
        Event::Joined { .. } => "member-join",
        Event::Suspected { .. } => "member-suspect",
        Event::Alive { .. } => "member-alive",
        Event::Failed { .. } => "member-failed",
        Event::Left { .. } => "member-leave",
        Event::Updated { .. } => "member-update",
        Event::Reaped { .. } => "member-reap",
        Event::Refuted { .. } => "refute",
        Event::User { .. } => "user",
        _ => return None,
    })
}

impl StreamEvent {
    /// The stream's view of a node event, if it belongs in the stream.
    pub fn of(e: &Event, me: &str) -> Option<StreamEvent> {
        let event = kind(e)?;
        let bare = |reason: &str, name: &str| StreamEvent {
            event,
            reason: reason.to_string(),
            name: name.to_string(),
            addr: None,
            incarnation: None,
            accuser: None,
            local: None,
            time: unix_now(),
        };
        let about = |reason: &str, m: &Member| StreamEvent {
            addr: Some(m.addr.to_string()),
            incarnation: Some(m.incarnation),
            ..bare(reason, m.name.as_str())
        };
        Some(match e {
            Event::Joined { member } => about("joined", member),
            Event::Suspected {
                member,
                accuser,
                local,
            } => StreamEvent {
                accuser: Some(accuser.as_str().to_string()),
                local: Some(*local),
                ..about("suspected", member)
            },
            Event::Alive { member } => about("refuted", member),
            Event::Failed { member, local } => StreamEvent {
                local: Some(*local),
                ..about("failed", member)
            },
            Event::Left { member } => about("left", member),
            Event::Updated { member } => about("updated", member),
            Event::Reaped { name, .. } => bare("reaped", name.as_str()),
            Event::Refuted { incarnation, .. } => StreamEvent {
                incarnation: Some(*incarnation),
                local: Some(true),
                ..bare("refuted", me)
            },
            Event::User { name, origin, .. } => bare(name, origin.as_str()),
            _ => return None,
        })
    }
}

/// The agent's memory of events.
pub struct EventLog {
    user: Mutex<VecDeque<UserEventView>>,
    /// When each member entered its present state, as this agent saw it (seconds since the
    /// UNIX epoch); members not listed have been as they are since the agent started.
    since: Mutex<std::collections::HashMap<String, f64>>,
    /// User events received so far: the blocking index of `/v1/event/list`.
    user_index: watch::Sender<u64>,
    stream: broadcast::Sender<StreamEvent>,
}

impl EventLog {
    /// Starts recording `node`'s events; user events filtered to other nodes or services
    /// than `registry`'s are not recorded.
    pub fn spawn(node: Node, registry: super::services::Registry) -> Arc<EventLog> {
        let (stream, _) = broadcast::channel(1024);
        let log = Arc::new(EventLog {
            user: Mutex::new(VecDeque::new()),
            since: Mutex::default(),
            user_index: watch::channel(0).0,
            stream,
        });
        let recorder = log.clone();
        tokio::spawn(async move {
            let me = node.name().as_str().to_string();
            let mut events = node.events();
            while let Some(e) = events.next().await {
                recorder.record(&e, &me, &registry);
            }
        });
        log
    }

    fn record(&self, e: &Event, me: &str, registry: &super::services::Registry) {
        if let Some(s) = StreamEvent::of(e, me) {
            tracing::info!(
                event = s.event,
                member = %s.name,
                reason = %s.reason,
                incarnation = ?s.incarnation,
                accuser = ?s.accuser,
                local = ?s.local,
                "member event"
            );
            if s.event.starts_with("member-") {
                if let Ok(mut since) = self.since.lock() {
                    if s.event == "member-reap" {
                        since.remove(&s.name);
                    } else {
                        since.insert(s.name.clone(), s.time);
                    }
                }
            }
            // No subscriber is not an error.
            let _ = self.stream.send(s);
        }
        if let Event::User {
            id,
            origin,
            name,
            payload,
        } = e
        {
            let (filters, payload) = super::event_filters::unwrap(payload);
            if !filters.admits(me, &registry.local()) {
                return;
            }
            let ltime = *self.user_index.borrow() + 1;
            if let Ok(mut user) = self.user.lock() {
                if user.len() >= USER_EVENTS_KEPT {
                    user.pop_front();
                }
                user.push_back(UserEventView {
                    id: *id,
                    name: name.clone(),
                    payload,
                    origin: origin.as_str().to_string(),
                    filters,
                    ltime,
                    time: unix_now(),
                });
            }
            self.user_index.send_replace(ltime);
        }
    }

    /// When `member` entered its present state, if this agent saw it happen.
    pub fn since(&self, member: &str) -> Option<f64> {
        self.since.lock().ok()?.get(member).copied()
    }

    /// The user events kept, oldest first, those named `name` only if given.
    pub fn user_events(&self, name: Option<&str>) -> Vec<UserEventView> {
        self.user
            .lock()
            .map(|u| {
                u.iter()
                    .filter(|e| name.is_none_or(|n| e.name == n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The user events received so far.
    pub fn user_index(&self) -> u64 {
        *self.user_index.borrow()
    }

    /// Waits until more than `after` user events were received, or `timeout`.
    pub async fn wait_user(&self, after: u64, timeout: std::time::Duration) {
        let mut rx = self.user_index.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|&v| v > after)).await;
    }

    /// A subscription to the stream from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StreamEvent> {
        self.stream.subscribe()
    }
}
