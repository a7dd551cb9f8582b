//! JSON lines: one object per message, finding and warning, and the summary at the end, each
//! with a "type" member ("packet", "finding", "warning", "summary").
//!
//! Binary data is a string when it is valid UTF-8, else `{"hex": "..."}`; a reason code is
//! `{"code": N, "name": "..."}`; a hidden password is "********".
use std::io::{self, Write};

use serde_json::{json, Map, Value as Json};

use super::text::MASK;
use super::{Field, Finding, FindingKind, Protocol, Record, Sink, Summary, Value};
use crate::tls::version_name;

/// Prints JSON lines to `out`.
pub struct JsonPrinter<W: Write> {
    out: W,
    reveal: bool,
    flush_each: bool,
}

impl<W: Write> JsonPrinter<W> {
    /// `reveal`: passwords in clear; `flush_each`: flush after each line (live capture).
    pub fn new(out: W, reveal: bool, flush_each: bool) -> Self {
        JsonPrinter { out, reveal, flush_each }
    }

    /// The writer back.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn line(&mut self, v: &Json) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, v)?;
        self.out.write_all(b"\n")?;
        if self.flush_each {
            self.out.flush()?;
        }
        Ok(())
    }

    fn value(&self, v: &Value) -> Json {
        match v {
            Value::Bool(b) => Json::Bool(*b),
            Value::Int(n) => json!(n),
            Value::Text(t) => Json::String(t.clone()),
            Value::Bytes(b) => bytes(b),
            Value::Secret(b) if self.reveal => bytes(b),
            Value::Secret(_) => Json::String(MASK.into()),
            Value::Reason { code, name } => json!({"code": code, "name": name}),
            Value::List(items) => Json::Array(items.iter().map(|i| self.value(i)).collect()),
            Value::Group(fields) => Json::Object(self.fields(fields)),
        }
    }

    fn fields(&self, fields: &[Field]) -> Map<String, Json> {
        fields.iter().map(|f| (f.name.to_string(), self.value(&f.value))).collect()
    }

    fn finding_json(&self, f: &Finding) -> Json {
        let mut o = json!({
            "type": "finding",
            "severity": f.severity(),
            "kind": f.kind_name(),
            "message": f.message(),
            "frame": f.frame,
            "time": seconds(f.time_ns),
            "client": f.client.to_string(),
            "broker": f.broker.to_string(),
        });
        match &f.kind {
            FindingKind::ClearTextPassword { user, password } => {
                o["user"] = json!(user);
                o["password"] = self.value(&Value::Secret(password.clone()));
            }
            FindingKind::ClearTextUser { user } => o["user"] = json!(user),
            FindingKind::Encrypted { sni, version, handshake_seen } => {
                o["sni"] = json!(sni);
                o["tls_version"] = json!(version.map(version_name));
                o["handshake_seen"] = json!(handshake_seen);
            }
        }
        o
    }
}

impl<W: Write> Sink for JsonPrinter<W> {
    fn record(&mut self, r: &Record) -> io::Result<()> {
        let mut o = json!({
            "type": "packet",
            "frame": r.frame,
            "time": seconds(r.time_ns),
            "direction": r.direction.to_string(),
            "src": r.src().to_string(),
            "dst": r.dst().to_string(),
            "client": r.client.to_string(),
            "broker": r.broker.to_string(),
            "client_id": r.client_id,
            "packet": r.name,
            "fields": Json::Object(self.fields(&r.fields)),
        });
        match r.protocol {
            Protocol::Mqtt { version, assumed } => {
                o["protocol"] = json!("MQTT");
                o["version"] = json!(version.to_string());
                if assumed {
                    o["version_assumed"] = json!(true);
                }
            }
            Protocol::Tls => o["protocol"] = json!("TLS"),
        }
        self.line(&o)
    }

    fn finding(&mut self, f: &Finding) -> io::Result<()> {
        let o = self.finding_json(f);
        self.line(&o)
    }

    fn warning(&mut self, message: &str) -> io::Result<()> {
        self.line(&json!({"type": "warning", "message": message}))
    }

    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        let clients: Vec<Json> = s
            .clients
            .iter()
            .map(|c| {
                json!({
                    "client_id": c.client_id,
                    "client": c.client.to_string(),
                    "broker": c.broker.to_string(),
                    "version": c.version.to_string(),
                    "user": c.user,
                })
            })
            .collect();
        let topics: Vec<Json> = s.topics.iter().map(|(t, n)| json!({"topic": t, "messages": n})).collect();
        let packets: Map<String, Json> =
            s.packets.values().map(|(name, n)| (name.to_string(), json!(n))).collect();
        let findings: Vec<Json> = s.findings.iter().map(|f| self.finding_json(f)).collect();
        let o = json!({
            "type": "summary",
            "frames": s.frames,
            "connections": {"tcp": s.tcp_connections, "mqtt": s.mqtt_connections, "tls": s.tls_connections},
            "clients": clients,
            "topics": topics,
            "packets": packets,
            "findings": findings,
            "warnings": s.warnings,
            "tcp": {"retransmissions": s.retransmissions, "out_of_order": s.out_of_order},
        });
        self.line(&o)?;
        self.out.flush()
    }
}

/// Seconds since the first frame, as a number.
fn seconds(ns: i128) -> f64 {
    ns as f64 / 1e9
}

fn bytes(b: &[u8]) -> Json {
    match std::str::from_utf8(b) {
        Ok(t) => Json::String(t.to_string()),
        Err(_) => json!({"hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>()}),
    }
}
