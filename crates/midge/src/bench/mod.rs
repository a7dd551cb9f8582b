//! `midge bench`: a load generator in the spirit of emqtt-bench, on midge-client.
//!
//! Scenarios: `conn` (open connections; with --pid the broker's memory per connection),
//! `pairs` (N publishers, each to its own subscriber), `fan-in` (N publishers, one wildcard
//! subscriber), `fan-out` (one publisher, N subscribers), `shared` (N publishers, a $share
//! group of M). A progress line each second, a summary at the end (throughput, loss, latency
//! percentiles from an HdrHistogram), `--json`, and `--plot FILE.svg`. With `--flat-out` the
//! message scenarios run without a window: publishers write as fast as their sockets take it,
//! and the run counts the delivered rate and exactly what was lost (see `flat`).
mod conn;
mod flat;
mod load;
mod plot;
mod stats;
mod verdict;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use midge_codec::{ProtocolVersion, QoS};
use thiserror::Error;

/// A TLS connector, shared by every connection of a run.
type Tls = std::sync::Arc<dyn midge_client::Connector>;

/// Why a run stops, printed after `Error: `.
#[derive(Debug, Error)]
pub enum BenchError {
    #[error("unknown scenario '{0}': conn, pairs, fan-in, fan-out or shared")]
    UnknownScenario(String),
    #[error("--plot draws messages over time: pairs, fan-in, fan-out or shared, not conn")]
    PlotOfConn,
    #[error("unknown MQTT version '{0}': 311 or 5")]
    Version(String),
    #[error("the payload must be at least 16 bytes (a timestamp and a sequence number)")]
    PayloadTooSmall,
    #[error("{0}")]
    Tls(#[source] midge_client::Error),
    /// A subscriber or publisher could not connect (`role` says which; `index` counts from 0).
    #[error("{role} {index}: {}", connect_reason(source))]
    Connect { role: &'static str, index: usize, source: midge_client::Error },
    #[error("subscribe {filter}: {source}")]
    Subscribe { filter: String, source: midge_client::Error },
    /// The broker's memory, for `conn --pid`.
    #[error("/proc/{pid}/status: {source}")]
    ProcStatus { pid: u32, source: std::io::Error },
    #[error("no VmRSS in /proc/{pid}/status")]
    NoRss { pid: u32 },
    #[error("{}: {source}", path.display())]
    Plot { path: PathBuf, source: std::io::Error },
    #[error("--flat-out publishes as fast as the broker takes it: not with --rate")]
    FlatOutRate,
    #[error("--flat-out runs pairs, fan-in, fan-out or shared, not conn")]
    FlatOutConn,
    /// The flat-out mode's own CONNECT / CONNACK failed.
    #[error("{role} {index}: {reason}")]
    Handshake { role: &'static str, index: usize, reason: String },
    #[error("subscribe {filter}: {reason}")]
    Refused { filter: String, reason: String },
    #[error(
        "the broker refused the subscription to '{filter}': {reason}; choose topics it allows with --prefix"
    )]
    SubscriptionRefused { filter: String, reason: String },
    #[error("no connection opened: all {failed} failed (the first errors are above)")]
    NoConnection { failed: usize },
    #[error(
        "the broker refused {count} of {published} messages, the first one published to '{topic}': {reason}; \
         choose topics it allows with --prefix"
    )]
    PublishRefused { count: u64, published: u64, topic: String, reason: String },
    /// The broker took the load and delivered none of it (`silent`: why it said nothing).
    #[error(
        "nothing arrived: 0 of {published} messages published under '{prefix}/' were delivered. The broker accepted \
         the subscriptions and the messages, and {silent}: an ACL that denies these topics does this (the broker's \
         log says so). Choose topics it allows with --prefix{}",
        if *ask { ", or run with -V 5 -q 1 to have the broker's reason codes" } else { "" }
    )]
    NothingDelivered { published: u64, prefix: String, silent: &'static str, ask: bool },
    #[error("cannot encode the PUBLISH: {0}")]
    Encode(#[source] midge_codec::EncodeError),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Why a connection failed; a TLS alert (a client certificate the broker refused: revoked,
/// from another CA, missing) named, as the broker sent it.
pub(crate) fn connect_reason(e: &midge_client::Error) -> String {
    match e.tls_alert() {
        Some(alert) => refused_by_alert(alert),
        None => e.to_string(),
    }
}

/// A TLS alert from the broker, in words.
pub(crate) fn refused_by_alert(alert: midge_client::TlsAlert) -> String {
    format!("the broker refused the TLS connection with the alert '{alert}'")
}

/// Measure a broker's throughput, latency and memory.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// conn, pairs, fan-in, fan-out or shared.
    pub scenario: String,
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(short, long, default_value_t = 1883)]
    pub port: u16,
    /// Publishers (pairs, fan-in, shared) or subscribers (fan-out), or connections (conn).
    #[arg(short = 'n', long, default_value_t = 4)]
    pub clients: usize,
    /// Members of the $share group (shared).
    #[arg(short = 'm', long = "members", default_value_t = 2)]
    pub members: usize,
    /// QoS of the messages and subscriptions.
    #[arg(short, long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload size in bytes (at least 16: a timestamp, the publisher and a sequence number).
    #[arg(short, long, default_value_t = 64)]
    pub size: usize,
    /// Messages per second per publisher (open loop); 0 sends as fast as the --inflight window
    /// allows (see also --flat-out).
    #[arg(short, long, default_value_t = 0)]
    pub rate: u64,
    /// Flat out: QoS 1 / 2 messages awaiting acknowledgement per publisher; QoS 0 messages
    /// sent and not yet received (end to end) per publisher. With --flat-out: QoS 1 / 2 only
    /// (also bounded by the broker's Receive Maximum).
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    /// No window: publishers write as fast as their sockets take it, subscribers read as fast
    /// as they can, on one thread; reports the delivered and published rates and the exact
    /// loss (publishers stop, subscribers drain until nothing arrives for a second).
    #[arg(long = "flat-out")]
    pub flat_out: bool,
    /// Seconds of load (conn opens its connections and measures; --hold keeps them open).
    #[arg(short, long, default_value_t = 10)]
    pub duration: u64,
    /// MQTT version: 311 or 5.
    #[arg(short = 'V', long = "mqtt-version", default_value = "311")]
    pub version: String,
    /// Source addresses to connect from, comma separated (127.0.0.x to pass the ~28,000
    /// ephemeral ports of one address).
    #[arg(long, value_delimiter = ',')]
    pub source: Vec<IpAddr>,
    /// Connections opened per second (conn; 0: as fast as possible).
    #[arg(long = "conn-rate", default_value_t = 0)]
    pub conn_rate: u64,
    /// The broker's process id: `conn` reports its memory per connection.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Hold the connections this many seconds after opening them (conn).
    #[arg(long, default_value_t = 0)]
    pub hold: u64,
    /// TLS: CA file (enables TLS).
    #[arg(long)]
    pub cafile: Option<PathBuf>,
    /// TLS: do not check the certificate's host name.
    #[arg(long)]
    pub insecure: bool,
    /// TLS: client certificate (PEM), for brokers that require one.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// TLS: its private key (PEM).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// User name of every connection.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password of every connection.
    #[arg(short = 'P', long = "pw")]
    pub password: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write throughput and latency over time to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Topic prefix, so that runs do not see each other's messages.
    #[arg(long, default_value = "bench")]
    pub prefix: String,
    /// Port the subscribers connect to (default: --port): another node of a midge cluster
    /// than the publishers'. The publishers then start a second after the subscriptions, the
    /// time for the subscribers' node to subscribe on NATS.
    #[arg(long = "sub-port")]
    pub sub_port: Option<u16>,
}

impl BenchArgs {
    /// The arguments the subscribers connect with (`--sub-port`).
    pub(crate) fn subscriber_side(&self) -> BenchArgs {
        let mut a = self.clone();
        a.port = self.sub_port.unwrap_or(self.port);
        a
    }

    /// Once subscribed, before publishing: with subscribers on another cluster node, a second
    /// for that node's NATS subscription to be in place.
    pub(crate) fn settle(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.sub_port.is_some_and(|p| p != self.port)))
    }

    /// The TLS connector of every connection (its files read once), if TLS is asked for.
    fn tls(&self) -> Result<Option<Tls>, BenchError> {
        if self.cafile.is_none() && self.cert.is_none() {
            return Ok(None);
        }
        let tls = midge_client::TlsOptions {
            cafile: self.cafile.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            insecure: self.insecure,
            ..Default::default()
        };
        tls.connector().map(Some).map_err(BenchError::Tls)
    }

    /// The options of connection `index`: its source address, TLS, credentials.
    fn client_options(
        &self,
        tls: &Option<Tls>,
        version: ProtocolVersion,
        id: String,
        index: usize,
        keep_alive: u16,
    ) -> midge_client::Options {
        let mut c = midge_codec::Connect::new(version, id);
        c.keep_alive = keep_alive;
        c.username = self.username.as_deref().map(Into::into);
        c.password = self.password.as_ref().map(|p| bytes::Bytes::from(p.clone().into_bytes()));
        let mut o = midge_client::Options::new(self.host.clone(), self.port, c);
        if !self.source.is_empty() {
            o.bind_address = Some(self.source[index % self.source.len()]);
        }
        o.connector = tls.clone();
        o
    }

    fn mqtt_version(&self) -> Result<ProtocolVersion, BenchError> {
        match self.version.as_str() {
            "311" | "3.1.1" | "4" => Ok(ProtocolVersion::V3_1_1),
            "5" | "5.0" => Ok(ProtocolVersion::V5),
            other => Err(BenchError::Version(other.to_owned())),
        }
    }

    fn qos(&self) -> QoS {
        QoS::from_u8(self.qos).unwrap_or_default()
    }
}

pub fn run(args: BenchArgs) -> ExitCode {
    if args.flat_out {
        let _ = rlimit::increase_nofile_limit(u64::MAX);
        let result = match args.scenario.as_str() {
            "pairs" | "fan-in" | "fan-out" | "shared" => flat::run(&args),
            "conn" => Err(BenchError::FlatOutConn),
            other => Err(BenchError::UnknownScenario(other.to_owned())),
        };
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let result = rt.block_on(async {
        match args.scenario.as_str() {
            "conn" if args.plot.is_some() => Err(BenchError::PlotOfConn),
            "conn" => conn::run(&args).await,
            "pairs" | "fan-in" | "fan-out" | "shared" => load::run(&args).await,
            other => Err(BenchError::UnknownScenario(other.to_owned())),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
