//! Fault drills for operators: drop a share of this agent's datagrams, delay the ones it
//! sends, or cut it off from named members, each for a while. Off unless the agent runs with
//! `--enable-drills` (403 otherwise). Every drill has an expiry, enforced by the node's
//! driver on every packet, so a forgotten drill ends by itself; drills live in memory only,
//! so a restart ends them all, never later than their expiry.

use grapevine::{Faults, Node};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest a drill may last.
pub const MAX_DRILL: Duration = Duration::from_secs(3600);

/// The most drills at once.
const MAX_DRILLS: usize = 16;

/// What a drill does.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "Kind", rename_all = "lowercase")]
pub enum DrillKind {
    /// Drop this share (0 to 1) of datagrams, both ways.
    Drop {
        /// The share.
        #[serde(rename = "Share")]
        share: f64,
    },
    /// Hold each datagram sent this many milliseconds (at most 5,000).
    Delay {
        /// The delay.
        #[serde(rename = "Millis")]
        millis: u64,
    },
    /// Drop every datagram and frame to or from these members.
    Cut {
        /// Their names.
        #[serde(rename = "Members")]
        members: Vec<String>,
    },
}

/// A drill as asked for: what, and for how long (Go's duration syntax, default 60 s).
#[derive(Deserialize, Debug)]
pub struct DrillRequest {
    /// What it does.
    #[serde(flatten)]
    pub kind: DrillKind,
    /// For how long.
    #[serde(rename = "For", default)]
    pub duration: Option<String>,
}

/// A drill in force.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Drill {
    /// Its number.
    #[serde(rename = "ID")]
    pub id: u64,
    /// What it does.
    #[serde(flatten)]
    pub kind: DrillKind,
    /// When it ends, seconds since the UNIX epoch.
    #[serde(rename = "Expires")]
    pub expires: f64,
    #[serde(skip)]
    until: tokio::time::Instant,
}

/// Why a drill was refused.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// Drills are off here.
    #[error(
        "drills are off on this agent: start it with --enable-drills (or enable_drills = true \
         in its config file) to let operators drop, delay or cut its traffic"
    )]
    Disabled,
    /// A drill that makes no sense.
    #[error("{0}")]
    Bad(String),
    /// Too many at once.
    #[error("at most {MAX_DRILLS} drills at once")]
    TooMany,
    /// The node did not answer.
    #[error(transparent)]
    Node(#[from] grapevine::Error),
}

/// The drills of this agent.
#[derive(Clone)]
pub struct Drills {
    enabled: bool,
    inner: Arc<Mutex<(u64, Vec<Drill>)>>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Drills {
    /// Drills, allowed only if `enabled`.
    pub fn new(enabled: bool) -> Drills {
        Drills {
            enabled,
            inner: Arc::default(),
        }
    }

    /// Refuses unless drills are allowed here.
    pub fn refuse_unless_enabled(&self) -> Result<(), DrillError> {
        if self.enabled {
            Ok(())
        } else {
            Err(DrillError::Disabled)
        }
    }

    /// Whether drills are allowed here.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The drills in force now (expired ones forgotten).
    pub fn list(&self) -> Vec<Drill> {
        let now = tokio::time::Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.1.retain(|d| d.until > now);
        inner.1.clone()
    }

    /// Hands the node the faults of every drill in force.
    async fn apply(&self, node: &Node) -> Result<(), DrillError> {
        let drills = self.list();
        let members = node.members().await?;
        let mut f = Faults::default();
        for d in &drills {
            match &d.kind {
                DrillKind::Drop { share } => {
                    f.drop = Some((*share, d.until));
                }
                DrillKind::Delay { millis } => {
                    f.delay = Some((Duration::from_millis(*millis), d.until));
                }
                DrillKind::Cut { members: names } => {
                    for m in members
                        .iter()
                        .filter(|m| names.iter().any(|n| n == m.name.as_str()))
                    {
                        f.cut.push((m.addr, d.until));
                    }
                }
            }
        }
        node.set_faults(f).await?;
        Ok(())
    }

    /// Starts a drill.
    pub async fn start(&self, node: &Node, req: DrillRequest) -> Result<Drill, DrillError> {
        self.refuse_unless_enabled()?;
        let bad = DrillError::Bad;
        let length = match &req.duration {
            None => Duration::from_secs(60),
            Some(s) => super::services::go_duration(s)
                .ok_or_else(|| bad(format!("For {s:?}: a duration like 30s or 5m")))?,
        };
        if length.is_zero() || length > MAX_DRILL {
            return Err(bad(format!(
                "a drill lasts more than 0 and at most {MAX_DRILL:?}"
            )));
        }
        match &req.kind {
            DrillKind::Drop { share } if !(0.0..=1.0).contains(share) => {
                return Err(bad("Share is between 0 and 1".into()))
            }
            DrillKind::Delay { millis } if *millis == 0 || *millis > 5000 => {
                return Err(bad("Millis is between 1 and 5000".into()))
            }
            DrillKind::Cut { members } if members.is_empty() || members.len() > 256 => {
                return Err(bad("Members names 1 to 256 members".into()))
            }
            _ => {}
        }
        let drill = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let now = tokio::time::Instant::now();
            inner.1.retain(|d| d.until > now);
            if inner.1.len() >= MAX_DRILLS {
                return Err(DrillError::TooMany);
            }
            inner.0 += 1;
            let d = Drill {
                id: inner.0,
                kind: req.kind,
                expires: unix_now() + length.as_secs_f64(),
                until: now + length,
            };
            inner.1.push(d.clone());
            d
        };
        tracing::warn!(id = drill.id, kind = ?drill.kind, seconds = length.as_secs_f64(), "drill started");
        self.apply(node).await?;
        // Tell the node again once it ends, so that the listing and the faults agree (the
        // driver ends it at the same instant anyway).
        let (me, node) = (self.clone(), node.clone());
        tokio::spawn(async move {
            tokio::time::sleep(length).await;
            tracing::info!("a drill ended at its expiry");
            let _ = me.apply(&node).await;
        });
        Ok(drill)
    }

    /// Ends a drill (`None`: all); whether any ended.
    pub async fn end(&self, node: &Node, id: Option<u64>) -> Result<bool, DrillError> {
        self.refuse_unless_enabled()?;
        let ended = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let before = inner.1.len();
            inner.1.retain(|d| id.is_some_and(|i| d.id != i));
            before != inner.1.len()
        };
        self.apply(node).await?;
        Ok(ended)
    }
}
