//! Event handler scripts, as Serf runs them: a script per matching event, the event in its
//! environment, the details on stdin.
//!
//! | event | `GRAPEVINE_EVENT` | stdin |
//! |---|---|---|
//! | member joined, left, failed, updated (Serf's) | `member-join`, `member-leave`, `member-failed`, `member-update` | `NAME\tIP\tTAGS` |
//! | member suspected, refuted, reaped (grapevine's) | `member-suspect`, `member-alive`, `member-reap` | `NAME\tIP\tTAGS` (`NAME` for a reap) |
//! | user event | `user` (and `GRAPEVINE_USER_EVENT=NAME`) | the payload |
//! | shared keys changed | `key-change` | `set\tKEY\tBASE64-VALUE` or `delete\tKEY`, one line per key |
//!
//! Member events also set `GRAPEVINE_REASON` (joined, suspected, refuted, failed, left,
//! updated, reaped), `GRAPEVINE_TIME` (when this agent saw it, seconds since the UNIX epoch,
//! with microseconds), `GRAPEVINE_MEMBER`, and for a suspicion `GRAPEVINE_ACCUSER`.

use base64::Engine;
use grapevine::Node;

/// An event handler: which events, and the script.
#[derive(Clone, Debug, PartialEq)]
pub struct Handler {
    filters: Vec<String>,
    script: String,
}

/// Parses `[FILTER=]SCRIPT` specs.
pub fn parse_all(specs: &[String]) -> Vec<Handler> {
    specs.iter().map(|s| Handler::parse(s)).collect()
}

impl Handler {
    fn parse(spec: &str) -> Handler {
        match spec.split_once('=') {
            Some((f, script)) if !f.contains(' ') => Handler {
                filters: f.split(',').map(str::to_string).collect(),
                script: script.to_string(),
            },
            _ => Handler {
                filters: Vec::new(),
                script: spec.to_string(),
            },
        }
    }

    /// Whether the handler runs for an event of `kind` (`user` with the user event's name
    /// in `detail`, `key-change` with a changed key in `detail`).
    fn matches(&self, kind: &str, detail: Option<&str>) -> bool {
        self.filters.is_empty()
            || self.filters.iter().any(|f| match (kind, detail) {
                _ if f == kind => true,
                ("user", Some(u)) => f.strip_prefix("user:") == Some(u),
                ("query", Some(q)) => f.strip_prefix("query:") == Some(q),
                ("key-change", Some(k)) => {
                    f == "key" || f.strip_prefix("key:").is_some_and(|p| k.starts_with(p))
                }
                _ => false,
            })
    }

    fn wants_keys(&self) -> bool {
        self.filters.is_empty()
            || self
                .filters
                .iter()
                .any(|f| f == "key" || f == "key-change" || f.starts_with("key:"))
    }
}

/// An event as handlers see it: its kind, the user event's name, stdin, and for member
/// events the extra environment.
type Described = (
    &'static str,
    Option<String>,
    Vec<u8>,
    Vec<(&'static str, String)>,
);

fn describe(e: &grapevine::Event, me: &str) -> Option<Described> {
    use grapevine::Event as E;
    let member_line = |m: &grapevine::Member| {
        format!(
            "{}\t{}\t{}\n",
            m.name.as_str(),
            m.addr.ip(),
            String::from_utf8_lossy(&m.tags)
        )
        .into_bytes()
    };
    let kind = super::log::kind(e)?;
    let env = |s: super::log::StreamEvent| {
        let mut v = vec![
            ("GRAPEVINE_REASON", s.reason),
            ("GRAPEVINE_TIME", format!("{:.6}", s.time)),
            ("GRAPEVINE_MEMBER", s.name),
        ];
        if let Some(a) = s.accuser {
            v.push(("GRAPEVINE_ACCUSER", a));
        }
        v
    };
    let stream = super::log::StreamEvent::of(e, me)?;
    Some(match e {
        E::Joined { member }
        | E::Left { member }
        | E::Failed { member, .. }
        | E::Updated { member }
        | E::Suspected { member, .. }
        | E::Alive { member } => (kind, None, member_line(member), env(stream)),
        E::Reaped { name, .. } => (
            kind,
            None,
            format!("{}\n", name.as_str()).into_bytes(),
            env(stream),
        ),
        E::User { name, payload, .. } => (kind, Some(name.clone()), payload.clone(), Vec::new()),
        _ => return None,
    })
}

/// One run of a handler script, queued.
struct Job {
    script: String,
    kind: String,
    me: String,
    user: Option<String>,
    input: Vec<u8>,
    env: Vec<(&'static str, String)>,
}

/// Runs waiting longer than this are killed: a hung script must not hold its slot for ever.
const HANDLER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Jobs waiting for a slot; past it, new ones are dropped (and counted).
const QUEUE: usize = 256;

/// Runs one job to its end (or its timeout).
async fn execute(job: Job) {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&job.script)
        .env("GRAPEVINE_EVENT", &job.kind)
        .env("GRAPEVINE_SELF_NAME", &job.me)
        .envs(job.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(u) = &job.user {
        cmd.env("GRAPEVINE_USER_EVENT", u);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, script = %job.script, "cannot run event handler");
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(&job.input).await;
    }
    match tokio::time::timeout(HANDLER_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if !status.success() => tracing::warn!(%status, "event handler failed"),
        Ok(_) => {}
        Err(_) => {
            let _ = child.kill().await;
            tracing::warn!(script = %job.script, "event handler killed after 300 s");
        }
    }
}

/// Queues runs and starts them as slots free, at most `max` at once.
#[derive(Clone)]
struct Runner {
    tx: tokio::sync::mpsc::Sender<Job>,
}

impl Runner {
    fn start(max: usize) -> Runner {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Job>(QUEUE);
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(max));
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                tokio::spawn(async move {
                    execute(job).await;
                    drop(permit);
                });
            }
        });
        Runner { tx }
    }

    /// Queues a run of `h` for an event of `kind` with `input` on stdin.
    fn spawn(
        &self,
        h: &Handler,
        kind: &str,
        me: &str,
        user: Option<&str>,
        input: Vec<u8>,
        env: &[(&'static str, String)],
    ) {
        let job = Job {
            script: h.script.clone(),
            kind: kind.to_string(),
            me: me.to_string(),
            user: user.map(str::to_string),
            input,
            env: env.to_vec(),
        };
        if self.tx.try_send(job).is_err() {
            metrics::counter!(grapevine::metrics::DROPPED, "layer" => "handlers", "reason" => "queue_full")
                .increment(1);
            tracing::debug!(kind, "event handler queue full: run dropped");
        }
    }
}

/// Runs the matching handlers for each event until the node stops, at most `max` scripts at
/// once (the rest queue, up to 256; past that, runs are dropped and counted).
pub async fn run(
    node: Node,
    handlers: Vec<Handler>,
    max: usize,
    registry: super::services::Registry,
) {
    let runner = Runner::start(max);
    let me = node.name().as_str().to_string();
    let mut events = node.events();
    // Key changes are batched: each handler runs once per burst with every key that
    // changed under its filters.
    let mut keys = handlers
        .iter()
        .any(Handler::wants_keys)
        .then(|| node.watch(b""));
    loop {
        tokio::select! {
            e = events.next() => {
                let Some(e) = e else { return };
                let Some((kind, user, mut input, env)) = describe(&e, &me) else { continue };
                if kind == "user" {
                    // Consul's event filters: only the nodes they name run handlers.
                    let (filters, payload) = super::event_filters::unwrap(&input);
                    if !filters.admits(&me, &registry.local()) {
                        continue;
                    }
                    input = payload;
                }
                for h in handlers.iter().filter(|h| h.matches(kind, user.as_deref())) {
                    runner.spawn(h, kind, &me, user.as_deref(), input.clone(), &env);
                }
            }
            changes = async { keys.as_mut()?.next().await.ok() }, if keys.is_some() => {
                let Some(changes) = changes else { return };
                let b64 = base64::engine::general_purpose::STANDARD;
                for h in &handlers {
                    let mut input = String::new();
                    for c in &changes {
                        let key = String::from_utf8_lossy(&c.key);
                        if !h.matches("key-change", Some(&key)) {
                            continue;
                        }
                        match &c.value {
                            Some(v) => input += &format!("set\t{key}\t{}\n", b64.encode(v)),
                            None => input += &format!("delete\t{key}\n"),
                        }
                    }
                    if !input.is_empty() {
                        runner.spawn(h, "key-change", &me, None, input.into_bytes(), &[]);
                    }
                }
            }
        }
    }
}

/// The most a query handler's output may be: Serf's QueryResponseSizeLimit less its
/// envelope.
const QUERY_OUTPUT_MAX: usize = 900;

/// Runs a query handler and returns what it printed (at most `QUERY_OUTPUT_MAX` bytes).
async fn answer(
    script: String,
    me: String,
    name: String,
    ltime: u64,
    input: Vec<u8>,
) -> Option<Vec<u8>> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&script)
        .env("GRAPEVINE_EVENT", "query")
        .env("GRAPEVINE_SELF_NAME", &me)
        .env("GRAPEVINE_QUERY_NAME", &name)
        .env("SERF_EVENT", "query")
        .env("SERF_SELF_NAME", &me)
        .env("SERF_QUERY_NAME", &name)
        .env("SERF_QUERY_LTIME", ltime.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().ok()?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(&input).await;
    }
    let out = tokio::time::timeout(HANDLER_TIMEOUT, child.wait_with_output())
        .await
        .ok()?
        .ok()?;
    let mut o = out.stdout;
    o.truncate(QUERY_OUTPUT_MAX);
    Some(o)
}

/// Runs the matching handlers for a Serf agent's events: member events and user events as
/// on grapevine's protocol (with Serf's `SERF_*` variables too, so Serf's scripts run
/// unchanged), and query handlers (`query`, `query:NAME`), whose output is the response.
pub async fn run_serf(agent: grapevine::serf::SerfAgent, handlers: Vec<Handler>, max: usize) {
    use grapevine_core::serf::SerfEvent as E;
    let runner = Runner::start(max);
    let me = agent.name().to_string();
    let mut events = agent.events();
    loop {
        let e = match events.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "event handlers fell behind");
                continue;
            }
            Err(_) => return,
        };
        let member = |m: &grapevine_core::serf::MemberInfo| {
            let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{}\t{}\t\t{}\n", m.name, m.addr.ip(), tags.join(",")).into_bytes()
        };
        let (kind, user, input, ltime) = match &e {
            E::MemberJoin(m) => ("member-join", None, member(m), None),
            E::MemberLeave(m) => ("member-leave", None, member(m), None),
            E::MemberFailed(m) => ("member-failed", None, member(m), None),
            E::MemberUpdate(m) => ("member-update", None, member(m), None),
            E::MemberReap(m) => ("member-reap", None, member(m), None),
            E::User {
                name,
                payload,
                ltime,
                ..
            } => ("user", Some(name.clone()), payload.clone(), Some(*ltime)),
            E::Query {
                handle,
                name,
                payload,
                ltime,
                ..
            } => {
                let Some(h) = handlers.iter().find(|h| h.matches("query", Some(name))) else {
                    continue;
                };
                let (agent, me, name, payload, script, handle, ltime) = (
                    agent.clone(),
                    me.clone(),
                    name.clone(),
                    payload.clone(),
                    h.script.clone(),
                    *handle,
                    *ltime,
                );
                tokio::spawn(async move {
                    if let Some(out) = answer(script, me, name, ltime, payload).await {
                        let _ = agent.with(move |n, now| n.respond(handle, &out, now)).await;
                    }
                });
                continue;
            }
            _ => continue,
        };
        let mut env = vec![
            ("SERF_EVENT", kind.to_string()),
            ("SERF_SELF_NAME", me.clone()),
        ];
        if let Some(u) = &user {
            env.push(("SERF_USER_EVENT", u.clone()));
        }
        if let Some(t) = ltime {
            env.push(("SERF_USER_LTIME", t.to_string()));
        }
        for h in handlers.iter().filter(|h| h.matches(kind, user.as_deref())) {
            runner.spawn(h, kind, &me, user.as_deref(), input.clone(), &env);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_select_events_as_serf_does_and_keys_by_prefix() {
        let all = Handler::parse("log.sh");
        assert!(all.matches("member-join", None) && all.matches("key-change", Some("a")));
        let h = Handler::parse("member-failed,user:deploy,key:app/=run.sh");
        assert_eq!(h.script, "run.sh");
        assert!(h.matches("member-failed", None));
        assert!(!h.matches("member-join", None));
        assert!(h.matches("user", Some("deploy")));
        assert!(!h.matches("user", Some("other")));
        assert!(h.matches("key-change", Some("app/colour")));
        assert!(!h.matches("key-change", Some("db/x")));
        assert!(h.wants_keys());
        assert!(!Handler::parse("user=x").wants_keys());
        assert!(Handler::parse("key=x").matches("key-change", Some("anything")));
        // A script with `=` in it and no filter stays whole.
        assert_eq!(Handler::parse("echo a=b").script, "echo a=b");
    }
}
