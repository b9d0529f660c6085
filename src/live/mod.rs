//! Live view: the newest frame of each stream, processed and served to browsers.
//!
//! The receiver hands every valid frame to its stream's [`Stream::offer`], which only
//! swaps a reference-counted frame into a slot under a short lock: the receiver never
//! waits for the view. One worker thread per stream takes the newest frame when
//! somebody is watching (or a download asks for one), runs the ISP with the view's own
//! settings (profile, demosaic method, stages switched off in the page), computes the
//! raw histogram, encodes a JPEG preview and publishes the result on a `watch` channel.
//! Frames that arrive while it works are skipped, and the rate is capped
//! (`--http-fps`), so a live view costs the receiver at most that many ISP runs a
//! second. The HTTP side is in [`http`].

pub mod http;

use bytes::Bytes;
use rawlink_frame::{Frame, FrameHeader};
use rawlink_isp::{DemosaicMethod, IspConfig, Pipeline, Profile, RawPlane, StageName};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Latency samples kept per stream for the percentiles.
const LATENCY_WINDOW: usize = 512;
/// Arrival times kept for the frame-rate estimate.
const RATE_WINDOW: Duration = Duration::from_secs(2);
/// How a processing error starts in the stream's detail line.
const VIEW_ERROR: &str = "live view: ";
/// Histogram bins per channel.
pub const HIST_BINS: usize = 256;

/// Settings of the live view.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Most frames processed for the view per second and stream.
    pub max_fps: f64,
    /// Previews wider than this are scaled down by an integer factor.
    pub preview_width: usize,
    /// JPEG quality, 1..=100.
    pub jpeg_quality: u8,
    /// Most WebSocket viewers per stream.
    pub max_viewers: usize,
    /// Threads the view's ISP may use. One by default, so that on a small machine the
    /// view leaves a core to the receiver: with both cores (rayon's global pool) the
    /// receiver's capture→receive p99 at 640×480 30 fps went from 0.9 to 8 ms while four
    /// browsers watched (`scripts/bench_live.py`).
    pub isp_threads: usize,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            max_fps: 15.0,
            preview_width: 1280,
            jpeg_quality: 80,
            max_viewers: 32,
            isp_threads: 1,
        }
    }
}

/// Every stream the live view shows.
pub struct Hub {
    /// Streams, indexed by id.
    pub streams: Vec<Arc<Stream>>,
    /// View settings.
    pub config: LiveConfig,
}

impl Hub {
    /// A hub with one stream per name; `isp` is the receiver's ISP configuration, the
    /// view's starting point.
    pub fn new(names: &[String], isp: &IspConfig, config: LiveConfig) -> Arc<Self> {
        let streams = names
            .iter()
            .enumerate()
            .map(|(id, n)| Stream::new(id, n.clone(), isp.clone(), config.clone()))
            .collect();
        Arc::new(Self { streams, config })
    }

    /// The stream with this id.
    pub fn stream(&self, id: usize) -> Option<&Arc<Stream>> {
        self.streams.get(id)
    }
}

impl Drop for Hub {
    /// Stops the worker threads.
    fn drop(&mut self) {
        for s in &self.streams {
            s.stop();
        }
    }
}

/// The view's own ISP choices, changed from the page.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewSettings {
    /// ISP profile.
    pub profile: Profile,
    /// Demosaic method override.
    pub demosaic: Option<DemosaicMethod>,
    /// Stages of the profile switched off.
    pub disabled: Vec<StageName>,
}

/// A received frame waiting for the view.
struct Arrival {
    frame: Frame,
    recv_ns: u64,
}

/// What the worker waits on.
struct Slot {
    latest: Option<Arc<Arrival>>,
    frame_gen: u64,
    settings: ViewSettings,
    settings_gen: u64,
    demand_gen: u64,
    stop: bool,
}

/// Connection state of a stream, as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Trying to reach the server.
    Connecting,
    /// Connected; frames may or may not be flowing.
    Connected,
    /// Lost the connection; trying again.
    Reconnecting,
    /// The stream is over (end of stream, error or shutdown).
    Ended,
}

/// Counters and facts the receiver reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    /// Frames received whole and valid.
    pub frames: u64,
    /// Payload bytes of those frames.
    pub bytes: u64,
    /// Frames the server dropped for this client.
    pub server_drops: u64,
    /// Gaps in the sequence numbers.
    pub missing: u64,
    /// Messages rejected for a CRC mismatch.
    pub crc_errors: u64,
    /// Other rejected messages.
    pub protocol_errors: u64,
    /// Reconnections after faults.
    pub reconnects: u64,
}

struct Info {
    state: LinkState,
    detail: String,
    source: Option<String>,
    server: Option<String>,
    counters: Counters,
    last: Option<(FrameHeader, u64)>,
    latency_ms: VecDeque<f64>,
    arrivals: VecDeque<(Instant, usize)>,
    processed: VecDeque<Instant>,
    /// The last processing error, until a frame processes again (the detail line may
    /// have been overwritten by a link state since).
    view_error: Option<String>,
}

/// One stream's live state.
pub struct Stream {
    /// Index in the hub.
    pub id: usize,
    /// Where it comes from (the `--connect` address).
    pub name: String,
    base_isp: IspConfig,
    config: LiveConfig,
    slot: Mutex<Slot>,
    wake: Condvar,
    info: Mutex<Info>,
    view: watch::Sender<Option<Arc<View>>>,
    viewers: AtomicUsize,
    /// Views held for paused pages ([`Stream::pin`]).
    pins: Mutex<Pins>,
}

/// Views pinned by paused pages, newest last, at most [`MAX_PINS`].
#[derive(Default)]
struct Pins {
    next: u64,
    held: VecDeque<Pin>,
}

/// One pinned view.
struct Pin {
    id: u64,
    view: Arc<View>,
    /// Sessions holding it.
    holders: u32,
    /// With no holder left: when it goes, unless a page takes it back first
    /// ([`Stream::reclaim`]).
    orphan_until: Option<Instant>,
}

impl Pins {
    /// Lets orphaned pins whose grace has run out go.
    fn sweep(&mut self, now: Instant) {
        self.held
            .retain(|p| p.orphan_until.is_none_or(|until| now < until));
    }
}

/// How long a pin outlives the page session that held it, so that a paused page whose
/// WebSocket reconnects gets the same frame back ([`Stream::reclaim`]).
pub const PIN_GRACE: Duration = Duration::from_secs(60);

/// Views a stream holds for paused pages at most; pausing one more lets the oldest go
/// (each holds a full-size frame, so this bounds the memory pausing can take).
pub const MAX_PINS: usize = 4;

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The newest processed frame.
pub struct View {
    /// The raw frame (for RAW and DNG downloads).
    pub frame: Frame,
    /// When it arrived, ns since the epoch.
    pub recv_ns: u64,
    /// Full-resolution 8-bit RGB, interleaved (PNG downloads, 1:1 crops).
    pub rgb8: Vec<u8>,
    /// JPEG preview.
    pub jpeg: Bytes,
    /// Preview geometry.
    pub preview: (usize, usize),
    /// Histogram of the raw data.
    pub histogram: Histogram,
    /// Settings it was processed with.
    pub settings: ViewSettings,
    /// Stages that ran.
    pub stages: Vec<&'static str>,
    /// Per-stage time, ms.
    pub stages_ms: Vec<(&'static str, f64)>,
    /// ISP time, ms.
    pub isp_ms: f64,
    /// JPEG encoding time (with the downscale), ms.
    pub jpeg_ms: f64,
    /// White-balance gains the ISP applied.
    pub wb_gains: [f64; 3],
    /// The ISP configuration it used (for the DNG colour matrix).
    pub isp: IspConfig,
    /// The frame and settings generations it was made from (see [`Stream::demand`]).
    gens: (u64, u64),
    /// The full-size PNG and the DNG, encoded on first download and shared by every
    /// later one.
    png: std::sync::OnceLock<Result<Bytes, String>>,
    dng: std::sync::OnceLock<Result<Bytes, String>>,
}

impl View {
    /// The full-size PNG, encoded once per view.
    pub fn png(
        &self,
        encode: impl FnOnce(&View) -> Result<Vec<u8>, String>,
    ) -> Result<Bytes, String> {
        self.once(&self.png, encode)
    }

    /// The DNG, encoded once per view.
    pub fn dng(
        &self,
        encode: impl FnOnce(&View) -> Result<Vec<u8>, String>,
    ) -> Result<Bytes, String> {
        self.once(&self.dng, encode)
    }

    fn once(
        &self,
        cell: &std::sync::OnceLock<Result<Bytes, String>>,
        encode: impl FnOnce(&View) -> Result<Vec<u8>, String>,
    ) -> Result<Bytes, String> {
        cell.get_or_init(|| encode(self).map(Bytes::from)).clone()
    }
}

/// Per-channel histogram of raw samples with clipping figures.
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    /// Code range covered: bins span `0..=max_code` evenly.
    pub max_code: u16,
    /// Samples at or above this are counted as clipped.
    pub white_level: u16,
    /// Samples at or below this are counted as crushed (the black level).
    pub black_level: u16,
    /// Counts for R, G (both greens) and B, [`HIST_BINS`] each.
    pub r: Vec<u32>,
    /// Green counts.
    pub g: Vec<u32>,
    /// Blue counts.
    pub b: Vec<u32>,
    /// Percentage of clipped samples per channel, R G B.
    pub clipped_pct: [f64; 3],
    /// Percentage of samples at or below the black level, R G B.
    pub crushed_pct: [f64; 3],
}

/// Histogram of `frame`'s raw samples, by CFA colour. Each row is walked as two
/// interleaved halves (even and odd columns) whose colours are fixed for the row, so
/// there is no per-pixel branch on the colour.
pub fn histogram(frame: &Frame) -> Result<Histogram, rawlink_frame::FrameError> {
    let h = &frame.header;
    let raw = frame.raw()?;
    let bits = h.format.bits;
    let max_code = h.format.max_value();
    let shift = bits.saturating_sub(8) as u32;
    let white = h.white_level.clamp(1, max_code);
    let black = h.black_level.min(white - 1);
    let mut counts = [[0u32; HIST_BINS]; 3];
    let mut clipped = [0u64; 3];
    let mut crushed = [0u64; 3];
    let mut total = [0u64; 3];
    let cell = h.format.pattern.cell();
    let mut row = vec![0u16; raw.width()];
    for r in 0..raw.height() {
        raw.read_row(r, &mut row);
        for (parity, ch) in cell[r & 1].iter().enumerate() {
            let c = *ch as usize;
            let bins = &mut counts[c];
            let (mut clip, mut crush, mut n) = (0u64, 0u64, 0u64);
            for &v in row.iter().skip(parity).step_by(2) {
                bins[((v >> shift) as usize).min(HIST_BINS - 1)] += 1;
                clip += (v >= white) as u64;
                crush += (v <= black) as u64;
                n += 1;
            }
            clipped[c] += clip;
            crushed[c] += crush;
            total[c] += n;
        }
    }
    let pct = |a: [u64; 3]| {
        let mut p = [0.0; 3];
        for i in 0..3 {
            p[i] = if total[i] > 0 {
                a[i] as f64 * 100.0 / total[i] as f64
            } else {
                0.0
            };
        }
        p
    };
    let [r, g, b] = counts.map(|c| c.to_vec());
    Ok(Histogram {
        max_code,
        white_level: white,
        black_level: black,
        r,
        g,
        b,
        clipped_pct: pct(clipped),
        crushed_pct: pct(crushed),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `p`th percentile (nearest rank) of a sorted sample; 0 for an empty one.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn rate(times: impl Iterator<Item = Instant>, now: Instant) -> f64 {
    let v: Vec<Instant> = times.collect();
    match (v.first(), v.len()) {
        (Some(first), n) if n >= 2 => {
            let span = now.duration_since(*first).as_secs_f64().max(1e-3);
            (n - 1) as f64 / span
        }
        _ => 0.0,
    }
}

impl Stream {
    fn new(id: usize, name: String, base_isp: IspConfig, config: LiveConfig) -> Arc<Self> {
        let settings = ViewSettings {
            profile: base_isp.profile,
            demosaic: None,
            disabled: disabled_by(&base_isp),
        };
        let (view, _) = watch::channel(None);
        let s = Arc::new(Self {
            id,
            name,
            base_isp,
            config,
            slot: Mutex::new(Slot {
                latest: None,
                frame_gen: 0,
                settings,
                settings_gen: 0,
                demand_gen: 0,
                stop: false,
            }),
            wake: Condvar::new(),
            info: Mutex::new(Info {
                state: LinkState::Connecting,
                detail: String::new(),
                source: None,
                server: None,
                counters: Counters::default(),
                last: None,
                latency_ms: VecDeque::new(),
                arrivals: VecDeque::new(),
                processed: VecDeque::new(),
                view_error: None,
            }),
            view,
            viewers: AtomicUsize::new(0),
            pins: Mutex::new(Pins::default()),
        });
        let worker = Arc::clone(&s);
        let spawned = std::thread::Builder::new()
            .name(format!("live-{id}"))
            .spawn(move || worker.run());
        if let Err(e) = spawned {
            tracing::error!("live view: cannot start the worker thread: {e}");
        }
        s
    }

    /// Hands a received frame to the view (never blocks beyond a short lock).
    pub fn offer(&self, frame: &Frame, recv_ns: u64, latency_ms: Option<f64>, c: Counters) {
        {
            let mut info = lock(&self.info);
            let now = Instant::now();
            info.arrivals.push_back((now, frame.payload.len()));
            while info
                .arrivals
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
            {
                info.arrivals.pop_front();
            }
            if let Some(l) = latency_ms {
                if info.latency_ms.len() == LATENCY_WINDOW {
                    info.latency_ms.pop_front();
                }
                info.latency_ms.push_back(l);
            }
            info.counters = c;
            info.last = Some((frame.header, recv_ns));
            if info.state != LinkState::Connected {
                info.state = LinkState::Connected;
                info.detail.clear();
            }
        }
        let mut slot = lock(&self.slot);
        slot.latest = Some(Arc::new(Arrival {
            frame: frame.clone(),
            recv_ns,
        }));
        slot.frame_gen += 1;
        drop(slot);
        self.wake.notify_one();
    }

    /// Updates the counters without a frame (after a rejected message, a notice).
    pub fn counters(&self, c: Counters) {
        lock(&self.info).counters = c;
    }

    /// Records a connection state change.
    pub fn state(&self, state: LinkState, detail: impl Into<String>) {
        let mut info = lock(&self.info);
        info.state = state;
        info.detail = detail.into();
    }

    /// Records the stream-start facts.
    pub fn stream_info(&self, source: &str, server: &str) {
        let mut info = lock(&self.info);
        info.source = Some(source.to_string());
        info.server = Some(server.to_string());
    }

    /// The newest view, watched.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<View>>> {
        self.view.subscribe()
    }

    /// The newest view, if any.
    #[cfg(test)]
    fn current(&self) -> Option<Arc<View>> {
        self.view.borrow().clone()
    }

    /// A view of the newest frame with the current settings: the published one if it is
    /// that (or, while somebody watches, if it has the current settings: the worker is
    /// keeping it fresh anyway); otherwise the worker is asked for one, and this waits up
    /// to `wait` for it, returning the newest view there is when the time is up.
    ///
    /// Only a view that is out of date asks the worker, so a page that fetches a crop
    /// after every preview (1:1 zoom) does not make it process the same frame again.
    pub async fn demand(&self, wait: Duration) -> Option<Arc<View>> {
        let mut rx = self.view.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        let want = {
            let mut slot = lock(&self.slot);
            let have = rx.borrow_and_update().clone();
            let want = (slot.frame_gen, slot.settings_gen);
            let current = have
                .as_ref()
                .is_some_and(|v| v.gens.1 == want.1 && (v.gens.0 == want.0 || self.viewers() > 0));
            if current {
                return have;
            }
            slot.demand_gen += 1;
            want
        };
        self.wake.notify_one();
        loop {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {
                    let v = rx.borrow_and_update().clone();
                    if v.as_ref()
                        .is_some_and(|v| v.gens.1 >= want.1 && v.gens.0 >= want.0)
                    {
                        return v;
                    }
                }
                _ => return rx.borrow().clone(),
            }
        }
    }

    /// Holds `view` for a paused page, so that its downloads and crops are of the frame
    /// it shows rather than the newest; returns the pin's number. At most [`MAX_PINS`]
    /// are held per stream: a new one lets the oldest go.
    pub fn pin(&self, view: Arc<View>) -> u64 {
        let mut p = lock(&self.pins);
        p.sweep(Instant::now());
        p.next += 1;
        let id = p.next;
        if p.held.len() >= MAX_PINS {
            p.held.pop_front();
        }
        p.held.push_back(Pin {
            id,
            view,
            holders: 1,
            orphan_until: None,
        });
        id
    }

    /// One holder lets pin `id` go; the pin goes with its last holder (nothing if it is
    /// already gone).
    pub fn unpin(&self, id: u64) {
        self.drop_holder(id, Duration::ZERO);
    }

    /// One holder goes away without resuming (its page closed or lost its WebSocket):
    /// with no holder left, the pin stays for `grace`, for the page to take back when it
    /// reconnects ([`Stream::reclaim`]).
    pub fn release_later(&self, id: u64, grace: Duration) {
        self.drop_holder(id, grace);
    }

    /// One holder of pin `id` fewer; with none left, the pin goes once `grace` has
    /// passed (at once for zero).
    fn drop_holder(&self, id: u64, grace: Duration) {
        let mut p = lock(&self.pins);
        let now = Instant::now();
        if let Some(pin) = p.held.iter_mut().find(|x| x.id == id) {
            pin.holders = pin.holders.saturating_sub(1);
            if pin.holders == 0 {
                pin.orphan_until = Some(now + grace);
            }
        }
        p.sweep(now);
    }

    /// Takes pin `id` for one more holder if it is still held and holds the view with
    /// sequence number `seq` (a page that paused at `seq` with that pin, reconnecting);
    /// false otherwise.
    pub fn reclaim(&self, id: u64, seq: u64) -> bool {
        let mut p = lock(&self.pins);
        p.sweep(Instant::now());
        match p
            .held
            .iter_mut()
            .find(|x| x.id == id && x.view.frame.header.seq == seq)
        {
            Some(pin) => {
                pin.holders += 1;
                pin.orphan_until = None;
                true
            }
            None => false,
        }
    }

    /// The view held by pin `id`, if it is still held.
    pub fn pinned(&self, id: u64) -> Option<Arc<View>> {
        let mut p = lock(&self.pins);
        p.sweep(Instant::now());
        p.held
            .iter()
            .find(|x| x.id == id)
            .map(|x| Arc::clone(&x.view))
    }

    /// Why [`Stream::demand`] found no view within `waited`, in one line: no frame yet,
    /// the last processing error, or frames that are still being processed.
    pub fn why_no_view(&self, waited: Duration) -> String {
        if lock(&self.slot).frame_gen == 0 {
            return "no frame received yet: waiting for frames".into();
        }
        match lock(&self.info).view_error.clone() {
            Some(e) => format!("frames arrived but could not be processed: {e}"),
            None => format!(
                "frames arrived but none was processed within {:.0} s; try again",
                waited.as_secs_f64()
            ),
        }
    }

    /// WebSocket viewers now.
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::SeqCst)
    }

    /// Registers a viewer if there is room; the guard unregisters it.
    pub fn join(self: &Arc<Self>) -> Option<ViewerGuard> {
        let max = self.config.max_viewers;
        let joined = self
            .viewers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !joined {
            return None;
        }
        self.wake.notify_one();
        Some(ViewerGuard(Arc::clone(self)))
    }

    /// The view settings now.
    pub fn settings(&self) -> ViewSettings {
        lock(&self.slot).settings.clone()
    }

    /// Changes the view settings with `change`, and keeps the result if it passes the
    /// checks against the stream's format. The whole change happens under the slot's
    /// lock, so two changes made at once both apply.
    pub fn update_settings(
        &self,
        change: impl FnOnce(&mut ViewSettings) -> Result<(), String>,
    ) -> Result<ViewSettings, String> {
        let header = lock(&self.info).last.map(|(h, _)| h);
        let mut slot = lock(&self.slot);
        let mut s = slot.settings.clone();
        change(&mut s)?;
        self.isp_config(&s, header.as_ref())
            .validate()
            .map_err(|e| e.to_string())?;
        if slot.settings != s {
            slot.settings = s.clone();
            slot.settings_gen += 1;
        }
        drop(slot);
        self.wake.notify_one();
        Ok(s)
    }

    /// Replaces the view settings after checking them against the stream's format.
    #[cfg(test)]
    pub fn set_settings(&self, s: ViewSettings) -> Result<(), String> {
        self.update_settings(|set| {
            *set = s;
            Ok(())
        })
        .map(|_| ())
    }

    /// The settings the view starts from, and returns to on a reset, for `profile`: the
    /// receiver's stages where it is the receiver's profile (`--stages`), all of the
    /// profile's otherwise.
    pub fn initial_settings(&self, profile: Profile) -> ViewSettings {
        ViewSettings {
            profile,
            demosaic: None,
            disabled: disabled_by(&self.profile_base(profile)),
        }
    }

    /// Stages the page offers for the settings' profile: the profile's own and, for the
    /// receiver's profile, any others its `--stages` list adds.
    pub fn profile_stages(&self, s: &ViewSettings) -> Vec<StageName> {
        offered_by(&self.profile_base(s.profile))
    }

    fn profile_base(&self, profile: Profile) -> IspConfig {
        if profile == self.base_isp.profile {
            self.base_isp.clone()
        } else {
            IspConfig::new(profile, self.base_isp.pattern, self.base_isp.bits)
        }
    }

    /// The ISP configuration for a frame with these settings: the offered stages less
    /// the ones switched off.
    fn isp_config(&self, s: &ViewSettings, header: Option<&FrameHeader>) -> IspConfig {
        let base = self.profile_base(s.profile);
        let offered = offered_by(&base);
        let mut c = match header {
            Some(h) => crate::sink::frame_config(&base, h),
            None => base,
        };
        if let Some(m) = s.demosaic {
            c.demosaic.method = m;
        }
        let on: Vec<StageName> = offered
            .into_iter()
            .filter(|n| !s.disabled.contains(n))
            .collect();
        if on != c.active_stages() {
            c.stages = Some(on);
        }
        c
    }

    fn stop(&self) {
        lock(&self.slot).stop = true;
        self.wake.notify_all();
    }

    /// The worker: waits for work, processes the newest frame, publishes the view.
    fn run(self: Arc<Self>) {
        let (mut done_frame, mut done_settings, mut done_demand) = (0u64, 0u64, 0u64);
        let mut pipeline: Option<(IspConfig, Pipeline)> = None;
        let min_gap = Duration::from_secs_f64(1.0 / self.config.max_fps.max(0.1));
        let mut last_run: Option<Instant> = None;
        lower_priority();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.config.isp_threads.max(1))
            .thread_name(move |i| format!("live-isp-{i}"))
            .start_handler(|_| lower_priority())
            .build()
            .inspect_err(|e| tracing::warn!("live view: no thread pool of its own ({e})"))
            .ok();
        loop {
            let (arrival, settings, gens) = {
                let mut slot = lock(&self.slot);
                loop {
                    if slot.stop {
                        return;
                    }
                    let watched = self.viewers() > 0;
                    let fresh = slot.frame_gen != done_frame
                        || slot.settings_gen != done_settings
                        || slot.demand_gen != done_demand;
                    let wanted = watched || slot.demand_gen != done_demand;
                    if slot.latest.is_some() && fresh && wanted {
                        break;
                    }
                    slot = self
                        .wake
                        .wait_timeout(slot, Duration::from_millis(500))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
                let gens = (slot.frame_gen, slot.settings_gen, slot.demand_gen);
                (slot.latest.clone(), slot.settings.clone(), gens)
            };
            // Rate cap (`--http-fps`), for viewers and downloads alike: only a settings
            // change is served at once.
            // The wait is on the wake-up signal, so a settings change (or a stop) made
            // meanwhile is served at once, however low the cap.
            if let Some(t) = last_run {
                let elapsed = t.elapsed();
                if gens.1 == done_settings && elapsed < min_gap {
                    let slot = lock(&self.slot);
                    if slot.settings_gen == gens.1 && !slot.stop {
                        drop(
                            self.wake
                                .wait_timeout(slot, min_gap - elapsed)
                                .map(|(g, _)| g)
                                .unwrap_or_else(|e| e.into_inner().0),
                        );
                    }
                    continue;
                }
            }
            (done_frame, done_settings, done_demand) = gens;
            let Some(arrival) = arrival else { continue };
            last_run = Some(Instant::now());
            match self.process(
                &arrival,
                &settings,
                (gens.0, gens.1),
                &mut pipeline,
                pool.as_ref(),
            ) {
                Ok(view) => {
                    let mut info = lock(&self.info);
                    // A processing error is news only until a frame processes again.
                    if info.detail.starts_with(VIEW_ERROR) {
                        info.detail.clear();
                    }
                    info.view_error = None;
                    let now = Instant::now();
                    info.processed.push_back(now);
                    while info
                        .processed
                        .front()
                        .is_some_and(|t| now.duration_since(*t) > RATE_WINDOW)
                    {
                        info.processed.pop_front();
                    }
                    drop(info);
                    self.view.send_replace(Some(Arc::new(view)));
                }
                Err(e) => {
                    tracing::warn!(stream = self.id, "live view: {e}");
                    let mut info = lock(&self.info);
                    info.detail = format!("{VIEW_ERROR}{e}");
                    info.view_error = Some(e);
                }
            }
        }
    }

    fn process(
        &self,
        a: &Arrival,
        settings: &ViewSettings,
        gens: (u64, u64),
        cache: &mut Option<(IspConfig, Pipeline)>,
        pool: Option<&rayon::ThreadPool>,
    ) -> Result<View, String> {
        let h = &a.frame.header;
        let cfg = self.isp_config(settings, Some(h));
        let reuse = matches!(cache, Some((c, _)) if *c == cfg);
        if !reuse {
            let p = Pipeline::new(&cfg).map_err(|e| e.to_string())?;
            *cache = Some((cfg.clone(), p));
        }
        let Some((_, pipeline)) = cache.as_ref() else {
            return Err("no pipeline".into());
        };
        let histogram = histogram(&a.frame).map_err(|e| e.to_string())?;
        let raw = a.frame.raw().map_err(|e| e.to_string())?;
        let (w, hgt) = (raw.width(), raw.height());
        let plane = RawPlane::new(w, hgt, raw.to_vec()).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let out = match pool {
            Some(p) => p.install(|| pipeline.run(plane)),
            None => pipeline.run(plane),
        };
        let rgb8 = out.to_rgb8();
        let isp_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let (preview, pw, ph) = downscale(&rgb8, w, hgt, self.config.preview_width);
        let jpeg = encode_jpeg(
            preview.as_deref().unwrap_or(&rgb8),
            pw,
            ph,
            self.config.jpeg_quality,
        )?;
        let jpeg_ms = t1.elapsed().as_secs_f64() * 1e3;
        Ok(View {
            frame: a.frame.clone(),
            recv_ns: a.recv_ns,
            rgb8,
            jpeg: Bytes::from(jpeg),
            preview: (pw, ph),
            histogram,
            settings: settings.clone(),
            stages: pipeline.stage_names(),
            stages_ms: out
                .timings
                .iter()
                .map(|(n, d)| (*n, d.as_secs_f64() * 1e3))
                .collect(),
            isp_ms,
            jpeg_ms,
            wb_gains: out.stats.wb_gains,
            isp: cfg,
            gens,
            png: std::sync::OnceLock::new(),
            dng: std::sync::OnceLock::new(),
        })
    }

    /// The stream's facts and counters as the page shows them.
    pub fn stats_json(&self) -> serde_json::Value {
        let info = lock(&self.info);
        let now = Instant::now();
        let mut lat: Vec<f64> = info.latency_ms.iter().copied().collect();
        lat.sort_by(|a, b| a.total_cmp(b));
        let fps_in = rate(info.arrivals.iter().map(|(t, _)| *t), now);
        let bytes: usize = info.arrivals.iter().skip(1).map(|(_, n)| *n).sum();
        let span = info
            .arrivals
            .front()
            .map_or(0.0, |(t, _)| now.duration_since(*t).as_secs_f64());
        let mbps = if span > 0.0 {
            bytes as f64 / span / 1e6
        } else {
            0.0
        };
        let fps_processed = rate(info.processed.iter().copied(), now);
        let stale = info
            .arrivals
            .back()
            .is_none_or(|(t, _)| now.duration_since(*t) > Duration::from_secs(2));
        let state = match info.state {
            LinkState::Connected if info.last.is_none() => "waiting for frames",
            LinkState::Connected if stale => "connected, no frames for 2 s",
            LinkState::Connected => "streaming",
            LinkState::Connecting => "connecting",
            LinkState::Reconnecting => "reconnecting",
            LinkState::Ended => "ended",
        };
        let frame = info.last.map(|(h, recv_ns)| {
            serde_json::json!({
                "seq": h.seq,
                "timestamp_ns": h.timestamp_ns,
                "clock": format!("{:?}", h.clock).to_lowercase(),
                "recv_ns": recv_ns,
                "exposure_us": h.exposure_us,
                "analog_gain": h.analog_gain,
                "width": h.width,
                "height": h.height,
                "pattern": h.format.pattern.name(),
                "bits": h.format.bits,
                "black_level": h.black_level,
                "white_level": h.white_level,
            })
        });
        let settings = self.settings();
        let offered = self.profile_stages(&settings);
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "state": state,
            "link": info.state,
            "detail": info.detail,
            "source": info.source,
            "server": info.server,
            "counters": info.counters,
            "fps_in": fps_in,
            "fps_processed": fps_processed,
            "mb_per_s": mbps,
            "latency_ms": {
                "p50": percentile(&lat, 50.0),
                "p90": percentile(&lat, 90.0),
                "p99": percentile(&lat, 99.0),
                "samples": lat.len(),
            },
            "frame": frame,
            "viewers": self.viewers(),
            "settings": settings_json(&settings, &offered),
        })
    }
}

/// Lowers the calling thread's scheduling priority as far as it goes (nice 19 on Linux):
/// the view's work then yields the CPU to the receiver whenever the receiver wants it.
/// The stages a configuration's profile runs with no stage list, plus those of its list.
fn offered_by(c: &IspConfig) -> Vec<StageName> {
    let mut all = IspConfig {
        stages: None,
        ..c.clone()
    }
    .active_stages();
    all.extend(c.stages.iter().flatten().copied());
    all.sort();
    all.dedup();
    all
}

/// The offered stages a configuration's stage list leaves out.
fn disabled_by(c: &IspConfig) -> Vec<StageName> {
    let on = c.active_stages();
    offered_by(c)
        .into_iter()
        .filter(|n| !on.contains(n))
        .collect()
}

fn lower_priority() {
    if let Err(e) =
        thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
    {
        tracing::debug!("live view: cannot lower the thread priority: {e:?}");
    }
}

/// Settings as JSON: profile, demosaic method, and every stage of the profile with
/// whether it is on.
pub fn settings_json(s: &ViewSettings, offered: &[StageName]) -> serde_json::Value {
    let stages: Vec<serde_json::Value> = offered
        .iter()
        .map(|n| serde_json::json!({"name": n.as_str(), "on": !s.disabled.contains(n)}))
        .collect();
    serde_json::json!({
        "profile": s.profile.to_string(),
        "demosaic": s.demosaic.map(demosaic_name),
        "stages": stages,
    })
}

/// The lower-case name of a demosaic method.
pub fn demosaic_name(m: DemosaicMethod) -> &'static str {
    match m {
        DemosaicMethod::Bilinear => "bilinear",
        DemosaicMethod::Malvar => "malvar",
        DemosaicMethod::Rcd => "rcd",
    }
}

/// Unregisters a viewer when dropped.
pub struct ViewerGuard(Arc<Stream>);

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.0.viewers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Box-filters interleaved RGB down by the smallest integer factor that makes it at most
/// `max_w` wide. `None` (and the input size) when it already fits.
pub fn downscale(rgb: &[u8], w: usize, h: usize, max_w: usize) -> (Option<Vec<u8>>, usize, usize) {
    let f = w.div_ceil(max_w.max(1)).max(1);
    if f == 1 {
        return (None, w, h);
    }
    let (ow, oh) = ((w / f).max(1), (h / f).max(1));
    let mut out = vec![0u8; ow * oh * 3];
    let mut acc = vec![0u32; ow * 3];
    let n = (f * f) as u32;
    for (oy, orow) in out.chunks_exact_mut(ow * 3).enumerate() {
        acc.iter_mut().for_each(|a| *a = 0);
        for y in oy * f..(oy * f + f).min(h) {
            let row = &rgb[y * w * 3..(y * w + ow * f) * 3];
            for (ox, px) in row.chunks_exact(f * 3).enumerate() {
                for k in 0..f {
                    for c in 0..3 {
                        acc[ox * 3 + c] += px[k * 3 + c] as u32;
                    }
                }
            }
        }
        for (o, a) in orow.iter_mut().zip(&acc) {
            *o = ((a + n / 2) / n) as u8;
        }
    }
    (Some(out), ow, oh)
}

/// Encodes interleaved 8-bit RGB as a baseline JPEG.
pub fn encode_jpeg(rgb: &[u8], w: usize, h: usize, quality: u8) -> Result<Vec<u8>, String> {
    let (w16, h16) = match (u16::try_from(w), u16::try_from(h)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Err(format!("{w}x{h} is too large for a JPEG preview")),
    };
    let mut out = Vec::with_capacity(w * h / 4);
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(rgb, w16, h16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| format!("JPEG encoding failed: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rawlink_frame::{BayerPattern, Channel, PixelFormat};

    fn site(pattern: BayerPattern, row: usize, col: usize) -> Channel {
        pattern.cell()[row & 1][col & 1]
    }

    fn frame(w: u32, h: u32, f: impl Fn(usize, usize) -> u16) -> Frame {
        let fmt = PixelFormat::unpacked(BayerPattern::Rggb, 12).unwrap();
        let mut header = FrameHeader::new(7, w, h, fmt);
        header.black_level = 64;
        header.white_level = 4095;
        let mut p = Vec::new();
        for r in 0..h as usize {
            for c in 0..w as usize {
                p.extend_from_slice(&f(r, c).to_le_bytes());
            }
        }
        Frame::new(header, p.into()).unwrap()
    }

    #[test]
    fn histogram_counts_each_cfa_colour_and_clipping() {
        // R sites clipped, B sites at black, greens mid-scale.
        let f = frame(8, 4, |r, c| match site(BayerPattern::Rggb, r, c) {
            Channel::R => 4095,
            Channel::G => 2048,
            Channel::B => 10,
        });
        let h = histogram(&f).unwrap();
        assert_eq!(h.r.iter().sum::<u32>(), 8);
        assert_eq!(h.g.iter().sum::<u32>(), 16);
        assert_eq!(h.b.iter().sum::<u32>(), 8);
        assert_eq!(h.r[255], 8);
        assert_eq!(h.g[128], 16);
        assert_eq!(h.b[0], 8);
        assert_eq!(h.clipped_pct, [100.0, 0.0, 0.0]);
        assert_eq!(h.crushed_pct, [0.0, 0.0, 100.0]);
    }

    #[test]
    fn downscale_averages_blocks() {
        let w = 4;
        let rgb: Vec<u8> = (0..w * 2).flat_map(|i| [i as u8 * 10, 0, 255]).collect();
        let (out, ow, oh) = downscale(&rgb, w, 2, 2);
        let out = out.unwrap();
        assert_eq!((ow, oh), (2, 1));
        // Block 0: pixels 0, 1, 4, 5 -> mean of 0, 10, 40, 50 = 25.
        assert_eq!(&out[..3], &[25, 0, 255]);
        assert_eq!(downscale(&rgb, w, 2, 4).0, None);
    }

    #[test]
    fn jpeg_is_a_jpeg() {
        let rgb = vec![128u8; 16 * 8 * 3];
        let j = encode_jpeg(&rgb, 16, 8, 80).unwrap();
        assert_eq!(&j[..2], &[0xFF, 0xD8]);
        assert_eq!(&j[j.len() - 2..], &[0xFF, 0xD9]);
    }

    #[test]
    fn settings_are_checked_and_stages_listed() {
        let isp = IspConfig::new(Profile::Default, BayerPattern::Rggb, 12);
        let hub = Hub::new(&["x".into()], &isp, LiveConfig::default());
        let s = &hub.streams[0];
        let mut v = s.settings();
        assert!(s.profile_stages(&v).contains(&StageName::Sharpen));
        v.disabled = vec![StageName::Demosaic];
        assert!(
            s.set_settings(v.clone()).is_err(),
            "no demosaic cannot make RGB"
        );
        v.disabled = vec![StageName::Sharpen];
        s.set_settings(v.clone()).unwrap();
        assert_eq!(s.settings(), v);
        let json = s.stats_json();
        assert_eq!(json["state"], "connecting");
        let stages = json["settings"]["stages"].as_array().unwrap();
        assert!(stages
            .iter()
            .any(|st| st["name"] == "sharpen" && st["on"] == false));
    }

    #[test]
    fn offered_frames_are_processed_only_when_wanted() {
        let isp = IspConfig::new(Profile::Default, BayerPattern::Rggb, 12);
        let hub = Hub::new(&["x".into()], &isp, LiveConfig::default());
        let s = Arc::clone(&hub.streams[0]);
        let f = frame(64, 32, |r, c| ((r * 64 + c) * 2) as u16);
        s.offer(&f, 1, Some(0.5), Counters::default());
        std::thread::sleep(Duration::from_millis(300));
        assert!(s.current().is_none(), "nobody watches: no work");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let v = rt.block_on(s.demand(Duration::from_secs(10))).unwrap();
        assert_eq!(v.frame.header.seq, 7);
        assert_eq!(v.rgb8.len(), 64 * 32 * 3);
        assert_eq!(v.preview, (64, 32));
        assert_eq!(s.stats_json()["frame"]["seq"], 7);
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_receiver_stage_list_is_offered_with_the_rest_switched_off() {
        let mut isp = IspConfig::new(Profile::Default, BayerPattern::Rggb, 12);
        isp.stages = Some(vec![StageName::Blc, StageName::Demosaic]);
        let hub = Hub::new(&["x".into()], &isp, LiveConfig::default());
        let s = &hub.streams[0];
        let set = s.settings();
        let offered = s.profile_stages(&set);
        assert!(offered.contains(&StageName::Sharpen) && offered.contains(&StageName::Blc));
        // What runs is the receiver's list; the page shows the others as off.
        assert!(set.disabled.contains(&StageName::Sharpen));
        assert!(!set.disabled.contains(&StageName::Demosaic));
        assert_eq!(
            s.isp_config(&set, None).active_stages(),
            vec![StageName::Blc, StageName::Demosaic]
        );
        // Switching one on runs it (it used to be impossible: only removals applied).
        let on = s
            .update_settings(|v| {
                v.disabled.retain(|d| *d != StageName::Sharpen);
                Ok(())
            })
            .unwrap();
        assert!(s
            .isp_config(&on, None)
            .active_stages()
            .contains(&StageName::Sharpen));
        // A reset returns to the receiver's list.
        assert_eq!(s.initial_settings(Profile::Default), set);
        // Another profile starts with all of its stages.
        assert!(s.initial_settings(Profile::Reference).disabled.is_empty());
    }

    #[test]
    fn changes_made_at_once_all_apply() {
        let isp = IspConfig::new(Profile::Default, BayerPattern::Rggb, 12);
        let hub = Hub::new(&["x".into()], &isp, LiveConfig::default());
        let s = Arc::clone(&hub.streams[0]);
        let off = [
            StageName::Dpc,
            StageName::Wb,
            StageName::Ccm,
            StageName::Tone,
            StageName::Denoise,
            StageName::Sharpen,
        ];
        for _ in 0..20 {
            s.update_settings(|v| {
                v.disabled.clear();
                Ok(())
            })
            .unwrap();
            std::thread::scope(|sc| {
                for n in off {
                    let s = &s;
                    sc.spawn(move || {
                        s.update_settings(|v| {
                            // Widen the window between read and write.
                            std::thread::sleep(Duration::from_millis(1));
                            v.disabled.push(n);
                            Ok(())
                        })
                        .unwrap()
                    });
                }
            });
            let mut d = s.settings().disabled;
            d.sort();
            let mut want = off.to_vec();
            want.sort();
            assert_eq!(d, want);
        }
    }

    #[test]
    fn a_current_view_is_reused_and_new_settings_are_waited_for() {
        let isp = IspConfig::new(Profile::Default, BayerPattern::Rggb, 12);
        let hub = Hub::new(&["x".into()], &isp, LiveConfig::default());
        let s = Arc::clone(&hub.streams[0]);
        s.offer(
            &frame(64, 32, |r, c| ((r * 64 + c) * 2) as u16),
            1,
            None,
            Counters::default(),
        );
        let rt = runtime();
        let first = rt.block_on(s.demand(Duration::from_secs(10))).unwrap();
        // Nothing changed: the same view, without waking the worker.
        let gen = lock(&s.slot).demand_gen;
        for _ in 0..5 {
            let again = rt.block_on(s.demand(Duration::from_secs(10))).unwrap();
            assert!(Arc::ptr_eq(&first, &again));
        }
        assert_eq!(
            lock(&s.slot).demand_gen,
            gen,
            "a current view asks for no work"
        );
        // New settings: the answer is processed with them, not the view before.
        s.update_settings(|v| {
            v.disabled.push(StageName::Sharpen);
            Ok(())
        })
        .unwrap();
        let after = rt.block_on(s.demand(Duration::from_secs(10))).unwrap();
        assert!(after.settings.disabled.contains(&StageName::Sharpen));
        assert!(!after.stages.contains(&"sharpen"));
        // A newer frame, nobody watching: processed on demand.
        s.offer(&frame(64, 32, |_, _| 900), 2, None, Counters::default());
        let newer = rt.block_on(s.demand(Duration::from_secs(10))).unwrap();
        assert_eq!(newer.recv_ns, 2);
        // Downloads of one view share one encoding.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        for _ in 0..3 {
            let png = newer
                .png(|_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok(vec![1, 2, 3])
                })
                .unwrap();
            assert_eq!(&png[..], &[1, 2, 3]);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// A hub with one stream that has processed one frame (offered with `seq`), and its view.
    fn one_view(seq: u64) -> (Arc<Hub>, Arc<Stream>, Arc<View>) {
        let isp = IspConfig::new(Profile::Default, BayerPattern::Rggb, 12);
        let hub = Hub::new(&["x".into()], &isp, LiveConfig::default());
        let s = Arc::clone(&hub.streams[0]);
        s.offer(&frame(16, 8, |_, _| 900), seq, None, Counters::default());
        let v = runtime()
            .block_on(s.demand(Duration::from_secs(10)))
            .unwrap();
        (hub, s, v)
    }

    #[test]
    fn pins_are_bounded_and_let_go() {
        let (_hub, s, v) = one_view(1);
        let ids: Vec<u64> = (0..=MAX_PINS).map(|_| s.pin(Arc::clone(&v))).collect();
        assert!(s.pinned(ids[0]).is_none(), "the oldest pin went");
        for &id in &ids[1..] {
            assert!(Arc::ptr_eq(&s.pinned(id).unwrap(), &v));
        }
        s.unpin(ids[2]);
        assert!(s.pinned(ids[2]).is_none());
        assert!(s.pinned(ids[3]).is_some());
        assert_eq!(
            Arc::strong_count(&v),
            1 + MAX_PINS - 1 + 1,
            "the view slot, the pins, v"
        );
    }

    #[test]
    fn a_released_pin_waits_to_be_reclaimed() {
        let (_hub, s, v) = one_view(7);
        let seq = v.frame.header.seq;
        let a = s.pin(Arc::clone(&v));
        assert!(!s.reclaim(a, seq + 1), "another frame's seq");
        // Its page reconnects: released with a grace, then taken back.
        s.release_later(a, Duration::from_secs(60));
        assert!(s.pinned(a).is_some(), "held through the grace");
        assert!(s.reclaim(a, seq));
        // Two holders (a second page reclaimed it before the first one's close
        // arrived): the first resume does not take it from the second.
        assert!(s.reclaim(a, seq));
        s.unpin(a);
        assert!(s.pinned(a).is_some());
        s.unpin(a);
        assert!(s.pinned(a).is_none(), "gone with its last holder");
        assert!(!s.reclaim(a, seq));
        // No reconnect within the grace: gone.
        let b = s.pin(Arc::clone(&v));
        s.release_later(b, Duration::ZERO);
        assert!(s.pinned(b).is_none());
        assert!(!s.reclaim(b, seq));
        assert_eq!(Arc::strong_count(&v), 2, "the view slot and v");
    }

    #[test]
    fn a_settings_change_is_not_held_back_by_the_rate_cap() {
        let isp = IspConfig::new(Profile::Default, BayerPattern::Rggb, 12);
        let config = LiveConfig {
            max_fps: 0.1, // one view per 10 s
            ..LiveConfig::default()
        };
        let hub = Hub::new(&["x".into()], &isp, config);
        let s = Arc::clone(&hub.streams[0]);
        assert_eq!(
            s.why_no_view(Duration::from_secs(5)),
            "no frame received yet: waiting for frames"
        );
        let f = frame(64, 32, |r, c| ((r * 64 + c) * 2) as u16);
        s.offer(&f, 1, None, Counters::default());
        let rt = runtime();
        assert!(rt.block_on(s.demand(Duration::from_secs(10))).is_some());
        // A newer frame: the worker now waits out the cap (the old view comes back).
        s.offer(&f, 2, None, Counters::default());
        let old = rt.block_on(s.demand(Duration::from_millis(300))).unwrap();
        assert_eq!(old.recv_ns, 1);
        // New settings are served at once, not when the 10 s are up.
        s.update_settings(|v| {
            v.disabled.push(StageName::Sharpen);
            Ok(())
        })
        .unwrap();
        let t = Instant::now();
        let after = rt.block_on(s.demand(Duration::from_secs(4))).unwrap();
        assert!(
            after.settings.disabled.contains(&StageName::Sharpen),
            "took {:?}",
            t.elapsed()
        );
        assert_eq!(after.recv_ns, 2);
    }

    #[test]
    fn a_processing_error_is_shown_until_a_frame_processes_again() {
        let isp = IspConfig::new(Profile::Default, BayerPattern::Rggb, 12);
        let hub = Hub::new(&["x".into()], &isp, LiveConfig::default());
        let s = Arc::clone(&hub.streams[0]);
        let mut bad = frame(16, 8, |_, _| 100);
        bad.header.black_level = 4095; // no range left below white
        s.offer(&bad, 1, None, Counters::default());
        let rt = runtime();
        assert!(rt.block_on(s.demand(Duration::from_secs(2))).is_none());
        let detail = s.stats_json()["detail"].as_str().unwrap_or("").to_string();
        assert!(detail.starts_with(VIEW_ERROR), "{detail:?}");
        // A download says why there is nothing, not that nothing came.
        // ...even after a link state has replaced the detail line.
        s.state(LinkState::Connected, "");
        let why = s.why_no_view(Duration::from_secs(2));
        assert!(
            why.starts_with("frames arrived but could not be processed: "),
            "{why}"
        );
        s.offer(&frame(16, 8, |_, _| 900), 2, None, Counters::default());
        assert!(rt.block_on(s.demand(Duration::from_secs(10))).is_some());
        assert_eq!(s.stats_json()["detail"], "");
    }
}
