//! The live view's HTTP side: one embedded page, a JSON API, downloads, and a WebSocket
//! per viewer that pushes the newest JPEG preview and the stream's statistics.
//!
//! A viewer's WebSocket task sends the newest view when the previous send has finished,
//! so a slow browser gets fewer frames instead of a growing queue, and nothing it does
//! reaches the receiver. Every error is a one-line `text/plain` answer with a 4xx/5xx
//! status.

use super::{demosaic_name, settings_json, Hub, Stream, View, ViewSettings};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
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

async fn view_of(s: &Stream) -> ApiResult<Arc<View>> {
    s.demand(DEMAND_WAIT).await.ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no frame received yet: waiting for frames".into(),
        )
    })
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
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such page".into()) })
        .with_state(hub)
}

/// Serves the live view on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(hub))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
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
    let mut set = if change.reset {
        ViewSettings {
            profile: s.base_isp.profile,
            demosaic: None,
            disabled: Vec::new(),
        }
    } else {
        s.settings()
    };
    if let Some(p) = &change.profile {
        let p: Profile = p.parse().map_err(|e| bad(format!("{e}")))?;
        if p != set.profile {
            set.profile = p;
            set.disabled.clear();
        }
    }
    if let Some(m) = &change.demosaic {
        set.demosaic = match m.as_str() {
            "auto" | "" => None,
            other => Some(
                other
                    .parse::<DemosaicMethod>()
                    .map_err(|e| bad(format!("{e}")))?,
            ),
        };
    }
    if let Some(stages) = &change.stages {
        let offered = s.profile_stages(&set);
        for (name, on) in stages {
            let n: StageName = name.parse().map_err(|e| bad(format!("{e}")))?;
            if !offered.contains(&n) {
                return Err(bad(format!(
                    "stage {name} is not part of the {} profile",
                    set.profile
                )));
            }
            set.disabled.retain(|d| *d != n);
            if !on {
                set.disabled.push(n);
            }
        }
        set.disabled.sort();
    }
    s.set_settings(set.clone()).map_err(bad)?;
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

async fn frame_jpg(State(hub): State<Arc<Hub>>, Path(id): Path<usize>) -> ApiResult<Response> {
    let v = view_of(&*stream(&hub, id)?).await?;
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

/// The current frame of stream `id` as a download `frame_SEQ.EXT`, encoded by `encode`
/// on a blocking thread.
async fn download(
    hub: &Hub,
    id: usize,
    ext: &str,
    mime: &'static str,
    encode: fn(&View) -> Result<Vec<u8>, String>,
) -> ApiResult<Response> {
    let v = view_of(&*stream(hub, id)?).await?;
    let name = format!("frame_{:06}.{ext}", v.frame.header.seq);
    let body = blocking(move || encode(&v)).await?;
    Ok(attachment(body, mime, name))
}

async fn frame_png(State(hub): State<Arc<Hub>>, Path(id): Path<usize>) -> ApiResult<Response> {
    download(&hub, id, "png", "image/png", |v| {
        let h = &v.frame.header;
        png_of(v, 0, 0, h.width as usize, h.height as usize)
    })
    .await
}

async fn frame_raw(State(hub): State<Arc<Hub>>, Path(id): Path<usize>) -> ApiResult<Response> {
    download(&hub, id, "raw", "application/octet-stream", |v| {
        // Received frames are already 16-bit little-endian; only a padded stride needs
        // repacking.
        let r = v.frame.raw().map_err(|e| e.to_string())?;
        if v.frame.payload.len() == r.width() * r.height() * 2 {
            return Ok(v.frame.payload.to_vec());
        }
        Ok(r.to_vec().into_iter().flat_map(u16::to_le_bytes).collect())
    })
    .await
}

async fn frame_dng(State(hub): State<Arc<Hub>>, Path(id): Path<usize>) -> ApiResult<Response> {
    download(&hub, id, "dng", "image/x-adobe-dng", |v| {
        crate::sink::dng_of(&v.frame, v.recv_ns, &v.isp, Some(v.wb_gains))
            .map_err(|e| format!("{e:#}"))
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
    let v = view_of(&*stream(&hub, id)?).await?;
    let (fw, fh) = (
        v.frame.header.width as usize,
        v.frame.header.height as usize,
    );
    let (w, h) = (c.w.min(fw), c.h.min(fh));
    let (x, y) = (c.x.min(fw - w), c.y.min(fh - h));
    let name = format!("crop_{:06}_{x}_{y}.png", v.frame.header.seq);
    let png = blocking(move || png_of(&v, x, y, w, h)).await?;
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

/// Pushes views (a JSON `view` message, then the JPEG as a binary message) and, every
/// [`STATS_PERIOD`], a JSON `stats` message, until the browser goes away.
async fn ws_session(mut socket: WebSocket, s: Arc<Stream>) {
    enum Next {
        View,
        Stats,
        Close,
    }
    let mut rx = s.subscribe();
    rx.mark_changed();
    let mut tick = tokio::time::interval(STATS_PERIOD);
    loop {
        let next = tokio::select! {
            m = socket.recv() => match m {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Next::Close,
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
            Next::View => {
                let v = rx.borrow_and_update().clone();
                match v {
                    None => true,
                    Some(v) => {
                        let info = view_info(&v, &s.profile_stages(&v.settings));
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
    tracing::debug!(stream = s.id, "live viewer left");
}
