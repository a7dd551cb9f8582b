//! `conn`: open N connections at a rate, hold them, and (with --pid) report the broker's
//! memory per connection from /proc.
use std::time::{Duration, Instant};

use midge_client::connect;

use super::{BenchArgs, BenchError};

/// The resident memory of a process, in bytes.
fn rss(pid: u32) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|source| BenchError::ProcStatus { pid, source })?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or(BenchError::NoRss { pid })
}

pub async fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let version = args.mqtt_version()?;
    let before = args.pid.map(rss).transpose()?;
    let tls = args.tls()?;
    let started = Instant::now();
    let mut clients = Vec::with_capacity(args.clients);
    let mut failed = 0usize;
    let mut last_report = Instant::now();
    for i in 0..args.clients {
        if args.conn_rate > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / args.conn_rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let mut o =
            args.client_options(&tls, version, format!("bench-conn-{}-{i}", std::process::id()), i, 300);
        o.event_capacity = 1;
        match connect(o).await {
            Ok((client, events, _)) => clients.push((client, events)),
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("connection {i}: {}", super::connect_reason(&e));
                }
            }
        }
        if !args.quiet && last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "{:>5.0}s conn  {} open, {failed} failed",
                started.elapsed().as_secs_f64(),
                clients.len()
            );
            last_report = Instant::now();
        }
    }
    let took = started.elapsed().as_secs_f64();
    // Let the broker settle before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = args.pid.map(rss).transpose()?;
    let per_conn = match (before, after) {
        (Some(b), Some(a)) if !clients.is_empty() => Some(a.saturating_sub(b) as f64 / clients.len() as f64),
        _ => None,
    };
    if args.json {
        let out = serde_json::json!({
            "scenario": "conn",
            "parameters": {
                "clients": args.clients,
                "conn_rate": args.conn_rate,
                "mqtt_version": version.to_string(),
                "tls": args.cafile.is_some() || args.cert.is_some(),
            },
            "connections": clients.len(),
            "failed": failed,
            "seconds": (took * 1000.0).round() / 1000.0,
            "per_second": (clients.len() as f64 / took * 10.0).round() / 10.0,
            "broker_rss_before": before,
            "broker_rss_after": after,
            "bytes_per_connection": per_conn.map(|v| v.round()),
        });
        println!("{out}");
    } else {
        println!(
            "conn: {} connections open, {failed} failed, in {took:.2} s ({:.0}/s)",
            clients.len(),
            clients.len() as f64 / took
        );
        if let (Some(b), Some(a), Some(p)) = (before, after, per_conn) {
            println!(
                "broker memory: {} KiB before, {} KiB after: {:.0} bytes per connection",
                b / 1024,
                a / 1024,
                p
            );
            if a <= b {
                // Resident memory only grows: freed memory is kept and used again.
                println!(
                    "(the broker did not grow: it reused memory of earlier connections; measure on a broker \
                     started afresh)"
                );
            }
        }
    }
    if args.hold > 0 {
        tokio::time::sleep(Duration::from_secs(args.hold)).await;
    }
    for (c, _) in &clients {
        let _ = c.disconnect().await;
    }
    if clients.is_empty() && failed > 0 {
        return Err(BenchError::NoConnection { failed });
    }
    Ok(())
}
