//! Monitoring: the Prometheus endpoint (`--metrics ADDR`) and metric names.
//!
//! Metric names (all prefixed `rawlink_`):
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `server_frames_captured_total` | counter | | frames read from the source |
//! | `server_clients` | gauge | | clients connected now |
//! | `server_client_drops_total` | counter | `peer`, `reason` | frames dropped for a client (`slow`, `overrun`) |
//! | `server_bytes_sent_total` | counter | | bytes written to all clients |
//! | `receiver_frames_total` | counter | | whole, valid frames received |
//! | `receiver_bytes_total` | counter | | payload bytes of those frames |
//! | `receiver_errors_total` | counter | `kind` | stream faults (`crc`, `magic`, `version`, `limit`, `truncated`, …) |
//! | `receiver_server_drops_total` | counter | | drops the server reported for this receiver |
//! | `receiver_missing_frames_total` | counter | | gaps in the sequence numbers |
//! | `receiver_local_drops_total` | counter | | frames this receiver dropped (worker queue full, `latest`) |
//! | `receiver_capture_to_receive_seconds` | histogram | | capture → receive latency |

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::net::SocketAddr;
use std::time::Duration;

/// Serves Prometheus text format at `http://ADDR/metrics` (any other path is a 404),
/// through the same HTTP server as the live view (a cap on connections, a timeout on
/// request heads). Logs the address actually bound, so `--metrics 127.0.0.1:0` names its
/// port. Call inside the runtime.
pub fn install(addr: SocketAddr) -> Result<()> {
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
    Ok(())
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
