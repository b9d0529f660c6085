//! Monitoring: the Prometheus endpoint (`--metrics ADDR`) and the metric catalogue.
//!
//! Every metric the process can report is in [`CATALOGUE`], with its help text. When the
//! endpoint starts, each metric of the process's role is described and, for counters and
//! gauges, set to zero, once per known label value: a scrape shows every series from
//! the start (a rate over a counter that appears only at its first increment misses
//! that increment), and labels never come from clients, so the series are bounded.
//! The README's table lists the same metrics.

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::net::SocketAddr;
use std::time::Duration;

/// Which side of the link a process is, for the metrics it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `rawlink serve`.
    Server,
    /// `rawlink receive`.
    Receiver,
}

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution (seconds).
    Histogram,
}

/// One metric: its name, kind, role, help text, and its label with every value it takes.
#[derive(Debug)]
pub struct Metric {
    /// Full name, `rawlink_…`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The process that reports it.
    pub role: Role,
    /// `# HELP` text.
    pub help: &'static str,
    /// The label's name and its values, if it has one.
    pub label: Option<(&'static str, &'static [&'static str])>,
}

const fn metric(name: &'static str, kind: Kind, role: Role, help: &'static str) -> Metric {
    Metric {
        name,
        kind,
        role,
        help,
        label: None,
    }
}

/// `receiver_errors_total`'s `kind` for a frame whose `seq` went back on one connection
/// (kept, but a protocol error).
pub const SEQUENCE_ERROR_KIND: &str = "sequence";

/// `receiver_errors_total`'s `kind` values: every value of [`error_kind`], and
/// [`SEQUENCE_ERROR_KIND`].
pub const ERROR_KINDS: &[&str] = &[
    "magic",
    "version",
    "header_length",
    "header_crc",
    "kind",
    "limit",
    "crc",
    "frame",
    "message",
    "truncated",
    "decompress",
    "io",
    SEQUENCE_ERROR_KIND,
];

/// Every metric rawlink reports.
pub const CATALOGUE: &[Metric] = {
    use Kind::*;
    use Role::*;
    &[
        metric("rawlink_server_frames_captured_total", Counter, Server, "Frames read from the source."),
        metric("rawlink_server_clients", Gauge, Server, "Clients connected now."),
        Metric {
            label: Some(("reason", &["slow", "overrun", "shutdown"])),
            ..metric(
                "rawlink_server_client_drops_total",
                Counter,
                Server,
                "Frames dropped for clients (slow: a latest-policy client's queue was full; overrun: a lossless client's buffer on a live source; shutdown: a lossless client's full queue when the server stopped).",
            )
        },
        metric("rawlink_server_bytes_sent_total", Counter, Server, "Bytes written to all clients."),
        Metric {
            label: Some((
                "reason",
                &["auth", "handshake_timeout", "tls", "hello", "max_pending", "max_clients"],
            )),
            ..metric("rawlink_server_rejected_total", Counter, Server, "Connections refused.")
        },
        metric("rawlink_server_dead_peers_total", Counter, Server, "Clients dropped for stalled writes or missing heartbeats."),
        metric("rawlink_server_tasks", Gauge, Server, "Live tokio tasks (updated each second)."),
        metric("rawlink_receiver_frames_total", Counter, Receiver, "Whole, valid frames received."),
        metric("rawlink_receiver_bytes_total", Counter, Receiver, "Payload bytes of the frames received."),
        Metric {
            label: Some(("kind", ERROR_KINDS)),
            ..metric("rawlink_receiver_errors_total", Counter, Receiver, "Stream faults, by kind.")
        },
        metric("rawlink_receiver_server_drops_total", Counter, Receiver, "Drops the server reported for this receiver."),
        metric("rawlink_receiver_missing_frames_total", Counter, Receiver, "Gaps in the sequence numbers."),
        metric("rawlink_receiver_local_drops_total", Counter, Receiver, "Frames this receiver dropped itself (latest policy, worker queue full)."),
        metric("rawlink_receiver_reconnects_total", Counter, Receiver, "Connections re-established after a fault."),
        metric("rawlink_receiver_resyncs_total", Counter, Receiver, "Scans past corrupt bytes."),
        metric("rawlink_receiver_skipped_bytes_total", Counter, Receiver, "Bytes skipped by those scans."),
        metric("rawlink_receiver_partial_frames_total", Counter, Receiver, "Incomplete messages discarded on a failed connection."),
        metric("rawlink_receiver_disk_errors_total", Counter, Receiver, "Frames lost to disk errors."),
        metric("rawlink_receiver_capture_to_receive_seconds", Histogram, Receiver, "Capture to receive latency."),
    ]
};

/// Describes every metric of `role` to the installed recorder and sets its counters and
/// gauges to zero, one series per label value.
fn register(role: Role) {
    for m in CATALOGUE.iter().filter(|m| m.role == role) {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, metrics::Unit::Seconds, m.help),
        }
        let labels: Vec<Vec<metrics::Label>> = match m.label {
            None => vec![Vec::new()],
            Some((key, values)) => values
                .iter()
                .map(|v| vec![metrics::Label::new(key, *v)])
                .collect(),
        };
        for l in labels {
            match m.kind {
                Kind::Counter => metrics::counter!(m.name, l).increment(0),
                Kind::Gauge => metrics::gauge!(m.name, l).increment(0.0),
                // Registered, so it is rendered (count 0) before the first sample.
                Kind::Histogram => {
                    let _ = metrics::histogram!(m.name, l);
                }
            }
        }
    }
}

/// Serves Prometheus text format at `http://ADDR/metrics` (any other path is a 404),
/// through the same HTTP server as the live view (a cap on connections, a timeout on
/// request heads), with every metric of `role` present from the start ([`CATALOGUE`]).
/// Logs the address actually bound and returns it (the caller prints it on stdout), so
/// `--metrics 127.0.0.1:0` names its port at any log level. Call inside the runtime.
pub fn install(addr: SocketAddr, role: Role) -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    let bound = listener.local_addr()?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("seconds".into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
            ],
        )
        .context("metrics histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    register(role);
    // Histograms are drained by upkeep, which an installed recorder leaves to its caller.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let h = handle.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        h.render(),
                    )
                }
            }),
        )
        .fallback(|| async {
            (
                axum::http::StatusCode::NOT_FOUND,
                "no such page: see /metrics\n",
            )
        });
    tokio::spawn(async move {
        let never = tokio_util::sync::CancellationToken::new();
        if let Err(e) = crate::live::http::serve_router(listener, app, never).await {
            tracing::error!("metrics server failed: {e}");
        }
    });
    tracing::info!("metrics on http://{bound}/metrics");
    Ok(bound)
}

/// A short label for a protocol error, for `receiver_errors_total{kind}`.
pub fn error_kind(e: &rawlink_proto::ProtoError) -> &'static str {
    use rawlink_proto::ProtoError::*;
    match e {
        BadMagic { .. } => "magic",
        UnsupportedVersion { .. } => "version",
        BadHeaderLength(_) => "header_length",
        HeaderCrc { .. } => "header_crc",
        UnknownKind(_) => "kind",
        PayloadTooLarge { .. } | DimensionTooLarge { .. } => "limit",
        PayloadCrc { .. } => "crc",
        BadFrame { .. } => "frame",
        BadMessage { .. } => "message",
        Truncated { .. } => "truncated",
        Decompress { .. } => "decompress",
        Io(_) => "io",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metric names the code reports, read from its `metrics::…!` calls.
    fn reported() -> std::collections::BTreeSet<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![dir.clone()];
        let mut names = std::collections::BTreeSet::new();
        while let Some(p) = files.pop() {
            if p.is_dir() {
                files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if p.extension() != Some(std::ffi::OsStr::new("rs")) || p.ends_with("monitor.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            for kind in ["counter", "gauge", "histogram"] {
                for (i, _) in text.match_indices(&format!("metrics::{kind}!(\"")) {
                    let rest = &text[i + kind.len() + 12..];
                    names.insert(rest[..rest.find('"').unwrap()].to_string());
                }
            }
        }
        names
    }

    #[test]
    fn the_catalogue_lists_exactly_the_metrics_reported() {
        let listed: std::collections::BTreeSet<String> =
            CATALOGUE.iter().map(|m| m.name.to_string()).collect();
        let reported = reported();
        assert!(reported.len() >= 15, "{reported:?}");
        assert_eq!(listed, reported);
        let readme = include_str!("../README.md");
        for m in CATALOGUE {
            assert!(
                readme.contains(&format!("`{}`", m.name)),
                "{} not in the README",
                m.name
            );
        }
    }

    #[test]
    fn error_kinds_lists_every_label_of_error_kind() {
        // Every arm of `error_kind` returns a listed value (read from its source).
        let src = include_str!("monitor.rs");
        let body = &src[src.find("pub fn error_kind").unwrap()..];
        let body = &body[..body.find("\n}\n").unwrap()];
        let mut arms = 0;
        for (i, _) in body.match_indices("=> \"") {
            let v = &body[i + 4..];
            let v = &v[..v.find('"').unwrap()];
            assert!(ERROR_KINDS.contains(&v), "{v} is not in ERROR_KINDS");
            arms += 1;
        }
        // ... and the one the receiver's sequence tracking reports.
        assert_eq!(arms + 1, ERROR_KINDS.len());
        assert!(ERROR_KINDS.contains(&SEQUENCE_ERROR_KIND));
    }
}
