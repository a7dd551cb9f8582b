//! Cluster mode (`cluster_*` options): several midge nodes share one MQTT space through NATS
//! with JetStream. Without any of these lines the broker is a single node and needs no NATS.
use std::path::PathBuf;

use super::error::LineError;
use super::lex::Directive;

/// The options of cluster mode.
pub const CLUSTER_OPTIONS: &[&str] = &[
    "cluster_nats_url",
    "cluster_node_name",
    "cluster_replicas",
    "cluster_nats_username",
    "cluster_nats_password",
    "cluster_nats_creds",
    "cluster_nats_cafile",
];

/// The most JetStream replicas a stream can have (NATS's own limit).
pub const MAX_REPLICAS: usize = 5;

/// The cluster settings: present once any `cluster_*` line is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `cluster_nats_url` (repeatable): the NATS servers to connect to, `nats://HOST:PORT`
    /// or `tls://HOST:PORT`.
    pub urls: Vec<String>,
    /// `cluster_node_name`: this node's name in the cluster, unique among its nodes
    /// (default: the host name).
    pub node_name: Option<String>,
    /// `cluster_replicas`: JetStream's replication factor for midge's streams (1-5, default 1).
    pub replicas: usize,
    /// `cluster_nats_username` and `cluster_nats_password`: NATS user and password.
    pub username: Option<String>,
    /// See `username`.
    pub password: Option<String>,
    /// `cluster_nats_creds`: a NATS credentials file (JWT and NKey seed).
    pub creds: Option<PathBuf>,
    /// `cluster_nats_cafile`: the CA certificates NATS's TLS certificate is checked against.
    pub cafile: Option<PathBuf>,
    /// "file:line" of the first cluster line, where a cluster that is incomplete is reported.
    pub origin: String,
}

impl Cluster {
    fn new(origin: String) -> Cluster {
        Cluster {
            urls: Vec::new(),
            node_name: None,
            replicas: 1,
            username: None,
            password: None,
            creds: None,
            cafile: None,
            origin,
        }
    }

    /// What is missing or contradictory once every line is read. `check_retain_source`:
    /// that option's value (retained messages from the cluster's stream carry no publisher
    /// yet, so the check could not hold: refused rather than ignored).
    pub(super) fn incomplete(&self, check_retain_source: bool) -> Option<LineError> {
        let missing =
            |option: &str, expected| Some(LineError::MissingValue { option: option.to_owned(), expected });
        if self.urls.is_empty() {
            return missing("cluster_nats_url", "nats://HOST:PORT, at least one with cluster options");
        }
        if self.username.is_some() != self.password.is_some() {
            return missing(
                "cluster_nats_username",
                "a cluster_nats_username and a cluster_nats_password, both or neither",
            );
        }
        if self.creds.is_some() && self.username.is_some() {
            return missing("cluster_nats_creds", "either a credentials file or a user name and password");
        }
        if check_retain_source {
            return Some(LineError::InvalidValue {
                option: "check_retain_source".into(),
                value: "true".into(),
                expected: "false in cluster mode (retained messages from other nodes carry no publisher yet)",
            });
        }
        None
    }
}

/// Reads one `cluster_*` line into the cluster settings (created by the first).
pub(super) fn option(d: &Directive, cluster: &mut Option<Cluster>) -> Result<(), LineError> {
    let c = cluster.get_or_insert_with(|| Cluster::new(d.location()));
    let name = d.name.as_str();
    match name {
        "cluster_nats_url" => {
            let url = one(d, "nats://HOST:PORT or tls://HOST:PORT")?;
            if !valid_url(url) {
                return Err(invalid(d, url, "nats://HOST:PORT or tls://HOST:PORT"));
            }
            c.urls.push(url.to_owned());
        }
        "cluster_node_name" => {
            let v = one(d, "a name of letters, digits, '-' and '_'")?;
            if !valid_node_name(v) {
                return Err(invalid(d, v, "a name of 1 to 64 letters, digits, '-' and '_'"));
            }
            c.node_name = Some(v.to_owned());
        }
        "cluster_replicas" => {
            let v = one(d, "a number from 1 to 5")?;
            c.replicas = v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_REPLICAS).contains(n))
                .ok_or_else(|| invalid(d, v, "a number from 1 to 5 (JetStream replicas)"))?;
        }
        "cluster_nats_username" => c.username = Some(one(d, "a NATS user name")?.to_owned()),
        // The rest of the line, as mosquitto reads passwords: it may contain spaces.
        "cluster_nats_password" => {
            if d.value.is_empty() {
                return Err(LineError::MissingValue { option: d.name.clone(), expected: "a NATS password" });
            }
            c.password = Some(d.value.clone());
        }
        "cluster_nats_creds" => c.creds = Some(path(d, "a NATS credentials file")?),
        "cluster_nats_cafile" => c.cafile = Some(path(d, "a file of CA certificates (PEM)")?),
        other => return Err(LineError::Unknown(other.to_owned())),
    }
    Ok(())
}

/// `nats://HOST:PORT` or `tls://HOST:PORT` (the port may be left out: 4222), with an
/// optional `user:password@` as NATS URLs have.
fn valid_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("nats://").or_else(|| url.strip_prefix("tls://")) else {
        return false;
    };
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let (host, port) = match host_port.rsplit_once(':') {
        // An IPv6 address in brackets without a port.
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (host_port, None),
    };
    !host.is_empty()
        && !host.contains(['/', ' ', '?', '#'])
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// Node names go into NATS headers and log lines: kept to a safe alphabet.
fn valid_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn one<'d>(d: &'d Directive, expected: &'static str) -> Result<&'d str, LineError> {
    match d.args.as_slice() {
        [v] => Ok(v),
        [] => Err(LineError::MissingValue { option: d.name.clone(), expected }),
        many => Err(LineError::TooManyValues { option: d.name.clone(), expected, found: many.len() }),
    }
}

/// A path: the rest of the line (it may contain spaces).
fn path(d: &Directive, expected: &'static str) -> Result<PathBuf, LineError> {
    if d.value.is_empty() {
        return Err(LineError::MissingValue { option: d.name.clone(), expected });
    }
    Ok(PathBuf::from(&d.value))
}

fn invalid(d: &Directive, value: &str, expected: &'static str) -> LineError {
    LineError::InvalidValue { option: d.name.clone(), value: value.to_owned(), expected }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for ok in [
            "nats://127.0.0.1:4222",
            "tls://nats.example:4443",
            "nats://a",
            "nats://u:p@h:1",
            "nats://[::1]:4222",
        ] {
            assert!(valid_url(ok), "{ok}");
        }
        for bad in [
            "127.0.0.1:4222",
            "http://h:1",
            "nats://",
            "nats://h:0",
            "nats://h:99999",
            "nats://h:x",
            "nats://h/x",
        ] {
            assert!(!valid_url(bad), "{bad}");
        }
    }

    #[test]
    fn node_names() {
        assert!(valid_node_name("node-1_a"));
        assert!(!valid_node_name(""));
        assert!(!valid_node_name("a.b"));
        assert!(!valid_node_name(&"x".repeat(65)));
    }
}
