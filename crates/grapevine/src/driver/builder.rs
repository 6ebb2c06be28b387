//! Building a node: its name, sockets, seeds, configuration, keys and limits, then the
//! task that drives it.

use super::task::Driver;
use super::{Error, Node};
use crate::crypto::{Keyring, ReplayGuard};
use crate::snapshot::Snapshot;
use crate::transport::{self, Limits};
use grapevine_core::{Config, Limiter, Name, Time};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc, watch};

/// Builds and starts a [`Node`].
#[derive(Clone, Debug)]
pub struct NodeBuilder {
    name: Option<String>,
    bind: SocketAddr,
    advertise: Option<SocketAddr>,
    seeds: Vec<String>,
    config: Config,
    keyring: Keyring,
    data_dir: Option<PathBuf>,
    /// A profile name that matched none.
    profile: Option<String>,
    limits: Limits,
    allowed: Vec<ipnet::IpNet>,
}

impl Default for NodeBuilder {
    fn default() -> Self {
        NodeBuilder {
            name: None,
            bind: SocketAddr::from(([0, 0, 0, 0], 7946)),
            advertise: None,
            seeds: Vec::new(),
            config: Config::lan(),
            keyring: Keyring::default(),
            data_dir: None,
            profile: None,
            limits: Limits::default(),
            allowed: Vec::new(),
        }
    }
}

impl NodeBuilder {
    /// The member name, unique in the cluster.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Where to listen, UDP and TCP on the same port (port 0: any free port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// The address other members reach this one at (default: the bound address).
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// Members to join through, as `host:port` (names are resolved again at every retry).
    pub fn seeds<I, S>(mut self, seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// The protocol configuration (a profile such as [`Config::lan`], possibly adjusted).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self.profile = None;
        self
    }

    /// The protocol configuration of a named profile (`lan`, `wan` or `local`); an unknown
    /// name makes `start` fail.
    pub fn profile(mut self, name: &str) -> Self {
        match Config::profile(name) {
            Some(c) => {
                self.config = c;
                self.profile = None;
            }
            None => self.profile = Some(name.to_string()),
        }
        self
    }

    /// Encrypts and authenticates every packet with these keys (none: no encryption).
    pub fn keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = keyring;
        self
    }

    /// Bounds on connections, in-flight bytes, deadlines and datagram rates (see
    /// [`Limits`]; the defaults suit a cluster of up to a few hundred members).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Takes datagrams and connections only from these networks (empty: from anywhere).
    pub fn allowed_networks(mut self, networks: Vec<ipnet::IpNet>) -> Self {
        self.allowed = networks;
        self
    }

    /// Remembers members, incarnation, generation and own keys in `dir` across restarts.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Binds the sockets and starts the node's task on the current tokio runtime.
    pub async fn start(self) -> Result<Node, Error> {
        if let Some(p) = self.profile {
            return Err(Error::UnknownProfile(p));
        }
        let name = Name::new(self.name.as_deref().ok_or(Error::NoName)?)?;
        self.config.validate()?;
        let (udp, tcp, bound) = bind_pair(self.bind).await?;
        let advertise = self.advertise.unwrap_or(bound);
        let epoch = Instant::now();
        let seed = rand::random::<u64>();
        let mut core = grapevine_core::Node::new(
            self.config.clone(),
            name.clone(),
            advertise,
            seed,
            Time::ZERO,
        )?;
        let unix_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        core.set_wall_clock(unix_micros);
        let mut seeds = self.seeds;
        let snapshot = match &self.data_dir {
            Some(dir) => Snapshot::load(dir)?.filter(|s| s.name == name.as_str()),
            None => None,
        };
        // A restart comes back above everything said of its previous run: a higher
        // incarnation for membership, a higher generation for its state.
        let generation = snapshot.as_ref().map_or(unix_micros, |s| {
            unix_micros.max(s.generation.saturating_add(1))
        });
        core.set_generation(generation);
        if let Some(snap) = snapshot {
            core.set_incarnation(Time::ZERO, snap.incarnation.wrapping_add(1));
            for (k, v) in snap.state {
                core.set_state(Time::ZERO, &k, v, None)?;
            }
            seeds.extend(
                snap.members
                    .iter()
                    .filter(|(_, a)| *a != advertise)
                    .map(|(_, a)| a.to_string()),
            );
            tracing::info!(
                incarnation = snap.incarnation.wrapping_add(1),
                keys = core.node_state(&name).map_or(0, |s| s.entries.len()),
                "restored from the data directory"
            );
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (events_tx, _) = broadcast::channel(4096);
        let (kv_tx, kv_rx) = watch::channel(0u64);
        let (states_tx, states_rx) = watch::channel(core.node_states_root());
        let keyring = Arc::new(RwLock::new(self.keyring));
        let replay = Arc::new(Mutex::new(ReplayGuard::new(self.limits.replay_window)));
        let shared = transport::Shared::new(
            self.limits.clone(),
            advertise,
            self.config.label.clone(),
            keyring.clone(),
            replay.clone(),
            self.allowed,
        );
        let datagrams = Limiter::new(
            self.limits.datagrams_per_source,
            self.limits.datagrams_total,
            Time::ZERO,
        );
        let (inbound, frames_rx) = mpsc::channel(1024);
        let (control, control_rx) = mpsc::channel(256);
        let driver = Driver {
            core,
            config: self.config,
            me: advertise,
            epoch,
            udp: Arc::new(udp),
            tcp,
            seeds,
            data_dir: self.data_dir,
            generation,
            blocked: Vec::new(),
            faults: super::Faults::default(),
            delayed: Default::default(),
            kv_index: kv_tx,
            states_root: states_tx,
            exports: 0,
            exporter: crate::metrics::Exporter::default(),
            writers: HashMap::new(),
            events: events_tx.clone(),
            joined: false,
            keyring,
            replay,
            transport: shared,
            datagrams,
            inbound,
            control,
            refused: HashMap::new(),
        };
        tokio::spawn(driver.run(cmd_rx, frames_rx, control_rx));
        Ok(Node {
            name,
            addr: advertise,
            jobs: cmd_tx,
            events: events_tx,
            kv_index: kv_rx,
            states_root: states_rx,
        })
    }
}

/// Binds UDP and TCP on one port. With port 0 the kernel picks a UDP port, which TCP may
/// have in use (another process's connection): then another port is tried.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), Error> {
    let mut attempt = 0;
    loop {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let bound = udp
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            Err(e) if addr.port() == 0 && attempt < 16 => {
                tracing::debug!(%bound, error = %e, "TCP cannot take the UDP port; another");
                attempt += 1;
            }
            Err(source) => {
                return Err(Error::Bind {
                    addr: bound,
                    source,
                })
            }
        }
    }
}
