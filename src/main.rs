//! The `rawlink` binary: CLI, server, receiver, demo.
#![forbid(unsafe_code)]

mod bench;
mod cli;
mod live;
mod monitor;
mod netio;
mod receiver;
mod server;
mod sink;
mod tls;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use cli::{
    Cli, Command, ConvertArgs, DemoArgs, GeometryArgs, IspArgs, PacingArgs, ReceiveArgs, ServeArgs,
};
use rawlink_frame::{FrameHeader, PixelFormat};
use rawlink_isp::{IspConfig, Pipeline, Profile, RawPlane, RgbImage};
use rawlink_proto::Limits;
use rawlink_source::{SourceOptions, SourceSpec};
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_tracing(&cli.log);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rawlink: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version go out as clap prints them. A usage error is one line on stderr,
/// as every other error is: clap's first paragraph (the message, and for missing
/// arguments their names), without its usage block and tips. Exit status 2, as clap's.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    eprintln!(
        "rawlink: error: {} (see --help)",
        first_paragraph(&e.render().to_string())
    );
    ExitCode::from(2)
}

/// The lines of `text` up to its first blank line, trimmed and joined by spaces,
/// without a leading `error: `.
fn first_paragraph(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let joined = lines.join(" ");
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string()
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .compact()
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Isp(a) => isp(a),
        Command::Convert(a) => convert(a),
        Command::Devices(a) => devices(a),
        Command::Serve(a) => runtime()?.block_on(serve(a)),
        Command::Receive(a) => runtime()?.block_on(receive(*a)),
        Command::Demo(a) => runtime()?.block_on(demo(a)),
        Command::Bench(a) => bench::run(&a).map(|()| ExitCode::SUCCESS),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Cancels the returned token on SIGINT or SIGTERM, so that the command finishes what
/// it has (a server its end-of-stream messages, a receiver the frames it holds). A
/// second signal exits at once (status 130 for SIGINT, 143 for SIGTERM), for when that
/// finishing takes too long.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot install a SIGTERM handler: {e}");
                    return;
                }
            };
        let mut int = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot install a SIGINT handler: {e}");
                return;
            }
        };
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT received: finishing (a second signal stops at once)"),
            _ = term.recv() => tracing::info!("SIGTERM received: finishing (a second signal stops at once)"),
        }
        t.cancel();
        // The same streams, so a signal between the two waits is not lost.
        let status = tokio::select! {
            _ = int.recv() => 130,
            _ = term.recv() => 143,
        };
        eprintln!("rawlink: error: second signal: stopped without finishing");
        std::process::exit(status);
    });
    token
}

/// The time between frames from `--interval-ms` or `--fps`, to the nanosecond (a
/// millisecond rounding would make `--fps 700` run at 1000 frames/s).
fn frame_interval(p: &PacingArgs) -> Result<Duration> {
    match (p.interval_ms, p.fps) {
        (Some(ms), _) => Ok(Duration::from_millis(ms)),
        // An `fps` so small that `1/fps` overflows a Duration: as good as never.
        (None, Some(fps)) if fps.is_finite() && fps > 0.0 => {
            Ok(Duration::try_from_secs_f64(1.0 / fps).unwrap_or(Duration::MAX))
        }
        (None, Some(fps)) => bail!("--fps must be a positive number, got {fps}"),
        (None, None) => Ok(Duration::from_millis(2000)),
    }
}

fn source_options(g: &GeometryArgs, interval: Duration, looped: bool) -> SourceOptions {
    SourceOptions {
        width: g.width,
        height: g.height,
        pattern: g.pattern,
        bits: g.bits,
        interval,
        looped,
        v4l2: Default::default(),
        black_level: None,
        white_level: None,
    }
}

/// `--format`, `--ctrl` and `--buffers` for a V4L2 source.
fn v4l2_options(a: &ServeArgs) -> Result<rawlink_source::v4l2::V4l2Options> {
    let format = match &a.format {
        None => None,
        Some(f) => {
            let b = f.as_bytes();
            let cc: [u8; 4] = b.try_into().map_err(|_| {
                anyhow!("--format must be a four-character code like RG12, got {f:?}")
            })?;
            if rawlink_frame::PixelFormat::from_fourcc(cc).is_none() {
                bail!("--format {f} is not a Bayer format rawlink reads (see `rawlink devices`)");
            }
            Some(cc)
        }
    };
    let ctrls = a
        .ctrls
        .iter()
        .map(|c| {
            let (k, v) = c
                .split_once('=')
                .ok_or_else(|| anyhow!("--ctrl must be NAME=VALUE, got {c:?}"))?;
            let v: i64 = v
                .trim()
                .parse()
                .map_err(|_| anyhow!("--ctrl {k}: {v:?} is not an integer"))?;
            Ok((k.trim().to_string(), v))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(rawlink_source::v4l2::V4l2Options {
        format,
        ctrls,
        buffers: a.buffers,
    })
}

fn devices(a: cli::DevicesArgs) -> Result<ExitCode> {
    let list = rawlink_source::v4l2::list_devices();
    if a.json {
        let v: Vec<serde_json::Value> = list
            .iter()
            .map(|d| match d {
                Ok(d) => serde_json::json!({
                    "path": d.path,
                    "driver": d.info.driver,
                    "card": d.info.card,
                    "bus": d.info.bus,
                    "capture": d.info.capture,
                    "formats": d.formats.iter().map(|f| serde_json::json!({
                        "fourcc": String::from_utf8_lossy(&f.fourcc),
                        "bayer": f.bayer,
                        "sizes": f.sizes.iter().map(|(w, h)| format!("{w}x{h}")).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "controls": d.controls.iter().map(|(c, v)| serde_json::json!({
                        "name": c.key(), "id": c.id, "min": c.min, "max": c.max,
                        "default": c.default, "value": v,
                    })).collect::<Vec<_>>(),
                }),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no V4L2 devices found (/dev/video*)");
        return Ok(ExitCode::SUCCESS);
    }
    for d in list {
        match d {
            Err(e) => println!("{e}"),
            Ok(d) => {
                println!(
                    "{}: {} (driver {}, {}){}",
                    d.path.display(),
                    d.info.card,
                    d.info.driver,
                    d.info.bus,
                    if d.info.capture {
                        ""
                    } else {
                        " — not a capture device"
                    }
                );
                for f in &d.formats {
                    let sizes: Vec<String> =
                        f.sizes.iter().map(|(w, h)| format!("{w}x{h}")).collect();
                    println!(
                        "  format {} {} {}",
                        String::from_utf8_lossy(&f.fourcc),
                        if f.bayer { "(Bayer)" } else { "       " },
                        sizes.join(" ")
                    );
                }
                for (c, v) in &d.controls {
                    println!(
                        "  ctrl {} = {} (range {}..={}, default {})",
                        c.key(),
                        v.map_or("?".to_string(), |v| v.to_string()),
                        c.min,
                        c.max,
                        c.default
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The ISP configuration from `--config`, then flags; pattern and bits as given.
fn isp_config(
    o: &cli::IspOpts,
    pattern: rawlink_frame::BayerPattern,
    bits: u8,
) -> Result<IspConfig> {
    let mut cfg = match &o.config {
        Some(p) => IspConfig::from_toml_file(p)?,
        None => IspConfig::default(),
    };
    // The configuration as given, before the flags: what the reference profile's warning
    // about ignored settings is about (the flags it takes, such as `--demosaic bilinear`,
    // are not settings it ignores).
    let from_file = cfg.clone();
    cfg.pattern = pattern;
    cfg.bits = bits;
    if let Some(p) = &o.profile {
        cfg.profile = p.parse::<Profile>()?;
    }
    if let Some(s) = &o.stages {
        cfg.stages = Some(rawlink_isp::parse_stage_list(s)?);
    }
    if let Some(d) = &o.demosaic {
        cfg.demosaic.method = d.parse()?;
    }
    if let Some(m) = &o.wb {
        cfg.wb.mode = m.parse()?;
    }
    if let Some(g) = &o.wb_gains {
        let [r, gg, b] = g[..] else {
            bail!("--wb-gains needs three values r,g,b, got {}", g.len());
        };
        cfg.wb.gains = Some([r, gg, b]);
        match o.wb.as_deref() {
            None => cfg.wb.mode = rawlink_isp::WbMode::Manual,
            Some("manual") => {}
            // Robust, gray-world and metadata white balance find their own gains.
            Some(m) => bail!("--wb-gains needs --wb manual (or no --wb), not --wb {m}"),
        }
    }
    if let Some(w) = o.white_level {
        cfg.blc.white = Some(w);
    }
    if o.bit_exact {
        cfg.denoise.exact = true;
    }
    // Flags that would change nothing in the pipeline as configured are named.
    let active = cfg.active_stages();
    if (o.wb.is_some() || o.wb_gains.is_some()) && !active.contains(&rawlink_isp::StageName::Wb) {
        tracing::warn!("--wb / --wb-gains have no effect: the stage list has no wb");
    }
    if o.bit_exact
        && cfg.profile != Profile::Reference
        && (cfg.denoise.method != rawlink_isp::DenoiseMethod::Bilateral
            || !active.contains(&rawlink_isp::StageName::Denoise))
    {
        tracing::warn!(
            "--bit-exact has no effect: it applies to the bilateral denoise (the reference \
             profile's, or denoise.method = \"bilateral\"), which this pipeline does not run"
        );
    }
    if cfg.profile == Profile::Reference {
        // The reference pipeline is fixed: a flag it would ignore is refused, settings
        // from a config file (which may serve both profiles) are named in a warning.
        let not_reference = [
            (
                "--demosaic",
                o.demosaic.as_deref().is_some_and(|d| d != "bilinear"),
            ),
            ("--wb", o.wb.as_deref().is_some_and(|m| m != "grayworld")),
            ("--wb-gains", o.wb_gains.is_some()),
            ("--white-level", o.white_level.is_some()),
        ];
        if let Some((flag, _)) = not_reference.iter().find(|(_, set)| *set) {
            bail!(
                "{flag} does not apply to --profile reference (its pipeline is fixed: \
                 bilinear demosaic, gray-world white balance, no white level)"
            );
        }
        let unused = IspConfig {
            profile: Profile::Reference,
            ..from_file
        }
        .unused_settings();
        if !unused.is_empty() {
            tracing::warn!(
                "the reference profile ignores these settings of the configuration: {}",
                unused.join(", ")
            );
        }
    }
    Ok(cfg)
}

async fn serve(a: ServeArgs) -> Result<ExitCode> {
    let spec: SourceSpec = a.source.parse()?;
    let mut opts = source_options(&a.geometry, frame_interval(&a.pacing)?, a.looped);
    opts.v4l2 = v4l2_options(&a)?;
    opts.black_level = a.black_level;
    opts.white_level = a.white_level;
    if a.client_queue == 0 {
        bail!("--client-queue must be at least 1");
    }
    let metrics_at = match a.metrics {
        Some(m) => Some(monitor::install(m, monitor::Role::Server)?),
        None => None,
    };
    let sec = &a.security;
    if a.legacy && (sec.tls_cert.is_some() || sec.token_file.is_some()) {
        bail!("--legacy is plaintext and has no handshake (the reference programs speak bare TCP): it cannot use --tls-cert or --token-file");
    }
    let tls = match (&sec.tls_cert, &sec.tls_key) {
        (Some(c), Some(k)) => Some(tls::acceptor(c, k)?),
        _ => None,
    };
    let token = sec.token_file.as_deref().map(tls::read_token).transpose()?;
    if a.max_pending == 0 || a.max_clients == 0 {
        bail!("--max-pending and --max-clients must be at least 1");
    }
    let wait_clients = a.wait_clients.unwrap_or(a.legacy as usize);
    if wait_clients > a.max_clients {
        bail!(
            "--wait-clients {wait_clients} can never be reached with --max-clients {}",
            a.max_clients
        );
    }
    // Every client must finish its hello (and TLS handshake) in this time; 0 would
    // refuse them all, and anything under a millisecond is not a real network's.
    let handshake_timeout = seconds("--handshake-timeout", a.handshake_timeout, false)?
        .filter(|d| *d >= Duration::from_millis(1))
        .ok_or_else(|| {
            anyhow!(
                "--handshake-timeout must be at least 0.001 s, got {}",
                a.handshake_timeout
            )
        })?;
    let peer_timeout = seconds("--peer-timeout", a.peer_timeout, true)?;
    if a.heartbeat_ms == 0 {
        bail!("--heartbeat-ms must be at least 1");
    }
    // The source first: a camera that cannot be opened is the error to report, whatever
    // the port's state.
    let source = rawlink_source::open(&spec, &opts)?;
    let listener = TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(source = %source.describe(), legacy = a.legacy, tls = tls.is_some(), token = token.is_some(), "serving");
    if a.legacy {
        tracing::info!("legacy mode: bare frames over plaintext TCP, no authentication");
    }
    if let Some(w) = exposure_warning(addr, tls.is_some(), token.is_some(), a.legacy) {
        tracing::warn!("{w}");
    }
    println!("listening on {addr}");
    if let Some(m) = metrics_at {
        println!("metrics: http://{m}/metrics");
    }
    std::io::stdout().flush().ok();
    let cfg = server::ServeConfig {
        frames: a.frames,
        legacy: a.legacy,
        wait_clients,
        max_clients: a.max_clients,
        client_queue: a.client_queue,
        client_buffer_bytes: a.client_buffer_mb.saturating_mul(1 << 20),
        hello_timeout: Duration::from_millis(a.hello_timeout_ms),
        stats_interval: seconds("--stats-interval", a.stats_interval, false)?.unwrap_or_default(),
        source_name: spec.to_string(),
        handshake_timeout,
        max_pending: a.max_pending,
        peer_timeout,
        heartbeat: Duration::from_millis(a.heartbeat_ms),
        tls,
        token,
    };
    let shutdown = shutdown_on_signals();
    let s = server::serve(listener, source, cfg, shutdown).await?;
    println!(
        "serve summary: frames={} clients={} dropped={} rejected={} end={:?}",
        s.frames,
        s.clients,
        s.dropped,
        s.rejected,
        s.end_reason
            .unwrap_or(rawlink_proto::EndReason::SourceEnded)
    );
    if let Some(e) = s.source_error {
        bail!("source failed: {e}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The warning printed when a server is reachable from other hosts without a token
/// (TLS alone encrypts, but lets anyone watch).
fn exposure_warning(
    addr: std::net::SocketAddr,
    tls: bool,
    token: bool,
    legacy: bool,
) -> Option<String> {
    if addr.ip().is_loopback() || token {
        return None;
    }
    if tls {
        return Some(format!(
            "listening on {addr} with TLS but no token: TLS encrypts but does not authenticate clients: anyone who can reach this port can watch; add --token-file (see README, Security)"
        ));
    }
    Some(format!(
        "listening on {addr} without TLS or a token{}: anyone who can reach this port can watch the camera (see README, Security)",
        if legacy { " (legacy mode cannot have either)" } else { "" }
    ))
}

/// Subfolder name for a camera address: `host:port` → `host_port`.
fn stream_folder(connect: &str) -> String {
    connect
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A non-negative number of seconds from a flag; zero means "off" where `zero_off`.
fn seconds(flag: &str, v: f64, zero_off: bool) -> Result<Option<Duration>> {
    if !(v.is_finite() && (0.0..=1e9).contains(&v)) {
        bail!("{flag} must be a non-negative number of seconds, got {v}");
    }
    Ok(if zero_off && v == 0.0 {
        None
    } else {
        Some(Duration::from_secs_f64(v))
    })
}

/// Checks the form of a `--connect` address, `HOST:PORT` (IPv6 as `[ADDR]:PORT`), so a
/// mistyped one fails at once instead of being retried for `--connect-timeout`. A
/// host name that does not resolve yet is still retried: the camera may be coming up.
fn check_connect(connect: &str) -> Result<()> {
    let port = connect
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty())
        .map(|(_, port)| port);
    match port.map(str::parse::<u16>) {
        Some(Ok(p)) if p != 0 => Ok(()),
        _ => bail!("--connect {connect:?}: expected HOST:PORT with a port from 1 to 65535"),
    }
}

fn receive_config(a: &ReceiveArgs, connect: &str) -> Result<receiver::ReceiveConfig> {
    check_connect(connect)?;
    let g = &a.geometry;
    let fmt = PixelFormat::unpacked(g.pattern, g.bits)?;
    let mut template = FrameHeader::new(0, g.width, g.height, fmt);
    let black = a
        .black_level
        .unwrap_or_else(|| rawlink_source::reference_black_level(g.bits));
    if black >= template.white_level {
        bail!(
            "--black-level {black} must be below {}, the largest {}-bit code (--bits)",
            template.white_level,
            g.bits
        );
    }
    template.black_level = black;
    let sec = &a.security;
    let tls = match (&sec.tls_ca, sec.tls_insecure) {
        (None, false) => None,
        _ if a.legacy => bail!(
            "--legacy is plaintext (the reference programs speak bare TCP): it cannot use TLS"
        ),
        (ca, insecure) => {
            let trust = match ca {
                Some(p) => tls::Trust::Ca(p.clone()),
                None => tls::Trust::Insecure,
            };
            if insecure {
                tracing::warn!("WARNING: --tls-insecure: the server's certificate is NOT checked; anyone on the path can impersonate the server and read the stream");
            }
            Some(receiver::ClientTls {
                connector: tls::connector(&trust)?,
                server_name: tls::server_name(sec.tls_server_name.as_deref().unwrap_or(connect))?,
            })
        }
    };
    // Delivery options go to the server in the hello, which legacy mode does not send.
    if a.legacy {
        let asked = [
            ("--every", a.every != 1),
            ("--max-fps", a.max_fps != 0.0),
            ("--pack", a.pack),
            ("--compress", a.compress),
            ("--policy", a.policy != "lossless"),
        ];
        if let Some((flag, _)) = asked.iter().find(|(_, set)| *set) {
            bail!("--legacy has no handshake: the server cannot be asked for {flag} (the reference streamer sends every frame, bare)");
        }
    }
    let token = match &sec.token_file {
        Some(_) if a.legacy => {
            bail!("--legacy has no handshake: it cannot send a token (--token-file)")
        }
        Some(p) => Some(tls::read_token(p)?),
        None => None,
    };
    Ok(receiver::ReceiveConfig {
        connect: connect.to_string(),
        legacy: a.legacy,
        legacy_template: template,
        // 0: no limit, as `demo --frames 0`.
        frames: a.frames.filter(|&n| n > 0),
        connect_timeout: seconds("--connect-timeout", a.connect_timeout, false)?
            .unwrap_or_default(),
        reconnect: !a.no_reconnect,
        reconnect_timeout: seconds("--reconnect-timeout", a.reconnect_timeout, true)?,
        reconnect_max_delay: seconds("--reconnect-max-delay", a.reconnect_max_delay, false)?
            .unwrap_or_default(),
        peer_timeout: seconds("--peer-timeout", a.peer_timeout, true)?,
        heartbeat: Duration::from_secs(1),
        tls,
        limits: Limits {
            max_payload: a.max_payload_mb.saturating_mul(1 << 20),
            max_dimension: a.max_dimension,
        },
        // The file options are checked whichever sink is chosen: a mistake in them is
        // an error, not something `--sink null` silently drops.
        sink: match (a.sink.as_str(), files_config(a, connect)?) {
            ("files", files) => Some(files),
            ("null", _) => None,
            (other, _) => bail!("--sink must be files or null, got {other:?}"),
        },
        stats_interval: seconds("--stats-interval", a.stats_interval, false)?.unwrap_or_default(),
        hello: rawlink_proto::ClientHello {
            policy: a.policy.parse().map_err(|e: String| anyhow!(e))?,
            every: a.every,
            pack: a.pack,
            compress: a.compress,
            max_fps: if (0.0..=1e6).contains(&a.max_fps) {
                a.max_fps
            } else {
                bail!(
                    "--max-fps must be a number from 0 to 1000000, got {}",
                    a.max_fps
                )
            },
            heartbeat_ms: 1000,
            token,
        },
        live: None,
    })
}

/// The receiver's ISP settings, checked. Legacy frames have the depth `--bits` gives; a
/// v1 frame brings its own (set per frame), so settings are checked here against the
/// widest, 16 bits, and against the frame's depth when a frame comes.
fn receive_isp_config(a: &ReceiveArgs) -> Result<IspConfig> {
    let g = &a.geometry;
    let bits = if a.legacy { g.bits } else { 16 };
    let c = isp_config(&a.isp, g.pattern, bits)?;
    c.validate()?;
    static ONCE: std::sync::Once = std::sync::Once::new();
    if c.wb.mode == rawlink_isp::WbMode::Metadata {
        ONCE.call_once(|| tracing::warn!(
            "--wb metadata: stream frames carry no white-balance gains, so each frame's are estimated from the image (robust)"
        ));
    }
    Ok(c)
}

/// The file sink's settings from `receive`'s options, checked.
fn files_config(a: &ReceiveArgs, connect: &str) -> Result<sink::SinkConfig> {
    let several = a.connect.len() > 1;
    Ok(sink::SinkConfig {
        out: if several {
            a.out.join(stream_folder(connect))
        } else {
            a.out.clone()
        },
        // With several streams each per-frame line names its stream, as the summaries do.
        label: if several {
            format!("[{connect}] ")
        } else {
            String::new()
        },
        isp: receive_isp_config(a)?,
        png_depth: a.isp.png_depth,
        workers: a.workers as usize,
        queue: a.queue as usize,
        quiet: a.quiet,
        on_disk_error: a.on_disk_error.parse().map_err(|e: String| anyhow!(e))?,
        save: a.save.parse().map_err(|e: String| anyhow!(e))?,
        io: a.io,
    })
}

/// Starts the live view on `addr` (or, with `fallback`, on a free port if `addr` is
/// taken) and prints its URL.
async fn start_live(
    addr: std::net::SocketAddr,
    fallback: bool,
    names: &[String],
    isp: &IspConfig,
    config: live::LiveConfig,
    shutdown: CancellationToken,
) -> Result<std::sync::Arc<live::Hub>> {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if fallback => {
            tracing::warn!("cannot listen on {addr} for the live view ({e}); using a free port");
            TcpListener::bind((addr.ip(), 0))
                .await
                .with_context(|| format!("cannot listen on {} for the live view", addr.ip()))?
        }
        Err(e) => return Err(anyhow!(e).context(format!("cannot listen on {addr} (--http)"))),
    };
    let bound = listener.local_addr()?;
    let hub = live::Hub::new(names, isp, config);
    let h = std::sync::Arc::clone(&hub);
    tokio::spawn(async move {
        if let Err(e) = live::http::serve(listener, h, shutdown).await {
            tracing::error!("live view server failed: {e}");
        }
    });
    println!("live view: http://{bound}/");
    Ok(hub)
}

async fn receive(a: ReceiveArgs) -> Result<ExitCode> {
    // Two streams into one folder would interleave their files (and the server would
    // send everything twice).
    let mut folders = std::collections::HashSet::new();
    for c in &a.connect {
        if !folders.insert(stream_folder(c)) {
            bail!("--connect {c} is given twice (or maps to the same output folder as another)");
        }
    }
    let mut configs = Vec::new();
    for c in &a.connect {
        configs.push(receive_config(&a, c)?);
    }
    if let Some(m) = a.metrics {
        let at = monitor::install(m, monitor::Role::Receiver)?;
        println!("metrics: http://{at}/metrics");
    }
    let shutdown = shutdown_on_signals();
    let http_stop = CancellationToken::new();
    let _stop_http = http_stop.clone().drop_guard();
    if let Some(addr) = a.http.http {
        let isp = receive_isp_config(&a)?;
        let config = live::LiveConfig {
            max_fps: a.http.http_fps,
            preview_width: a.http.http_preview_width as usize,
            max_viewers: a.http.http_max_viewers as usize,
            ..Default::default()
        };
        let hub = start_live(addr, false, &a.connect, &isp, config, http_stop.clone()).await?;
        for (cfg, s) in configs.iter_mut().zip(&hub.streams) {
            cfg.live = Some(std::sync::Arc::clone(s));
        }
    }
    if configs.len() == 1 {
        let cfg = configs.remove(0);
        let summary = receiver::receive(cfg, shutdown).await?;
        println!("{}", summary.line());
        return finish_receive(&summary);
    }
    // Several cameras: one receiver each, concurrently; each summary is prefixed.
    let mut tasks = Vec::new();
    for cfg in configs {
        let name = cfg.connect.clone();
        let sd = shutdown.clone();
        tasks.push((name, tokio::spawn(receiver::receive(cfg, sd))));
    }
    let mut failures = Vec::new();
    for (name, t) in tasks {
        match t.await.context("receiver task")? {
            Ok(summary) => {
                println!("[{name}] {}", summary.line());
                if let Err(e) = finish_receive(&summary) {
                    failures.push(format!("{name}: {e:#}"));
                }
            }
            Err(e) => failures.push(format!("{name}: {e:#}")),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}

fn finish_receive(summary: &receiver::ReceiveSummary) -> Result<ExitCode> {
    // Nothing accepted although messages came is the error to name first: it is
    // usually why the stream then failed too.
    if let (0, Some(first)) = (summary.frames, &summary.first_rejection) {
        let then = summary
            .error
            .as_ref()
            .map(|e| format!("; then: {e}"))
            .unwrap_or_default();
        bail!(
            "no frame was accepted: {} message(s) rejected; first: {first}{then}",
            summary.crc_errors + summary.protocol_errors
        );
    }
    if let Some(e) = &summary.error {
        bail!("{e}");
    }
    if let Some(e) = &summary.sink.first_error {
        bail!(
            "{} frame(s) could not be processed or written in full; first: {e}",
            summary.sink.errors
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn demo(a: DemoArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    let spec: SourceSpec = a.source.parse()?;
    if !matches!(spec, SourceSpec::Sim | SourceSpec::SimScene) {
        bail!("demo runs a simulated camera: --source must be sim or sim:scene");
    }
    isp_config(&a.isp, a.geometry.pattern, a.geometry.bits)?.validate()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let opts = source_options(&a.geometry, Duration::from_millis(a.interval_ms), false);
    let source = rawlink_source::open(&spec, &opts)?;
    println!(
        "demo: {} of {} over {addr} -> {}",
        match a.frames {
            0 => "frames until Ctrl-C".to_string(),
            n => format!("{n} frames"),
        },
        source.describe(),
        a.out.display()
    );
    let shutdown = shutdown_on_signals();
    let http_stop = CancellationToken::new();
    let _stop_http = http_stop.clone().drop_guard();
    let hub = if a.no_http {
        None
    } else {
        let isp = isp_config(&a.isp, a.geometry.pattern, a.geometry.bits)?;
        let config = live::LiveConfig {
            max_fps: a.http_fps,
            ..Default::default()
        };
        // The default address gives way to a free port if taken; one given is kept.
        let (http, fallback) = match a.http {
            Some(addr) => (addr, false),
            None => (cli::DEMO_HTTP_DEFAULT, true),
        };
        Some(
            start_live(
                http,
                fallback,
                &[addr.to_string()],
                &isp,
                config,
                http_stop.clone(),
            )
            .await?,
        )
    };
    let server_done = CancellationToken::new();
    let server = tokio::spawn(then_cancel(
        server_done.clone(),
        server::serve(
            listener,
            source,
            server::ServeConfig {
                frames: (a.frames > 0).then_some(a.frames),
                legacy: false,
                wait_clients: 1,
                max_clients: 4,
                client_queue: 64,
                client_buffer_bytes: 256 << 20,
                hello_timeout: Duration::from_secs(1),
                stats_interval: Duration::ZERO,
                source_name: spec.to_string(),
                handshake_timeout: Duration::from_secs(5),
                max_pending: 4,
                peer_timeout: Some(Duration::from_secs(10)),
                heartbeat: Duration::from_secs(1),
                tls: None,
                token: None,
            },
            shutdown.clone(),
        ),
    ));
    let connect = addr.to_string();
    let cfg = receive_config(
        &ReceiveArgs {
            connect: vec![connect.clone()],
            out: a.out.clone(),
            legacy: false,
            frames: None,
            connect_timeout: 5.0,
            reconnect: false,
            no_reconnect: true,
            reconnect_timeout: 0.0,
            reconnect_max_delay: 5.0,
            peer_timeout: 10.0,
            on_disk_error: "stop".into(),
            // The demo's own frames, whatever their size, are within the limits.
            max_dimension: 65535,
            security: Default::default(),
            policy: "lossless".into(),
            every: 1,
            max_fps: 0.0,
            sink: "files".into(),
            save: "raw,png".into(),
            pack: false,
            compress: false,
            metrics: None,
            stats_interval: 0.0,
            isp: a.isp.clone(),
            black_level: None,
            workers: a.workers,
            io: a.io,
            queue: 64,
            max_payload_mb: ((a.geometry.width as u64 * a.geometry.height as u64 * 2) >> 20)
                .saturating_add(1)
                .max(256),
            quiet: a.quiet,
            geometry: a.geometry.clone(),
            http: cli::HttpArgs {
                http: None,
                http_fps: a.http_fps,
                http_preview_width: 1280,
                http_max_viewers: 32,
            },
        },
        &connect,
    )?;
    let mut cfg = cfg;
    cfg.live = hub.as_ref().map(|h| std::sync::Arc::clone(&h.streams[0]));
    // On a signal the server finishes the stream (what it has captured, then the end
    // message) and the receiver reads on to that end, so that no frame the server
    // captured is lost; it is stopped only if the end takes longer than the server's
    // own grace for its clients.
    let receiver_stop = CancellationToken::new();
    {
        let (signalled, stop) = (shutdown.clone(), receiver_stop.clone());
        let done = server_done.clone();
        tokio::spawn(async move {
            signalled.cancelled().await;
            // The server returns once its client has taken the end of the stream (or
            // after its own grace); by then the receiver has read it. A few seconds
            // more, and it is stopped whatever it is doing.
            done.cancelled().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.cancel();
        });
    }
    let summary = match receiver::receive(cfg, receiver_stop.clone()).await {
        Ok(s) => s,
        Err(e) => {
            shutdown.cancel();
            let _ = server.await;
            return Err(e);
        }
    };
    // A receiver that stopped before the end of the stream (a disk error, a fault)
    // leaves the server waiting for its next client: with `--frames 0` for ever.
    if summary.end.is_none() {
        shutdown.cancel();
    }
    let served = server.await.context("server task")??;
    println!("{}", summary.line());
    println!(
        "demo: {} frames captured, {} written to {} in {:.2} s ({:.1} frames/s to disk)",
        served.frames,
        summary.sink.written,
        a.out.display(),
        t0.elapsed().as_secs_f64(),
        summary.disk_fps()
    );
    finish_receive(&summary)
}

/// The input as a DNG, if it is one: it starts as a TIFF file does and either reads as a
/// DNG or is not the size of the headerless samples `g` describes (16-bit samples can
/// begin with a TIFF file's bytes, 0x4949 0x002A).
fn as_dng(
    path: &std::path::Path,
    bytes: &[u8],
    g: &GeometryArgs,
) -> Result<Option<rawlink_dng::DngImage>> {
    if !is_tiff(bytes) {
        return Ok(None);
    }
    match rawlink_dng::read_dng(bytes) {
        Ok(d) => Ok(Some(d)),
        // Only samples of 15 bits and more can hold 0x4949 (18 761) as their first.
        Err(_) if g.bits >= 15 && bytes.len() as u64 == g.width as u64 * g.height as u64 * 2 => {
            Ok(None)
        }
        Err(e) => Err(anyhow!(e).context(path.display().to_string())),
    }
}

/// Runs `fut`, then cancels `done`.
async fn then_cancel<T>(done: CancellationToken, fut: impl std::future::Future<Output = T>) -> T {
    let r = fut.await;
    done.cancel();
    r
}

/// True for a TIFF (and so DNG) file.
fn is_tiff(b: &[u8]) -> bool {
    matches!(b.get(..4), Some(b"II*\0") | Some(b"MM\0*"))
}

/// The file's modification time in ns since the epoch, or 0.
fn mtime_ns(p: &std::path::Path) -> u64 {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Largest file `isp` and `convert` read as a DNG: twice the largest uncompressed
/// image rawlink reads ([`rawlink_dng::MAX_PIXELS`] 16-bit samples), leaving room for
/// previews and metadata.
const MAX_DNG_FILE_BYTES: u64 = 2 * rawlink_dng::MAX_PIXELS * 2;

/// Reads the input of `isp` or `convert`: a DNG of at most [`MAX_DNG_FILE_BYTES`], or a
/// headerless file of exactly `width * height * 2` bytes. The size of a regular file is
/// checked before it is read, and whatever the input is (a device such as `/dev/zero`, a
/// FIFO) at most one byte past the limit is read.
fn read_input(path: &std::path::Path, g: &GeometryArgs) -> Result<Vec<u8>> {
    use std::io::Read;
    let cannot = || format!("cannot read {}", path.display());
    let file = std::fs::File::open(path).with_context(cannot)?;
    let meta = file.metadata().with_context(cannot)?;
    let mut bytes = Vec::new();
    (&file)
        .take(4)
        .read_to_end(&mut bytes)
        .with_context(cannot)?;
    let raw_len = g.width as u64 * g.height as u64 * 2;
    let tiff = is_tiff(&bytes);
    // Images a user may pass by mistake, named when the size does not fit RAW samples.
    let image = [(&b"\x89PNG"[..], "PNG"), (&b"\xff\xd8\xff"[..], "JPEG")]
        .into_iter()
        .find(|(magic, _)| bytes.starts_with(magic))
        .map(|(_, name)| name);
    let too_big = |actual: &str| -> anyhow::Error {
        if let (Some(name), false) = (image, tiff) {
            anyhow!(
                "{}: a {name} image, not RAW samples or a DNG",
                path.display()
            )
        } else if tiff {
            anyhow!(
                "{}: {actual} bytes: larger than any DNG rawlink reads (at most {MAX_DNG_FILE_BYTES})",
                path.display()
            )
        } else {
            anyhow!(
                "{}: input is {actual} bytes but {}x{} 16-bit samples need {raw_len} bytes",
                path.display(),
                g.width,
                g.height
            )
        }
    };
    let limit = if tiff {
        MAX_DNG_FILE_BYTES
    } else {
        if meta.is_file() && meta.len() != raw_len {
            return Err(too_big(&meta.len().to_string()));
        }
        raw_len
    };
    if meta.is_file() && meta.len() > limit {
        return Err(too_big(&meta.len().to_string()));
    }
    if meta.is_file() {
        bytes.reserve_exact((meta.len() as usize).saturating_sub(bytes.len()));
    }
    (&file)
        .take((limit + 1).saturating_sub(bytes.len() as u64))
        .read_to_end(&mut bytes)
        .with_context(cannot)?;
    if bytes.len() as u64 > limit {
        return Err(too_big(&format!("more than {limit}")));
    }
    Ok(bytes)
}

/// A headerless file's samples (u16 little-endian, `--width` × `--height`), each checked
/// to fit in `--bits`.
fn raw_samples(path: &std::path::Path, bytes: &[u8], g: &GeometryArgs) -> Result<RawPlane> {
    let raw = RawPlane::from_le_bytes(g.width as usize, g.height as usize, bytes)
        .with_context(|| format!("{}", path.display()))?;
    let max = ((1u32 << g.bits) - 1) as u16;
    if let Some((offset, v)) = rawlink_source::first_above(bytes, max) {
        bail!(
            "{}: sample {v} at byte {offset} does not fit in {} bits (--bits)",
            path.display(),
            g.bits
        );
    }
    Ok(raw)
}

/// Refuses an `--output` that would overwrite the input, or that names a folder (an
/// existing one, or any path ending in `/`, which would otherwise become a file).
fn check_output(input: &std::path::Path, output: &std::path::Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    if output.as_os_str().as_bytes().ends_with(b"/") {
        bail!(
            "--output {} ends in '/': give a file name, not a folder",
            output.display()
        );
    }
    let Ok(out) = std::fs::metadata(output) else {
        return Ok(()); // nothing there yet
    };
    if out.is_dir() {
        bail!(
            "--output {} is a folder: give a file name",
            output.display()
        );
    }
    if let Ok(inp) = std::fs::metadata(input) {
        if (inp.dev(), inp.ino()) == (out.dev(), out.ino()) {
            bail!("--output is the input file ({})", output.display());
        }
    }
    Ok(())
}

fn convert(a: ConvertArgs) -> Result<ExitCode> {
    check_output(&a.input, &a.output)?;
    let bytes = read_input(&a.input, &a.geometry)?;
    let ext = a
        .output
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if let Some(dng) = as_dng(&a.input, &bytes, &a.geometry)? {
        if ext != "raw" {
            bail!(
                "a DNG input converts to a .raw file (got --output {})",
                a.output.display()
            );
        }
        let out: Vec<u8> = dng.samples.iter().flat_map(|v| v.to_le_bytes()).collect();
        // Folders are created only once the input is known to be good.
        let (dir, name) = sink::split_output(&a.output)?;
        sink::write_atomic(&dir, &name, &out)?;
        let m = &dng.meta;
        println!(
            "wrote {} ({}x{} {} {}-bit, black {} white {}{})",
            a.output.display(),
            m.width,
            m.height,
            m.pattern,
            m.bits,
            m.black_level,
            m.white_level,
            if !(2..=8).contains(&m.orientation) {
                String::new()
            } else {
                format!(
                    "; the samples are as stored: the DNG's Orientation {} is lost in a .raw file",
                    m.orientation
                )
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    if ext != "dng" {
        bail!(
            "a .raw input converts to a .dng file (got --output {})",
            a.output.display()
        );
    }
    let g = &a.geometry;
    let raw = raw_samples(&a.input, &bytes, g)?;
    let max = ((1u32 << g.bits) - 1) as u16;
    let neutral = match &a.wb_gains {
        None => [1.0; 3],
        Some(v) => match v[..] {
            // The range the ISP takes for gains (so the file's AsShotNeutral is one
            // that rawlink, and a raw converter, can use).
            [r, gg, b] => {
                rawlink_isp::check_wb_gains([r, gg, b].map(|x| x as f32))
                    .map_err(|e| anyhow!("--wb-gains: {e}"))?;
                // A reader takes the gains back as ratios to green (AsShotNeutral): those
                // must be in the ISP's range too, and not tiny (stored as rationals).
                let ratios = [r / gg, 1.0, b / gg];
                rawlink_isp::check_wb_gains(ratios.map(|x| x as f32))
                    .map_err(|e| anyhow!("--wb-gains {r},{gg},{b} relative to green: {e}"))?;
                if ratios.iter().any(|&x| x < 1.0 / 64.0) {
                    bail!("--wb-gains: white-balance gains {r},{gg},{b} relative to green must be at least 1/64");
                }
                [gg / r, 1.0, gg / b]
            }
            _ => bail!("--wb-gains needs three values r,g,b, got {}", v.len()),
        },
    };
    let color_matrix = match &a.color_matrix {
        Some(v) if v.len() != 9 => bail!("--color-matrix needs 9 numbers, got {}", v.len()),
        Some(v) if !v.iter().all(|x| x.is_finite()) => {
            bail!("--color-matrix needs 9 finite numbers, got {v:?}")
        }
        Some(v) => {
            let m = [[v[0], v[1], v[2]], [v[3], v[4], v[5]], [v[6], v[7], v[8]]];
            // A reader inverts ColorMatrix1 to get from camera RGB to XYZ.
            if rawlink_dng::mat_inv(&m).is_none() {
                bail!("--color-matrix {v:?} is singular (not invertible)");
            }
            Some(m)
        }
        None => dng_color_matrix(&IspConfig::default()),
    };
    // Written as ISO 100 × gain, an EXIF SHORT: at most 65 535.
    if !(a.gain.is_finite() && a.gain > 0.0 && a.gain <= 655.35) {
        bail!(
            "--gain must be a positive number up to 655.35, got {}",
            a.gain
        );
    }
    let meta = rawlink_dng::DngMeta {
        width: g.width,
        height: g.height,
        pattern: g.pattern,
        bits: g.bits,
        black_level: a
            .black_level
            .unwrap_or_else(|| rawlink_source::reference_black_level(g.bits)),
        white_level: a.white_level.unwrap_or(max),
        as_shot_neutral: neutral,
        color_matrix,
        timestamp_ns: a.timestamp_ns.unwrap_or_else(|| mtime_ns(&a.input)),
        exposure_us: a.exposure_us,
        analog_gain: a.gain,
        model: "rawlink".into(),
        description: format!("converted from {}", a.input.display()),
        orientation: 1,
    };
    let dng = rawlink_dng::write_dng(&meta, &raw.data)?;
    let (dir, name) = sink::split_output(&a.output)?;
    sink::write_atomic(&dir, &name, &dng)?;
    println!(
        "wrote {} ({}x{} {} {}-bit DNG, black {} white {})",
        a.output.display(),
        g.width,
        g.height,
        g.pattern,
        g.bits,
        meta.black_level,
        meta.white_level
    );
    Ok(ExitCode::SUCCESS)
}

/// ColorMatrix1 for DNGs: the inverse of the ISP's colour correction, from XYZ.
pub(crate) fn dng_color_matrix(cfg: &IspConfig) -> Option<[[f64; 3]; 3]> {
    let ccm = cfg.ccm.matrix.map(|r| r.map(f64::from));
    rawlink_dng::color_matrix_from_ccm(&ccm)
}

fn isp(a: IspArgs) -> Result<ExitCode> {
    let g = &a.geometry;
    let mut cfg = isp_config(&a.isp, g.pattern, g.bits)?;
    if let Some(b) = a.black_level {
        cfg.set_black_level(b);
    }
    check_output(&a.input, &a.output)?;
    let bytes = read_input(&a.input, g)?;
    let (raw, orientation) = if let Some(dng) = as_dng(&a.input, &bytes, g)? {
        let m = &dng.meta;
        // The geometry flags describe headerless input: a DNG's own metadata win. A flag
        // set away from its default that says otherwise is named, so it is not taken
        // for applied.
        let d = &cli::GeometryArgs::DEFAULT;
        let ignored: Vec<String> = [
            (g.pattern != d.pattern && g.pattern != m.pattern)
                .then(|| format!("--pattern {}", g.pattern)),
            (g.bits != d.bits && g.bits != m.bits).then(|| format!("--bits {}", g.bits)),
            (g.width != d.width && g.width != m.width).then(|| format!("--width {}", g.width)),
            (g.height != d.height && g.height != m.height)
                .then(|| format!("--height {}", g.height)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !ignored.is_empty() {
            tracing::warn!(
                "{}: {} ignored: the DNG says {}x{} {} {}-bit",
                a.input.display(),
                ignored.join(", "),
                m.width,
                m.height,
                m.pattern,
                m.bits
            );
        }
        cfg.pattern = m.pattern;
        cfg.bits = m.bits;
        // The file's levels and colour matrix apply unless a flag or the config file
        // sets that value itself.
        if cfg.blc.black.is_none() {
            match dng.black_per_channel {
                // Per CFA site (BlackLevelRepeatDim): per colour in the default profile;
                // the reference ISP has one black level, so it takes their mean.
                Some(b) if cfg.profile != Profile::Reference => cfg.blc.black = Some(b),
                Some(b) => {
                    tracing::warn!(
                        "{}: black levels per colour {b:?}; the reference profile uses one, their mean {}",
                        a.input.display(),
                        m.black_level
                    );
                    cfg.set_black_level(m.black_level);
                }
                None => cfg.set_black_level(m.black_level),
            }
        }
        if cfg.blc.white.is_none() {
            cfg.blc.white = Some(m.white_level);
        }
        let defaults = IspConfig::default();
        let reference = cfg.profile == Profile::Reference;
        let wb_unset = a.isp.wb.is_none() && a.isp.wb_gains.is_none() && cfg.wb == defaults.wb;
        // `--wb metadata` asks for the file's white balance by name.
        let from_file = cfg.wb.mode == rawlink_isp::WbMode::Metadata && cfg.wb.gains.is_none();
        if from_file && m.as_shot_neutral == [1.0; 3] {
            tracing::warn!(
                "{}: --wb metadata, but the file has no AsShotNeutral (or a neutral one): white balance from the image (robust)",
                a.input.display()
            );
        }
        if (wb_unset || from_file) && !reference && m.as_shot_neutral != [1.0; 3] {
            let n = m.as_shot_neutral;
            let gains = [(n[1] / n[0]) as f32, 1.0, (n[1] / n[2]) as f32];
            match rawlink_isp::check_wb_gains(gains) {
                Ok(()) => {
                    cfg.wb.mode = rawlink_isp::WbMode::Manual;
                    cfg.wb.gains = Some(gains);
                }
                // A file's metadata is input, not a setting: an absurd neutral is
                // reported and the image's own white balance used.
                Err(e) => tracing::warn!(
                    "{}: AsShotNeutral {n:?} ignored ({e}); white balance from the image",
                    a.input.display()
                ),
            }
        }
        // A config's matrix other than the identity (the default) wins over the file's.
        let config_ccm = cfg.ccm.matrix != defaults.ccm.matrix;
        let dng_ccm = m
            .color_matrix
            .filter(|_| !config_ccm && !reference)
            .and_then(|cm| rawlink_dng::ccm_from_color_matrix(&cm))
            .map(|ccm| ccm.map(|r| r.map(|v| v as f32)));
        let dng_ccm_ok = dng_ccm.as_ref().is_some_and(rawlink_isp::ccm_matrix_ok);
        if let (Some(ccm), true) = (dng_ccm, dng_ccm_ok) {
            cfg.ccm.matrix = ccm;
        }
        if m.color_matrix.is_some() && !reference && !config_ccm && !dng_ccm_ok {
            tracing::warn!(
                "{}: its ColorMatrix1 is ignored ({}); no colour matrix is applied",
                a.input.display(),
                if dng_ccm.is_some() {
                    "its camera-to-sRGB matrix has entries beyond ±64"
                } else {
                    "not invertible"
                }
            );
        }
        tracing::info!(
            "{}: DNG {}x{} {} {}-bit, black {} white {}, AsShotNeutral {:?}, ColorMatrix1 {}",
            a.input.display(),
            m.width,
            m.height,
            m.pattern,
            m.bits,
            m.black_level,
            m.white_level,
            m.as_shot_neutral,
            match (m.color_matrix.is_some(), dng_ccm.is_some()) {
                (false, _) => "absent",
                (true, true) if dng_ccm_ok => "used",
                (true, true) => "ignored (its camera-to-sRGB matrix has entries beyond ±64)",
                (true, false) if reference => "ignored (the reference profile has no CCM)",
                (true, false) if config_ccm => "ignored (the config sets ccm.matrix)",
                (true, false) => "ignored (not invertible)",
            }
        );
        let orientation = match m.orientation {
            1..=8 => m.orientation,
            o => {
                tracing::warn!(
                    "{}: Orientation {o} is not one of 1-8; the image is written as stored",
                    a.input.display()
                );
                1
            }
        };
        let plane = RawPlane::new(m.width as usize, m.height as usize, dng.samples)?;
        (plane, orientation)
    } else {
        if cfg.wb.mode == rawlink_isp::WbMode::Metadata {
            tracing::warn!(
                "{}: --wb metadata, but headerless samples carry no white balance: estimated from the image (robust)",
                a.input.display()
            );
        }
        // Headerless samples: the reference driver's black level unless a flag or the
        // config sets one, as `file:` replays them and `convert` writes them to DNG, so
        // a saved frame processes as the receiver processed it.
        if cfg.blc.black.is_none() {
            cfg.set_black_level(rawlink_source::reference_black_level(g.bits));
        }
        (raw_samples(&a.input, &bytes, g)?, 1)
    };
    // The file's bytes are decoded; holding them through the pipeline would add the
    // input's size again to the peak memory.
    drop(bytes);
    let pipeline = Pipeline::new(&cfg)?;
    let t = Instant::now();
    let mut out = pipeline.run(raw);
    let isp_ms = t.elapsed().as_secs_f64() * 1e3;
    // A DNG's Orientation turns the output for display, as raw converters do (1–8 only,
    // checked above).
    if orientation != 1 {
        let image = std::mem::replace(&mut out.image, RgbImage::new(0, 0));
        out.image = image
            .oriented(orientation)
            .context("orientation out of range")?;
    }
    let (width, height) = (out.image.width, out.image.height);
    let png = sink::encode_png(&mut out, a.isp.png_depth, &[])?;
    let (dir, name) = sink::split_output(&a.output)?;
    sink::write_atomic(&dir, &name, &png)?;
    if a.timing {
        for (stage, d) in &out.timings {
            eprintln!("{stage:9} {:8.2} ms", d.as_secs_f64() * 1e3);
        }
        eprintln!("{:9} {:8.2} ms (all stages)", "total", isp_ms);
    }
    println!(
        "wrote {} ({}x{}, profile {}, stages {}, {:.1} ms)",
        a.output.display(),
        width,
        height,
        cfg.profile,
        pipeline.stage_names().join(","),
        isp_ms
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_warning_off_loopback_without_a_token_even_with_tls() {
        let any: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lo: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let lo6: std::net::SocketAddr = "[::1]:8080".parse().unwrap();
        assert!(exposure_warning(any, false, false, false)
            .unwrap()
            .contains("without TLS or a token"));
        assert!(exposure_warning(any, false, false, true)
            .unwrap()
            .contains("legacy"));
        assert!(exposure_warning(any, true, false, false)
            .unwrap()
            .contains("TLS encrypts but does not authenticate clients: anyone who can reach this port can watch; add --token-file"));
        assert!(exposure_warning(any, false, true, false).is_none());
        assert!(exposure_warning(any, true, true, false).is_none());
        assert!(exposure_warning(lo, true, false, false).is_none());
        assert!(exposure_warning(lo, false, false, false).is_none());
        assert!(exposure_warning(lo6, false, false, false).is_none());
    }

    #[test]
    fn fps_is_kept_to_the_nanosecond() {
        let pacing = |fps: f64| PacingArgs {
            interval_ms: None,
            fps: Some(fps),
        };
        assert_eq!(
            frame_interval(&pacing(700.0)).unwrap(),
            Duration::from_nanos(1_428_571)
        );
        assert_eq!(
            frame_interval(&pacing(3000.0)).unwrap(),
            Duration::from_nanos(333_333)
        );
        assert_eq!(
            frame_interval(&pacing(0.5)).unwrap(),
            Duration::from_secs(2)
        );
        for bad in [0.0, -1.0, f64::NAN] {
            assert!(frame_interval(&pacing(bad)).is_err());
        }
    }

    #[test]
    fn connect_addresses_are_checked_for_form() {
        for ok in ["127.0.0.1:8080", "camera-host:1", "[::1]:65535"] {
            assert!(check_connect(ok).is_ok(), "{ok}");
        }
        for bad in [
            "bad",
            "127.0.0.1",
            ":8080",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            "h:x",
        ] {
            let e = check_connect(bad).unwrap_err().to_string();
            assert!(e.contains("HOST:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn seconds_flags_are_checked() {
        assert_eq!(seconds("--x", 0.0, true).unwrap(), None);
        assert_eq!(
            seconds("--x", 1.5, true).unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(seconds("--x", 0.0, false).unwrap(), Some(Duration::ZERO));
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let e = seconds("--x", bad, true).unwrap_err().to_string();
            assert!(e.starts_with("--x must be"), "{e}");
        }
    }
}
