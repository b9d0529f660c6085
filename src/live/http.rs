//! The live view's HTTP side: one embedded page, a JSON API, downloads, and a WebSocket
//! per viewer that pushes the newest JPEG preview and the stream's statistics.
//!
//! A viewer's WebSocket task sends the newest view when the previous send has finished,
//! so a slow browser gets fewer frames instead of a growing queue, and nothing it does
//! reaches the receiver. Every error is a one-line `text/plain` answer with a 4xx/5xx
//! status.

use super::{demosaic_name, settings_json, Hub, Stream, View};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use rawlink_isp::{DemosaicMethod, Profile, StageName};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");

/// How long a download waits for a frame to be processed when nobody is watching.
const DEMAND_WAIT: Duration = Duration::from_secs(5);
/// A WebSocket send that takes longer than this ends the session.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Statistics are pushed this often even when no new view is ready.
const STATS_PERIOD: Duration = Duration::from_millis(500);
/// Largest 1:1 crop side.
const MAX_CROP: usize = 1024;

/// An error answer: status and one line of text.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.1),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn stream(hub: &Hub, id: usize) -> ApiResult<Arc<Stream>> {
    hub.stream(id).cloned().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no stream {id} (streams: 0..{})", hub.streams.len()),
        )
    })
}

/// `?pin=N`: the view a paused page holds ([`Stream::pin`]) instead of the newest.
#[derive(Debug, Deserialize)]
struct PinQuery {
    pin: Option<u64>,
}

/// The pinned view when `pin` is given (a 410 once it is no longer held), else the
/// newest view ([`view_of`]).
async fn view_for(s: &Stream, pin: Option<u64>) -> ApiResult<Arc<View>> {
    match pin {
        None => view_of(s).await,
        Some(p) => s.pinned(p).ok_or_else(|| {
            ApiError(
                StatusCode::GONE,
                format!("paused view {p} is no longer held (the page resumed or closed, or more than {} pages paused this stream): pause again", super::MAX_PINS),
            )
        }),
    }
}

fn pin_of(q: PinQ) -> ApiResult<Option<u64>> {
    q.map(|Query(p)| p.pin)
        .map_err(|e| bad(format!("bad query: {}", e.body_text())))
}

async fn view_of(s: &Stream) -> ApiResult<Arc<View>> {
    s.demand(DEMAND_WAIT)
        .await
        .ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, s.why_no_view(DEMAND_WAIT)))
}

/// The router over `hub`.
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/streams", get(list_streams))
        .route("/api/streams/{id}/stats", get(stats))
        .route("/api/streams/{id}/view", get(view_json))
        .route("/api/streams/{id}/isp", get(get_isp).post(post_isp))
        .route("/api/streams/{id}/frame.jpg", get(frame_jpg))
        .route("/api/streams/{id}/frame.png", get(frame_png))
        .route("/api/streams/{id}/frame.raw", get(frame_raw))
        .route("/api/streams/{id}/frame.dng", get(frame_dng))
        .route("/api/streams/{id}/crop.png", get(crop_png))
        .route("/api/streams/{id}/ws", get(ws))
        .method_not_allowed_fallback(|m: axum::http::Method| async move {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {m} not allowed here"),
            )
        })
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such page".into()) })
        .with_state(hub)
}

/// Serves the live view on `listener` until `shutdown`.
///
/// Browsers are held to the page's own origin: a WebSocket whose `Origin` is another
/// site is refused (browsers let any page open one), and on a loopback listener a
/// request must name the machine by loopback address or `localhost` in its `Host`
/// header, so that a page whose own name was re-pointed at 127.0.0.1 (DNS rebinding)
/// cannot read the camera.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let loopback = listener.local_addr()?.ip().is_loopback();
    let app = router(hub).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            match same_origin(req.headers(), loopback) {
                Ok(()) => next.run(req).await,
                Err(e) => e.into_response(),
            }
        },
    ));
    serve_router(listener, app, shutdown).await
}

/// Connections served at once by [`serve_router`]; more are closed as they arrive, so
/// idle clients cannot use up the process's file descriptors (which the receiver needs
/// for its frame files).
pub const MAX_CONNECTIONS: usize = 256;
/// A connection that has not sent a whole request head within this time (including the
/// wait for the next request on a kept-alive connection) is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(15);

/// Serves `app` over HTTP/1.1 on `listener` until `shutdown`, with at most
/// [`MAX_CONNECTIONS`] connections and [`HEADER_TIMEOUT`] for each request head.
/// WebSocket upgrades leave the connection count once upgraded (the live view caps its
/// viewers itself). A failed accept (out of file descriptors, say) is logged and retried,
/// not fatal.
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut refused = 0u64;
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return Ok(()),
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    "HTTP: {MAX_CONNECTIONS} connections open; closing {peer} \
                     ({refused} refused so far)"
                );
            }
            drop(sock);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = b
                .serve_connection(TokioIo::new(sock), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("HTTP connection from {peer}: {e}");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
}

/// The checks of [`serve`]: a WebSocket's `Origin`, when present, must be the `Host`
/// the request was sent to; on a loopback listener the `Host`, when present, must be a
/// loopback address or `localhost`.
fn same_origin(h: &axum::http::HeaderMap, loopback: bool) -> ApiResult<()> {
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    if let (true, Some(host)) = (loopback, host) {
        let name = match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        };
        let name = name.trim_start_matches('[').trim_end_matches(']');
        let ok = name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !ok {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "host {host:?} refused: this live view listens on loopback; \
                     open it as http://localhost:PORT/ or http://127.0.0.1:PORT/"
                ),
            ));
        }
    }
    let upgrade = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if let (true, Some(origin)) = (upgrade, h.get(header::ORIGIN)) {
        let from = origin.to_str().unwrap_or("");
        let authority = from.split_once("://").map_or("", |(_, a)| a);
        if host.is_none_or(|host| !authority.eq_ignore_ascii_case(host)) {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("WebSocket from origin {from:?} refused: not this page's origin"),
            ));
        }
    }
    Ok(())
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
}

async fn list_streams(State(hub): State<Arc<Hub>>) -> Json<serde_json::Value> {
    let v: Vec<serde_json::Value> = hub
        .streams
        .iter()
        .map(|s| serde_json::json!({"id": s.id, "name": s.name}))
        .collect();
    Json(serde_json::json!({"streams": v}))
}

async fn stats(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<usize>,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(stream(&hub, id)?.stats_json()))
}

/// The view's facts, as sent before each JPEG on the WebSocket.
fn view_info(v: &View, offered: &[StageName]) -> serde_json::Value {
    let h = &v.frame.header;
    let stages_ms: serde_json::Map<String, serde_json::Value> = v
        .stages_ms
        .iter()
        .map(|(n, ms)| (n.to_string(), serde_json::json!(ms)))
        .collect();
    serde_json::json!({
        "type": "view",
        "seq": h.seq,
        "timestamp_ns": h.timestamp_ns,
        "exposure_us": h.exposure_us,
        "analog_gain": h.analog_gain,
        "width": h.width,
        "height": h.height,
        "preview": [v.preview.0, v.preview.1],
        "isp_ms": v.isp_ms,
        "jpeg_ms": v.jpeg_ms,
        "jpeg_bytes": v.jpeg.len(),
        "stages": v.stages,
        "stages_ms": stages_ms,
        "wb_gains": v.wb_gains,
        "settings": settings_json(&v.settings, offered),
        "histogram": v.histogram,
    })
}

async fn view_json(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<usize>,
) -> ApiResult<Json<serde_json::Value>> {
    let s = stream(&hub, id)?;
    let v = view_of(&s).await?;
    Ok(Json(view_info(&v, &s.profile_stages(&v.settings))))
}

async fn get_isp(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<usize>,
) -> ApiResult<Json<serde_json::Value>> {
    let s = stream(&hub, id)?;
    let set = s.settings();
    Ok(Json(settings_json(&set, &s.profile_stages(&set))))
}

/// A change of the view's ISP settings; absent fields are left as they are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IspChange {
    /// `default` or `reference`: switching resets the stage toggles.
    profile: Option<String>,
    /// `bilinear`, `malvar`, `rcd`, or `auto` for the profile's own.
    demosaic: Option<String>,
    /// Stage name → on/off.
    stages: Option<BTreeMap<String, bool>>,
    /// Back to the receiver's settings.
    #[serde(default)]
    reset: bool,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

async fn post_isp(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<usize>,
    body: Result<Json<IspChange>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let s = stream(&hub, id)?;
    let Json(change) = body.map_err(|e| bad(format!("bad settings: {}", e.body_text())))?;
    let set = s
        .update_settings(|set| {
            if change.reset {
                *set = s.initial_settings(s.base_isp.profile);
            }
            if let Some(p) = &change.profile {
                let p: Profile = p.parse().map_err(|e| format!("{e}"))?;
                if p != set.profile {
                    *set = s.initial_settings(p);
                }
            }
            if let Some(m) = &change.demosaic {
                set.demosaic = match m.as_str() {
                    "auto" | "" => None,
                    other => Some(
                        other
                            .parse::<DemosaicMethod>()
                            .map_err(|e| format!("{e}"))?,
                    ),
                };
            }
            if set.profile == Profile::Reference
                && set.demosaic.is_some_and(|m| m != DemosaicMethod::Bilinear)
            {
                return Err(format!(
                    "the reference profile always demosaics bilinearly (not {})",
                    set.demosaic.map(demosaic_name).unwrap_or("auto")
                ));
            }
            if let Some(stages) = &change.stages {
                let offered = s.profile_stages(set);
                for (name, on) in stages {
                    let n: StageName = name.parse().map_err(|e| format!("{e}"))?;
                    if !offered.contains(&n) {
                        return Err(format!(
                            "stage {name} is not part of the {} profile",
                            set.profile
                        ));
                    }
                    set.disabled.retain(|d| *d != n);
                    if !on {
                        set.disabled.push(n);
                    }
                }
                set.disabled.sort();
            }
            Ok(())
        })
        .map_err(bad)?;
    tracing::info!(
        stream = id,
        profile = %set.profile,
        demosaic = set.demosaic.map(demosaic_name).unwrap_or("auto"),
        off = ?set.disabled,
        "live view settings changed"
    );
    Ok(Json(settings_json(&set, &s.profile_stages(&set))))
}

fn attachment(body: impl Into<axum::body::Body>, mime: &'static str, name: String) -> Response {
    let mut r = Response::new(body.into());
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

type PinQ = Result<Query<PinQuery>, axum::extract::rejection::QueryRejection>;

async fn frame_jpg(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<usize>,
    q: PinQ,
) -> ApiResult<Response> {
    let v = view_for(&*stream(&hub, id)?, pin_of(q)?).await?;
    let mut r = Response::new(axum::body::Body::from(v.jpeg.clone()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))
}

fn png_of(v: &View, x: usize, y: usize, w: usize, h: usize) -> Result<Vec<u8>, String> {
    let fw = v.frame.header.width as usize;
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in y..y + h {
        let start = (row * fw + x) * 3;
        rgb.extend_from_slice(&v.rgb8[start..start + w * 3]);
    }
    let hd = &v.frame.header;
    let text = [
        ("rawlink.seq", hd.seq.to_string()),
        ("rawlink.timestamp_ns", hd.timestamp_ns.to_string()),
        ("rawlink.exposure_us", hd.exposure_us.to_string()),
        ("rawlink.analog_gain", hd.analog_gain.to_string()),
    ];
    let mut png = Vec::new();
    rawlink_isp::encode::write_png_rgb8(
        &mut png,
        w,
        h,
        &rgb,
        &text,
        rawlink_isp::encode::PngSpeed::Fast,
    )
    .map_err(|e| e.to_string())?;
    Ok(png)
}

/// Downloads and crops encoded at once, over all streams: each holds a copy of a frame's
/// samples while it encodes, so without a bound a burst of requests could take any
/// amount of memory and CPU from the receiver. Others wait up to [`DEMAND_WAIT`].
const MAX_ENCODES: usize = 2;
static ENCODES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_ENCODES);

/// Runs `f` on a blocking thread once one of the [`MAX_ENCODES`] slots is free.
async fn encode_slot<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> ApiResult<T> {
    let _slot = match tokio::time::timeout(DEMAND_WAIT, ENCODES.acquire()).await {
        Ok(Ok(p)) => p,
        _ => {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("busy: {MAX_ENCODES} downloads are being encoded; try again"),
            ))
        }
    };
    blocking(f).await
}

/// The current frame of stream `id` as a download `frame_SEQ.EXT`, from `encode` on a
/// blocking thread (PNG and DNG are encoded once per view and shared).
async fn download(
    hub: &Hub,
    id: usize,
    q: PinQ,
    ext: &str,
    mime: &'static str,
    encode: fn(&View) -> Result<Bytes, String>,
) -> ApiResult<Response> {
    let v = view_for(&*stream(hub, id)?, pin_of(q)?).await?;
    let name = format!("frame_{:06}.{ext}", v.frame.header.seq);
    let body = encode_slot(move || encode(&v)).await?;
    Ok(attachment(body, mime, name))
}

async fn frame_png(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<usize>,
    q: PinQ,
) -> ApiResult<Response> {
    download(&hub, id, q, "png", "image/png", |v| {
        v.png(|v| {
            let h = &v.frame.header;
            png_of(v, 0, 0, h.width as usize, h.height as usize)
        })
    })
    .await
}

async fn frame_raw(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<usize>,
    q: PinQ,
) -> ApiResult<Response> {
    download(&hub, id, q, "raw", "application/octet-stream", |v| {
        // Received frames are already 16-bit little-endian (shared, not copied); only a
        // padded stride needs repacking.
        let r = v.frame.raw().map_err(|e| e.to_string())?;
        if v.frame.payload.len() == r.width() * r.height() * 2 {
            return Ok(v.frame.payload.clone());
        }
        Ok(r.to_vec().into_iter().flat_map(u16::to_le_bytes).collect())
    })
    .await
}

async fn frame_dng(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<usize>,
    q: PinQ,
) -> ApiResult<Response> {
    download(&hub, id, q, "dng", "image/x-adobe-dng", |v| {
        v.dng(|v| {
            crate::sink::dng_of(&v.frame, v.recv_ns, &v.isp, Some(v.wb_gains))
                .map_err(|e| format!("{e:#}"))
        })
    })
    .await
}

/// `crop.png?x=&y=&w=&h=`: a full-resolution region (1:1 zoom), clamped to the frame.
#[derive(Debug, Deserialize)]
struct Crop {
    x: usize,
    y: usize,
    #[serde(default = "default_crop")]
    w: usize,
    #[serde(default = "default_crop")]
    h: usize,
    /// A paused page's view ([`PinQuery`]).
    pin: Option<u64>,
}

fn default_crop() -> usize {
    256
}

async fn crop_png(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<usize>,
    q: Result<Query<Crop>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(c) = q.map_err(|e| bad(format!("bad crop: {}", e.body_text())))?;
    if c.w == 0 || c.h == 0 || c.w > MAX_CROP || c.h > MAX_CROP {
        return Err(bad(format!(
            "crop size must be 1..={MAX_CROP} on each side"
        )));
    }
    let v = view_for(&*stream(&hub, id)?, c.pin).await?;
    let (fw, fh) = (
        v.frame.header.width as usize,
        v.frame.header.height as usize,
    );
    let (w, h) = (c.w.min(fw), c.h.min(fh));
    let (x, y) = (c.x.min(fw - w), c.y.min(fh - h));
    let name = format!("crop_{:06}_{x}_{y}.png", v.frame.header.seq);
    let png = encode_slot(move || png_of(&v, x, y, w, h)).await?;
    Ok(attachment(png, "image/png", name))
}

async fn ws(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<usize>,
    upgrade: WebSocketUpgrade,
) -> ApiResult<Response> {
    let s = stream(&hub, id)?;
    let Some(guard) = s.join() else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many viewers on stream {id} (--http-max-viewers {})",
                hub.config.max_viewers
            ),
        ));
    };
    Ok(upgrade
        .max_message_size(64 << 10)
        .on_upgrade(move |socket| async move {
            ws_session(socket, s).await;
            drop(guard);
        }))
}

async fn send(socket: &mut WebSocket, m: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(m)).await,
        Ok(Ok(()))
    )
}

/// What a page may send on its WebSocket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageMessage {
    /// Pause at the view with this seq (the one the page shows).
    pause: Option<u64>,
    /// With `pause`: the pin the page held for that view before its WebSocket
    /// reconnected; it gets the same pin back while the receiver still holds it.
    pin: Option<u64>,
    /// Resume.
    #[serde(default)]
    resume: bool,
}

/// Views sent to a page that are kept, so that a pause can pin the one it shows even
/// when a newer one was already on its way.
const KEEP_SENT: usize = 2;

/// Pushes views (a JSON `view` message, then the JPEG as a binary message) and, every
/// [`STATS_PERIOD`], a JSON `stats` message, until the browser goes away.
///
/// The page may send `{"pause": SEQ}`: views stop, and the one it shows (seq `SEQ`, or
/// the newest if that one is no longer kept) is pinned ([`Stream::pin`]); the answer,
/// `{"type": "paused", "pin": N, "seq": S}`, gives the pin that its downloads and crops
/// name (`?pin=N`), so they are of the frame on screen (a page told another seq than
/// its own shows the pinned frame instead, `frame.jpg?pin=N`). `{"resume": true}` lets
/// the pin go and views flow again. A page that goes away while paused leaves its pin
/// for [`PIN_GRACE`](super::PIN_GRACE): reconnecting, it sends `{"pause": SEQ, "pin": N}`
/// and gets pin `N` back if that still holds seq `SEQ` ([`Stream::reclaim`]).
async fn ws_session(mut socket: WebSocket, s: Arc<Stream>) {
    enum Next {
        View,
        Stats,
        Page(String),
        Close,
    }
    let mut rx = s.subscribe();
    rx.mark_changed();
    let mut tick = tokio::time::interval(STATS_PERIOD);
    let mut sent: std::collections::VecDeque<Arc<View>> = Default::default();
    let mut pinned: Option<u64> = None;
    let mut paused = false;
    loop {
        let next = tokio::select! {
            m = socket.recv() => match m {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Next::Close,
                Some(Ok(Message::Text(t))) => Next::Page(t.to_string()),
                Some(Ok(_)) => continue,
            },
            r = rx.changed() => if r.is_ok() { Next::View } else { Next::Close },
            _ = tick.tick() => Next::Stats,
        };
        let ok = match next {
            Next::Close => break,
            Next::Stats => {
                let mut j = s.stats_json();
                j["type"] = "stats".into();
                send(&mut socket, Message::Text(j.to_string().into())).await
            }
            Next::Page(text) => {
                let Ok(m) = serde_json::from_str::<PageMessage>(&text) else {
                    tracing::debug!(stream = s.id, "live view: ignored a page message");
                    continue;
                };
                if let Some(seq) = m.pause {
                    paused = true;
                    if let Some(p) = pinned.take() {
                        s.unpin(p);
                    }
                    // A reconnecting page takes back the pin it held, if still held.
                    // Otherwise the view the page shows; failing that (it is no longer
                    // among those kept, or this session has sent nothing yet), the
                    // newest one. The answer's seq tells the page which it got.
                    let held = match m.pin.filter(|&p| s.reclaim(p, seq)) {
                        Some(p) => Some((p, seq)),
                        None => sent
                            .iter()
                            .rev()
                            .find(|v| v.frame.header.seq == seq)
                            .cloned()
                            .or_else(|| rx.borrow().clone())
                            .map(|v| {
                                let seq = v.frame.header.seq;
                                (s.pin(v), seq)
                            }),
                    };
                    pinned = held.map(|(p, _)| p);
                    let answer = match held {
                        Some((p, seq)) => {
                            serde_json::json!({"type": "paused", "pin": p, "seq": seq})
                        }
                        None => serde_json::json!({"type": "paused", "pin": null, "seq": null}),
                    };
                    send(&mut socket, Message::Text(answer.to_string().into())).await
                } else if m.resume {
                    paused = false;
                    if let Some(p) = pinned.take() {
                        s.unpin(p);
                    }
                    rx.mark_changed();
                    true
                } else {
                    true
                }
            }
            Next::View => {
                let v = rx.borrow_and_update().clone();
                match v {
                    // Paused: nothing is sent until the page resumes.
                    Some(_) if paused => true,
                    None => true,
                    Some(v) => {
                        let info = view_info(&v, &s.profile_stages(&v.settings));
                        if sent.len() >= KEEP_SENT {
                            sent.pop_front();
                        }
                        sent.push_back(Arc::clone(&v));
                        send(&mut socket, Message::Text(info.to_string().into())).await
                            && send(&mut socket, Message::Binary(v.jpeg.clone())).await
                    }
                }
            }
        };
        if !ok {
            break;
        }
    }
    if let Some(p) = pinned {
        s.release_later(p, super::PIN_GRACE);
    }
    tracing::debug!(stream = s.id, "live viewer left");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn other_sites_cannot_reach_a_loopback_view() {
        let ok = |p: &[(&'static str, &str)], lo| same_origin(&headers(p), lo).is_ok();
        for host in [
            "localhost:8081",
            "127.0.0.1:8081",
            "[::1]:8081",
            "LOCALHOST",
            "127.0.0.2",
        ] {
            assert!(ok(&[("host", host)], true), "{host}");
        }
        // DNS rebinding: a site's own name pointed at 127.0.0.1.
        assert!(!ok(&[("host", "attacker.example:8081")], true));
        assert!(!ok(&[("host", "192.168.1.5:8081")], true));
        // On a listener the user exposed, names are theirs to choose.
        assert!(ok(&[("host", "camera.local:8081")], false));
        // No Host (HTTP/1.0 tools): allowed.
        assert!(ok(&[], true));
        // WebSockets: only from the page's own origin, or from non-browser clients.
        let ws = |origin: &str, host: &str, lo| {
            ok(
                &[("host", host), ("upgrade", "websocket"), ("origin", origin)],
                lo,
            )
        };
        assert!(ws("http://localhost:8081", "localhost:8081", true));
        assert!(ws("http://camera.local:8081", "camera.local:8081", false));
        assert!(!ws("https://attacker.example", "localhost:8081", true));
        assert!(!ws("https://attacker.example", "camera.local:8081", false));
        assert!(!ws("null", "localhost:8081", true));
        assert!(ok(
            &[("host", "localhost:8081"), ("upgrade", "websocket")],
            true
        ));
        // Plain requests carry an Origin for fetches; the browser's CORS rules apply.
        assert!(ok(
            &[("host", "localhost:8081"), ("origin", "https://a.example")],
            true
        ));
    }
}
