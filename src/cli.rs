//! Command-line definitions (parsing only; validation happens in each command).

use clap::{Args, Parser, Subcommand};
use rawlink_frame::BayerPattern;
use std::net::SocketAddr;
use std::path::PathBuf;

/// rawlink: stream RAW Bayer frames from a camera over TCP and turn them into images.
#[derive(Debug, Parser)]
#[command(name = "rawlink", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `debug` or `rawlink=trace`.
    #[arg(long, global = true, env = "RAWLINK_LOG", default_value = "info")]
    pub log: String,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture frames from a source and stream them to every connected client.
    Serve(ServeArgs),
    /// Connect to a server, receive frames, and write RAW, PNG, DNG and JSON files.
    Receive(Box<ReceiveArgs>),
    /// Process one headerless .raw file, or a DNG, into a PNG.
    Isp(IspArgs),
    /// Convert a headerless .raw file to DNG, or a DNG to a headerless .raw file.
    Convert(ConvertArgs),
    /// Run the reference scenario on one machine: a sim server and a receiver over loopback.
    Demo(DemoArgs),
    /// List V4L2 cameras with their formats, frame sizes and controls.
    Devices(DevicesArgs),
    /// Measure ISP speed over frame sizes, profiles and thread counts; prints a table.
    Bench(crate::bench::BenchArgs),
}

/// Frame geometry for sources and headerless input.
#[derive(Debug, Clone, Args)]
pub struct GeometryArgs {
    /// Frame width in pixels.
    #[arg(long, default_value_t = GeometryArgs::DEFAULT.width, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub width: u32,
    /// Frame height in pixels.
    #[arg(long, default_value_t = GeometryArgs::DEFAULT.height, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub height: u32,
    /// Bayer pattern: rggb, bggr, grbg or gbrg.
    #[arg(long, default_value_t = GeometryArgs::DEFAULT.pattern)]
    pub pattern: BayerPattern,
    /// Bits per sample (8..16), stored in 16-bit little-endian containers.
    #[arg(long, default_value_t = GeometryArgs::DEFAULT.bits, value_parser = clap::value_parser!(u8).range(8..=16))]
    pub bits: u8,
}

impl GeometryArgs {
    /// The defaults: the reference driver's 640×480 RGGB 12-bit frame.
    pub const DEFAULT: GeometryArgs = GeometryArgs {
        width: 640,
        height: 480,
        pattern: BayerPattern::Rggb,
        bits: 12,
    };
}

/// ISP selection and overrides (on top of `--config`).
#[derive(Debug, Clone, Args)]
pub struct IspOpts {
    /// ISP profile: default (best quality in real time) or reference (the reference ISP, within ±1 LSB; bit-exact with --bit-exact) [default: default].
    #[arg(long, value_parser = checked::<rawlink_isp::Profile>)]
    pub profile: Option<String>,
    /// ISP configuration file (TOML); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run exactly these stages, e.g. `blc,demosaic` (dpc, blc, lsc, wb, demosaic, ccm, tone, denoise, sharpen).
    #[arg(long, value_parser = stages_arg)]
    pub stages: Option<String>,
    /// Demosaic method: bilinear, malvar or rcd [default: rcd; the reference profile's
    /// is bilinear].
    #[arg(long, value_parser = checked::<rawlink_isp::DemosaicMethod>)]
    pub demosaic: Option<String>,
    /// White-balance mode: grayworld, robust, manual or metadata [default: robust; the
    /// reference profile's is gray world].
    #[arg(long, value_parser = checked::<rawlink_isp::WbMode>)]
    pub wb: Option<String>,
    /// Manual white-balance gains `r,g,b` (implies --wb manual).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub wb_gains: Option<Vec<f32>>,
    /// White level in sample units (default: from the frame, else 2^bits-1).
    #[arg(long)]
    pub white_level: Option<u16>,
    /// Bilateral denoise bit for bit as the reference computes it (table weights, no
    /// fused multiply-add); by default it is within ±1 LSB and ~1.7× faster (for input
    /// of 12 bits and more; below, the reference profile is always bit-exact).
    #[arg(long)]
    pub bit_exact: bool,
    /// PNG bit depth: 8 or 16.
    #[arg(long, default_value_t = 8, value_parser = parse_png_depth)]
    pub png_depth: u8,
}

/// Frame pacing for sim and file sources.
#[derive(Debug, Clone, Args)]
pub struct PacingArgs {
    /// Milliseconds between frames (sim and file sources; default 2000, the reference driver's).
    #[arg(long, conflicts_with = "fps")]
    pub interval_ms: Option<u64>,
    /// Frames per second (alternative to --interval-ms).
    #[arg(long)]
    pub fps: Option<f64>,
}

/// `rawlink serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on, `IP:PORT` (e.g. `127.0.0.1:8080`, `[::1]:8080`).
    #[arg(long, default_value = "0.0.0.0:8080", value_parser = parse_addr)]
    pub listen: SocketAddr,
    /// Frame source: sim, sim:scene, chardev:PATH, file:GLOB or v4l2:/dev/videoN.
    #[arg(long, default_value = "sim")]
    pub source: String,
    /// Black level written into every frame's header (default: the reference
    /// driver's 64 at 12 bits, scaled to --bits, for sim, chardev and file; 256 at 12
    /// bits for sim:scene; 0 for v4l2). Must be below the white level.
    #[arg(long)]
    pub black_level: Option<u16>,
    /// White level written into every frame's header (default: 2^bits-1; at most that).
    #[arg(long)]
    pub white_level: Option<u16>,
    /// Stop after N frames (default: unlimited).
    #[arg(long)]
    pub frames: Option<u64>,
    /// Send bare frames of W*H*2 bytes with no header, as the reference streamer does.
    #[arg(long)]
    pub legacy: bool,
    /// Do not start capturing until this many clients are connected. Default: 0 (a
    /// camera runs whoever watches), 1 with --legacy (the reference streamer waits for
    /// its receiver).
    #[arg(long)]
    pub wait_clients: Option<usize>,
    /// Maximum simultaneous clients; more are refused.
    #[arg(long, default_value_t = 64)]
    pub max_clients: usize,
    /// Frames queued per `latest`-policy client before its oldest are dropped.
    #[arg(long, default_value_t = 32)]
    pub client_queue: usize,
    /// MiB buffered per `lossless`-policy client (a file source waits when it is full;
    /// a live source records an overrun drop).
    #[arg(long, default_value_t = 256)]
    pub client_buffer_mb: usize,
    /// Milliseconds to wait for a client's hello before using the defaults.
    #[arg(long, default_value_t = 1000)]
    pub hello_timeout_ms: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_parser = parse_addr)]
    pub metrics: Option<SocketAddr>,
    /// Seconds between one-line statistics logs (0: off).
    #[arg(long, default_value_t = 5.0)]
    pub stats_interval: f64,
    /// Replay file sources in a loop.
    #[arg(long = "loop")]
    pub looped: bool,
    /// Seconds a client gets to finish its TLS handshake and hello; a connection
    /// still silent then is closed (defeats slow-loris connections).
    #[arg(long, default_value_t = 5.0)]
    pub handshake_timeout: f64,
    /// Connections allowed at once that have not finished their handshake (and, with
    /// --token-file, authenticated); more are closed at once.
    #[arg(long, default_value_t = 32)]
    pub max_pending: usize,
    /// Seconds a client may stall a write, or (if it promised heartbeats) stay silent,
    /// before it is presumed dead and disconnected (0: never).
    #[arg(long, default_value_t = 10.0)]
    pub peer_timeout: f64,
    /// Milliseconds without a frame after which a heartbeat is sent to each client.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_ms: u64,
    #[command(flatten)]
    pub security: ServerSecurity,
    /// V4L2: the fourcc to capture, e.g. RG12 or pRAA (default: the deepest Bayer
    /// format the camera offers).
    #[arg(long)]
    pub format: Option<String>,
    /// V4L2: set a control before streaming, e.g. `--ctrl exposure=1000` (names as
    /// `rawlink devices` lists them). Repeatable.
    #[arg(long = "ctrl", value_name = "NAME=VALUE")]
    pub ctrls: Vec<String>,
    /// V4L2: mmap buffers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..=32))]
    pub buffers: u32,
    #[command(flatten)]
    pub geometry: GeometryArgs,
    #[command(flatten)]
    pub pacing: PacingArgs,
}

/// TLS and authentication of `rawlink serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServerSecurity {
    /// PEM certificate chain: serve protocol v1 over TLS (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// File holding a shared token every client must present in its hello.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// TLS and authentication of `rawlink receive`.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientSecurity {
    /// Connect over TLS, trusting the CA certificates in this PEM file.
    #[arg(long, conflicts_with = "tls_insecure", group = "tls_trust")]
    pub tls_ca: Option<PathBuf>,
    /// Connect over TLS without checking the server's certificate (encrypted but not
    /// authenticated; for testing only).
    #[arg(long, group = "tls_trust")]
    pub tls_insecure: bool,
    /// Name to check the server's certificate against (default: the host of --connect).
    /// Needs --tls-ca or --tls-insecure: on its own it would leave the connection
    /// plaintext.
    #[arg(long, requires = "tls_trust")]
    pub tls_server_name: Option<String>,
    /// File holding the token the server requires.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// The live view in the browser.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Serve the live view at http://ADDR/ (127.0.0.1:8081 when given without an address).
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:8081", value_name = "ADDR", value_parser = parse_addr)]
    pub http: Option<SocketAddr>,
    /// Most frames per second processed for the live view, per stream.
    #[arg(long, default_value_t = 15.0, value_parser = parse_http_fps)]
    pub http_fps: f64,
    /// Live previews wider than this are scaled down (1:1 zoom and downloads keep full size).
    #[arg(long, default_value_t = 1280, value_parser = clap::value_parser!(u32).range(16..=16384))]
    pub http_preview_width: u32,
    /// Most live-view browsers per stream; more are refused with 503.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub http_max_viewers: u32,
}

fn parse_http_fps(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.1..=240.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a frame rate in 0.1..=240")),
    }
}

/// `rawlink receive`.
#[derive(Debug, Clone, Args)]
pub struct ReceiveArgs {
    /// Server to connect to. Repeat to follow several cameras at once; each one's files
    /// then go to a subfolder of --out named after its address (`host_port`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub connect: Vec<String>,
    /// Output folder (created if missing).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Read bare frames of W*H*2 bytes (the reference streamer's format).
    #[arg(long)]
    pub legacy: bool,
    /// Exit after N frames (0: no limit).
    #[arg(long)]
    pub frames: Option<u64>,
    /// Flow control asked of the server: lossless (recorder; nothing dropped silently) or
    /// latest (live view; the oldest queued frames are dropped when this client is slow).
    #[arg(long, default_value = "lossless")]
    pub policy: String,
    /// Receive only every Nth frame.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub every: u32,
    /// Receive at most this many frames per second (0 = no limit).
    #[arg(long, default_value_t = 0.0)]
    pub max_fps: f32,
    /// Ask the server to send 10/12/14-bit frames bit-packed (12-bit: 1.33× fewer bytes);
    /// they are unpacked exactly here.
    #[arg(long)]
    pub pack: bool,
    /// Ask the server for lossless CFA-aware compression (prediction, zigzag, byte
    /// shuffle, LZ4); decompressed exactly here. Takes precedence over --pack.
    #[arg(long)]
    pub compress: bool,
    /// Where frames go: `files` (the --save files plus a JSON sidecar) or `null`
    /// (validate and count only).
    #[arg(long, default_value = "files")]
    pub sink: String,
    /// Files written per frame, comma-separated: raw, png, dng (the JSON sidecar is
    /// always written).
    #[arg(long, default_value = "raw,png")]
    pub save: String,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_parser = parse_addr)]
    pub metrics: Option<SocketAddr>,
    /// Seconds between one-line statistics logs (0: off).
    #[arg(long, default_value_t = 5.0)]
    pub stats_interval: f64,
    /// Seconds to keep retrying the first connection (a receiver may start before its server).
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Reconnect after a fault (close mid-stream, reset, silence past --peer-timeout),
    /// with exponential backoff and jitter. On by default.
    #[arg(long, overrides_with = "no_reconnect")]
    pub reconnect: bool,
    /// Exit with an error on the first fault instead of reconnecting.
    #[arg(long, overrides_with = "reconnect")]
    pub no_reconnect: bool,
    /// Give up reconnecting after this many seconds without a connection that was up
    /// (delivered frames or stayed open 5 s; a refusal does not count) (0: never).
    #[arg(long, default_value_t = 0.0)]
    pub reconnect_timeout: f64,
    /// Longest delay between reconnect attempts, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub reconnect_max_delay: f64,
    /// Seconds without any data from the server (frames or heartbeats) after which the
    /// connection is presumed dead (0: never).
    #[arg(long, default_value_t = 10.0)]
    pub peer_timeout: f64,
    /// What a disk error (full, read-only, no permission) does: stop (finish and exit
    /// with the error) or drop (drop that frame, count it, keep receiving).
    #[arg(long, default_value = "stop")]
    pub on_disk_error: String,
    /// Largest frame width or height accepted from the network.
    #[arg(long, default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub max_dimension: u32,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub security: ClientSecurity,
    #[command(flatten)]
    pub isp: IspOpts,
    /// Black level for legacy (headerless) frames; v1 frames carry their own. Default:
    /// the reference driver's, 64 at 12 bits scaled to --bits (16 at 10 bits).
    #[arg(long)]
    pub black_level: Option<u16>,
    /// Worker threads running the ISP (and as many threads writing the files).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// How frame files are written: direct (files of 64 KiB and more with `O_DIRECT`,
    /// bypassing the page cache where the file system allows it; smaller ones buffered)
    /// or buffered (everything through the page cache).
    #[arg(long, default_value = "direct")]
    pub io: crate::sink::FileIo,
    /// Frames waiting for a worker: when full, `--policy lossless` (the default) waits
    /// for a worker, `--policy latest` drops the new frame (counted).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub queue: u32,
    /// Largest payload accepted from the network, in MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub max_payload_mb: u64,
    /// Do not print a line per frame.
    #[arg(long, short)]
    pub quiet: bool,
    /// Geometry of legacy frames.
    #[command(flatten)]
    pub geometry: GeometryArgs,
}

/// `rawlink devices`.
#[derive(Debug, Clone, Args)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `rawlink convert`.
#[derive(Debug, Clone, Args)]
pub struct ConvertArgs {
    /// Input: a headerless little-endian u16 .raw file, or a DNG.
    pub input: PathBuf,
    /// Output: `.dng` (from a .raw input) or `.raw` (from a DNG input).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub geometry: GeometryArgs,
    /// Black level in sample units (default: 64 scaled to --bits, the reference driver's).
    #[arg(long)]
    pub black_level: Option<u16>,
    /// White level in sample units (default: 2^bits - 1).
    #[arg(long)]
    pub white_level: Option<u16>,
    /// White-balance gains `r,g,b` of the scene; AsShotNeutral is their inverse.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub wb_gains: Option<Vec<f64>>,
    /// ColorMatrix1 (XYZ D65 -> camera), 9 values row-major (default: derived from the
    /// ISP's default colour correction).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub color_matrix: Option<Vec<f64>>,
    /// Exposure time in µs, for the EXIF ExposureTime tag.
    #[arg(long, default_value_t = 0)]
    pub exposure_us: u32,
    /// Analog gain (written as ISO 100 × gain).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub gain: f32,
    /// Capture time, ns since the Unix epoch (default: the input file's modification time).
    #[arg(long)]
    pub timestamp_ns: Option<u64>,
}

/// `rawlink isp`.
#[derive(Debug, Clone, Args)]
pub struct IspArgs {
    /// Headerless little-endian u16 input, or a DNG (geometry, pattern, levels, white
    /// balance and colour matrix are then read from the file).
    pub input: PathBuf,
    /// Output PNG.
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub isp: IspOpts,
    /// Black level in sample units (default for headerless input: the reference
    /// driver's 64 at 12 bits, scaled to --bits, as the receiver's frames have it; a DNG's
    /// own otherwise).
    #[arg(long)]
    pub black_level: Option<u16>,
    /// Print per-stage timings to stderr.
    #[arg(long)]
    pub timing: bool,
    #[command(flatten)]
    pub geometry: GeometryArgs,
}

/// The live view's address in `rawlink demo` when `--http` is not given.
pub const DEMO_HTTP_DEFAULT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8081);

/// `rawlink demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Output folder.
    #[arg(long, default_value = "./rawlink-demo")]
    pub out: PathBuf,
    /// Frames to stream (0: until interrupted).
    #[arg(long, default_value_t = 5)]
    pub frames: u64,
    /// Serve the live view here [default: 127.0.0.1:8081, replaced by a free port if
    /// taken; an address given here is used or is an error].
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub http: Option<SocketAddr>,
    /// No live view.
    #[arg(long)]
    pub no_http: bool,
    /// Most frames per second processed for the live view.
    #[arg(long, default_value_t = 15.0, value_parser = parse_http_fps)]
    pub http_fps: f64,
    /// Milliseconds between frames.
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
    /// Source: sim or sim:scene.
    #[arg(long, default_value = "sim")]
    pub source: String,
    /// Receiver worker threads running the ISP (and as many threads writing the files).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// How frame files are written: direct (files of 64 KiB and more with `O_DIRECT`,
    /// bypassing the page cache where the file system allows it; smaller ones buffered)
    /// or buffered (everything through the page cache).
    #[arg(long, default_value = "direct")]
    pub io: crate::sink::FileIo,
    #[command(flatten)]
    pub isp: IspOpts,
    /// Do not print a line per frame.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub geometry: GeometryArgs,
}

/// A name the ISP parses (profile, demosaic method, white-balance mode), checked while
/// the command line is parsed, so a bad one is a usage error (exit status 2) like any
/// other bad flag value.
pub(crate) fn checked<T: std::str::FromStr>(s: &str) -> Result<String, String>
where
    T::Err: std::fmt::Display,
{
    s.parse::<T>()
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// `--stages`, checked while the command line is parsed.
pub(crate) fn stages_arg(s: &str) -> Result<String, String> {
    rawlink_isp::parse_stage_list(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn parse_png_depth(s: &str) -> Result<u8, String> {
    match s {
        "8" => Ok(8),
        "16" => Ok(16),
        _ => Err(format!("{s:?} is not a PNG depth (8 or 16)")),
    }
}

/// A socket address `IP:PORT`, with a hint when a host name or a bare port is given.
fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("{s:?} is not IP:PORT (e.g. 127.0.0.1:8080 or [::1]:8080; a host name is not accepted here)")
    })
}
