//! `rawlink bench`: ISP speed over sizes × profiles × thread counts.
//!
//! Each configuration runs in a fresh child process (`rawlink bench --single …`), so
//! its peak RSS is its own. The input is a `sim:scene` frame (RGGB, 12-bit, black 256);
//! times exclude file I/O and include the 8-bit conversion.

use anyhow::{bail, Context, Result};
use rawlink_frame::BayerPattern;
use rawlink_isp::{IspConfig, Pipeline, Profile, RawPlane, RgbImage};
use rawlink_source::{SceneSource, SourceOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Command-line options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Frame sizes, WxH.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "640x480,1920x1080,3840x2160",
        value_parser = size_arg
    )]
    pub sizes: Vec<String>,
    /// ISP profiles.
    #[arg(long, value_delimiter = ',', default_value = "reference,default", value_parser = crate::cli::checked::<Profile>)]
    pub profiles: Vec<String>,
    /// Thread counts (`all` = every core).
    #[arg(long, value_delimiter = ',', default_value = "1,2,all", value_parser = threads_arg)]
    pub threads: Vec<String>,
    /// Timed runs per configuration (after one warm-up run).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub iters: u32,
    /// Run every configuration this many times, interleaved (each round runs each
    /// configuration once, in the order given), and report the medians over the rounds.
    /// Use it for ratios between configurations (thread scaling, say) on a machine whose
    /// clock speed moves: configurations run minutes apart see different clocks.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run the bilateral bit-exact (`--bit-exact` of `rawlink isp`) instead of within
    /// ±1 LSB.
    #[arg(long)]
    pub bit_exact: bool,
    /// Start every configuration from this ISP configuration file (TOML, as `rawlink isp
    /// --config`); the profile still comes from `--profiles`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Demosaic method for the `default` profile: bilinear, malvar or rcd (overrides the
    /// configuration).
    #[arg(long, value_parser = crate::cli::checked::<rawlink_isp::DemosaicMethod>)]
    pub demosaic: Option<String>,
    /// Run exactly these stages, e.g. `blc,demosaic` (overrides the configuration).
    #[arg(long, value_parser = crate::cli::stages_arg)]
    pub stages: Option<String>,
    /// Run the first configuration in this process and print one JSON object.
    #[arg(long, hide = true)]
    pub single: bool,
}

/// One configuration's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    /// `WxH`.
    pub size: String,
    /// Profile name.
    pub profile: String,
    /// Worker threads.
    pub threads: usize,
    /// Median total time, ms.
    pub total_ms_median: f64,
    /// Megapixels per second at the median.
    pub mp_per_s: f64,
    /// Peak resident set of the process over the runs, MiB: the ISP's memory, its input,
    /// and a master copy of the input each run is cloned from (the synthetic scene's
    /// rendering, freed before the runs, is not counted where Linux lets the peak be
    /// reset).
    pub peak_rss_mb: f64,
    /// Median time per stage, ms (plus `to_8bit`).
    pub stages_ms: BTreeMap<String, f64>,
    /// Timed runs per round.
    pub iters: u32,
    /// Rounds (`--rounds`): `total_ms_median` and `stages_ms` are the medians of the
    /// rounds' medians, `mp_per_s` follows from `total_ms_median`, and `peak_rss_mb` is
    /// the largest round's.
    #[serde(default = "one")]
    pub rounds: u32,
    /// Each round's median total time, ms, in the order run (with more than one round).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub round_totals_ms: Vec<f64>,
    /// Whether the bilateral ran bit-exact (`--bit-exact`).
    #[serde(default)]
    pub bit_exact: bool,
    /// The demosaic method that ran: the `default` profile's from `--demosaic` or the
    /// configuration; always `bilinear` for the `reference` profile.
    #[serde(default)]
    pub demosaic: String,
    /// The stages run when not the profile's own (`--stages` or the configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<String>,
    /// The configuration file, when one was given (`--config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

fn one() -> u32 {
    1
}

/// The ISP configuration of one run: `--config` (or the built-in default), then the
/// profile, the bench's input format and the overrides.
fn bench_config(a: &BenchArgs, profile: Profile) -> Result<IspConfig> {
    let mut cfg = match &a.config {
        Some(p) => IspConfig::from_toml_file(p)?,
        None => IspConfig::default(),
    };
    cfg.profile = profile;
    cfg.pattern = BayerPattern::Rggb;
    cfg.bits = 12;
    cfg.set_black_level(256);
    cfg.denoise.exact = a.bit_exact;
    if let Some(d) = &a.demosaic {
        cfg.demosaic.method = d.parse()?;
    }
    if let Some(s) = &a.stages {
        cfg.stages = Some(rawlink_isp::parse_stage_list(s)?);
    }
    Ok(cfg)
}

fn parse_size(s: &str) -> Result<(u32, u32)> {
    let (w, h) = s
        .split_once('x')
        .with_context(|| format!("bad size {s:?}: expected WxH, e.g. 1920x1080"))?;
    let side = |v: &str| {
        v.trim()
            .parse::<u32>()
            .with_context(|| format!("bad size {s:?}: {v:?} is not a whole number"))
    };
    let (w, h) = (side(w)?, side(h)?);
    if !(16..=16384).contains(&w) || !(16..=16384).contains(&h) {
        bail!("size {s:?} out of range (16..=16384 per side)");
    }
    Ok((w, h))
}

/// `--sizes` values, checked while the command line is parsed (a bad one exits 2, as any
/// other bad option does).
fn size_arg(s: &str) -> std::result::Result<String, String> {
    parse_size(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// `--threads` values, checked while the command line is parsed.
fn threads_arg(s: &str) -> std::result::Result<String, String> {
    parse_threads(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn parse_threads(s: &str) -> Result<usize> {
    if s == "all" {
        return Ok(std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1));
    }
    let n: usize = s
        .parse()
        .with_context(|| format!("bad thread count {s:?}"))?;
    if n == 0 || n > 256 {
        bail!("thread count {n} out of range 1..=256");
    }
    Ok(n)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Starts the peak-RSS count afresh (Linux: writing `5` to `clear_refs` resets `VmHWM`
/// to the current resident set), so that the synthetic scene's rendering buffers, freed
/// before the timed runs, do not count. Returns false where the kernel does not allow it.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident set of the process since [`reset_peak_rss`] (`VmHWM`), MiB; the
/// lifetime peak from `getrusage` where `/proc` has no `VmHWM`.
fn peak_rss_mb() -> f64 {
    let hwm_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        });
    hwm_kib.map(|k| k / 1024.0).unwrap_or_else(|| {
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
            .map(|u| u.max_rss() as f64 / 1024.0)
            .unwrap_or(0.0)
    })
}

fn run_single(a: &BenchArgs) -> Result<BenchResult> {
    let (size, iters) = (&a.sizes[0], a.iters);
    let threads = parse_threads(&a.threads[0])?;
    let (w, h) = parse_size(size)?;
    let profile: Profile = a.profiles[0].parse()?;
    let opts = SourceOptions {
        width: w,
        height: h,
        interval: std::time::Duration::ZERO,
        ..SourceOptions::default()
    };
    let scene = SceneSource::new(&opts)?;
    let bytes = scene.render(1);
    let raw = RawPlane::from_le_bytes(w as usize, h as usize, &bytes)?;
    drop((bytes, scene));
    // From here on the process holds the master copy of the input (one frame of `u16`)
    // and what the ISP allocates.
    if !reset_peak_rss() {
        tracing::debug!("cannot reset the peak RSS: it includes the scene's rendering");
    }
    let cfg = bench_config(a, profile)?;
    let pipeline = Pipeline::new(&cfg)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("thread pool")?;
    let mut totals = Vec::new();
    let mut stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    // The output planes are handed back for the next frame, as the receiver's sink
    // workers do, and the 8-bit buffer is kept, so the figures are the steady state of a
    // stream. (The receiver makes the 8-bit rows inside the PNG coder instead, so this
    // `to_8bit` stage is a pass it no longer makes on its own.)
    let mut rgb8 = Vec::new();
    pool.install(|| {
        for i in 0..=iters {
            let input = raw.clone();
            let t = Instant::now();
            let mut out = pipeline.run(input);
            let t8 = Instant::now();
            out.to_rgb8_into(&mut rgb8);
            let conv = t8.elapsed().as_secs_f64() * 1e3;
            let total = t.elapsed().as_secs_f64() * 1e3;
            std::hint::black_box(&rgb8);
            RgbImage::recycle_planes(std::mem::take(&mut out.image.planes));
            if i == 0 {
                continue; // warm-up
            }
            totals.push(total);
            for (name, d) in &out.timings {
                stages
                    .entry(name.to_string())
                    .or_default()
                    .push(d.as_secs_f64() * 1e3);
            }
            stages.entry("to_8bit".into()).or_default().push(conv);
        }
    });
    let total = median(&mut totals);
    Ok(BenchResult {
        size: format!("{w}x{h}"),
        profile: profile.to_string(),
        threads,
        total_ms_median: total,
        mp_per_s: (w as f64 * h as f64 / 1e6) / (total / 1e3),
        peak_rss_mb: peak_rss_mb(),
        stages_ms: stages
            .into_iter()
            .map(|(k, mut v)| (k, median(&mut v)))
            .collect(),
        iters,
        rounds: 1,
        round_totals_ms: Vec::new(),
        bit_exact: a.bit_exact,
        demosaic: match profile {
            // The reference profile always runs the reference's bilinear demosaic.
            Profile::Reference => "bilinear".to_string(),
            Profile::Default => cfg.demosaic.method.to_string(),
        },
        stages: a.stages.clone(),
        config: a.config.as_ref().map(|p| p.display().to_string()),
    })
}

/// Runs one configuration in a fresh child process and reads its result.
fn run_child(
    exe: &std::path::Path,
    a: &BenchArgs,
    size: &str,
    profile: &str,
    threads: usize,
) -> Result<BenchResult> {
    let out = std::process::Command::new(exe)
        .args(["bench", "--single", "--sizes", size, "--profiles", profile])
        .args([
            "--threads",
            &threads.to_string(),
            "--iters",
            &a.iters.to_string(),
        ])
        .args(a.bit_exact.then_some("--bit-exact"))
        .args(a.demosaic.iter().flat_map(|d| ["--demosaic", d]))
        .args(a.stages.iter().flat_map(|s| ["--stages", s]))
        .args(
            a.config
                .iter()
                .flat_map(|c| [std::ffi::OsStr::new("--config"), c.as_os_str()]),
        )
        .output()
        .context("running a benchmark child")?;
    if !out.status.success() {
        bail!(
            "benchmark {size} {profile} {threads} threads failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("reading a benchmark child's result")
}

/// One configuration's rounds as one result: the medians of the rounds' medians (total
/// and per stage), the throughput at that total, and the largest peak RSS.
fn merge_rounds(mut rounds: Vec<BenchResult>) -> BenchResult {
    let totals: Vec<f64> = rounds.iter().map(|r| r.total_ms_median).collect();
    let n = rounds.len() as u32;
    let peak = rounds.iter().map(|r| r.peak_rss_mb).fold(0.0, f64::max);
    let mut stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in &rounds {
        for (k, v) in &r.stages_ms {
            stages.entry(k.clone()).or_default().push(*v);
        }
    }
    let mut r = rounds.swap_remove(0);
    if n > 1 {
        let mp = r.mp_per_s * r.total_ms_median / 1e3; // megapixels of the frame
        r.total_ms_median = median(&mut totals.clone());
        r.mp_per_s = mp / (r.total_ms_median / 1e3);
        r.peak_rss_mb = peak;
        r.stages_ms = stages
            .into_iter()
            .map(|(k, mut v)| (k, median(&mut v)))
            .collect();
        r.round_totals_ms = totals;
    }
    r.rounds = n;
    r
}

/// Runs the benchmark and prints a table or JSON.
pub fn run(a: &BenchArgs) -> Result<()> {
    if a.single {
        let r = run_single(a)?;
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    for s in &a.sizes {
        parse_size(s)?;
    }
    // Bad names, files and values fail here, once, before any run: each profile's
    // pipeline is built (and so validated) as the runs will build it.
    for p in &a.profiles {
        let cfg = bench_config(a, p.parse::<Profile>()?)?;
        Pipeline::new(&cfg).with_context(|| format!("profile {p}"))?;
    }
    let mut thread_counts = Vec::new();
    for t in &a.threads {
        let n = parse_threads(t)?;
        if !thread_counts.contains(&n) {
            thread_counts.push(n); // `all` may equal an explicit count
        }
    }
    let exe = std::env::current_exe().context("locating the rawlink binary")?;
    let mut configs = Vec::new();
    for size in &a.sizes {
        for profile in &a.profiles {
            for &threads in &thread_counts {
                configs.push((size.as_str(), profile.as_str(), threads));
            }
        }
    }
    let mut runs: Vec<Vec<BenchResult>> = vec![Vec::new(); configs.len()];
    for round in 1..=a.rounds {
        for (&(size, profile, threads), runs) in configs.iter().zip(&mut runs) {
            let r = run_child(&exe, a, size, profile, threads)?;
            if !a.json {
                let of = if a.rounds > 1 {
                    format!(" (round {round} of {})", a.rounds)
                } else {
                    String::new()
                };
                eprintln!(
                    "  {size} {profile} x{threads}: {:.2} ms{of}",
                    r.total_ms_median
                );
            }
            runs.push(r);
        }
    }
    let results: Vec<BenchResult> = runs.into_iter().map(merge_rounds).collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    if a.bit_exact {
        println!("bilateral denoise: bit-exact (--bit-exact)");
    }
    if let Some(c) = &a.config {
        println!("configuration: {}", c.display());
    }
    if let Some(r) = results.iter().find(|r| r.profile == "default") {
        println!("default profile's demosaic: {}", r.demosaic);
    }
    if let Some(s) = &a.stages {
        println!("stages: {s}");
    }
    if a.rounds > 1 {
        println!(
            "{} interleaved rounds of {} timed runs each: medians of the rounds' medians",
            a.rounds, a.iters
        );
    }
    println!(
        "{:<10} {:<9} {:>3} {:>10} {:>8} {:>8}  stages (median ms)",
        "size", "profile", "thr", "total ms", "MP/s", "RSS MB"
    );
    for r in &results {
        let stages: Vec<String> = r
            .stages_ms
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        println!(
            "{:<10} {:<9} {:>3} {:>10.2} {:>8.1} {:>8.1}  {}",
            r.size,
            r.profile,
            r.threads,
            r.total_ms_median,
            r.mp_per_s,
            r.peak_rss_mb,
            stages.join(", ")
        );
    }
    for line in scaling_lines(&results) {
        println!("{line}");
    }
    Ok(())
}

/// Thread scaling, one line per size and profile measured with 1 thread and more: the
/// 1-thread time over each other count's, as the median of the per-round ratios when
/// there were rounds (each round's runs are seconds apart, not minutes).
fn scaling_lines(results: &[BenchResult]) -> Vec<String> {
    let mut lines = Vec::new();
    for one in results.iter().filter(|r| r.threads == 1) {
        let same = |r: &&BenchResult| r.size == one.size && r.profile == one.profile;
        for many in results.iter().filter(same).filter(|r| r.threads > 1) {
            let mut ratios: Vec<f64> = if one.round_totals_ms.len() == many.round_totals_ms.len()
                && !one.round_totals_ms.is_empty()
            {
                one.round_totals_ms
                    .iter()
                    .zip(&many.round_totals_ms)
                    .map(|(a, b)| a / b)
                    .collect()
            } else {
                vec![one.total_ms_median / many.total_ms_median]
            };
            let each = if ratios.len() > 1 {
                let v: Vec<String> = ratios.iter().map(|x| format!("{x:.2}")).collect();
                format!(" (rounds: {})", v.join(" / "))
            } else {
                String::new()
            };
            lines.push(format!(
                "thread scaling {} {} 1 -> {} threads: {:.2}x{each}",
                one.size,
                one.profile,
                many.threads,
                median(&mut ratios)
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {

    /// The peak can be started afresh, so that buffers freed before the timed runs do
    /// not count in `peak_rss_mb`.
    #[test]
    fn peak_rss_resets_after_a_freed_buffer() {
        let big = vec![1u8; 192 << 20];
        std::hint::black_box(&big);
        drop(big);
        let before = peak_rss_mb();
        assert!(before >= 192.0, "peak {before} MiB after touching 192 MiB");
        if !reset_peak_rss() {
            eprintln!("SKIPPED: this kernel does not let the peak RSS be reset");
            return;
        }
        let after = peak_rss_mb();
        assert!(
            after < before - 96.0,
            "peak {before} -> {after} MiB after the reset"
        );
    }

    use super::*;

    #[test]
    fn parses_sizes_and_threads() {
        assert_eq!(parse_size("640x480").unwrap(), (640, 480));
        assert!(parse_size("640").is_err());
        assert!(parse_size("0x10").is_err());
        assert!(parse_threads("all").unwrap() >= 1);
        assert_eq!(parse_threads("2").unwrap(), 2);
        assert!(parse_threads("0").is_err());
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    fn result(total: f64, demosaic: f64, rss: f64) -> BenchResult {
        BenchResult {
            size: "1000x1000".into(),
            profile: "default".into(),
            threads: 2,
            total_ms_median: total,
            mp_per_s: 1.0 / (total / 1e3),
            peak_rss_mb: rss,
            stages_ms: [("demosaic".to_string(), demosaic)].into_iter().collect(),
            iters: 5,
            rounds: 1,
            round_totals_ms: Vec::new(),
            bit_exact: false,
            demosaic: "rcd".into(),
            stages: None,
            config: None,
        }
    }

    #[test]
    fn thread_scaling_is_the_median_of_per_round_ratios() {
        let mut one = merge_rounds(vec![
            result(100.0, 1.0, 1.0),
            result(200.0, 1.0, 1.0),
            result(90.0, 1.0, 1.0),
        ]);
        one.threads = 1;
        // Per round 2.0, 1.9, 1.8: median 1.9, where the ratio of the medians (100 / 50)
        // would say 2.0.
        let two = merge_rounds(vec![
            result(50.0, 1.0, 1.0),
            result(200.0 / 1.9, 1.0, 1.0),
            result(50.0, 1.0, 1.0),
        ]);
        let lines = scaling_lines(&[one.clone(), two]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("thread scaling 1000x1000 default 1 -> 2 threads: 1.90x (rounds: 2.00 / 1.90 / 1.80)"),
            "{lines:?}"
        );
        let other = BenchResult {
            profile: "reference".into(),
            ..result(10.0, 1.0, 1.0)
        };
        assert!(scaling_lines(&[one, other]).is_empty(), "another profile");
    }

    #[test]
    fn rounds_merge_into_medians() {
        let one = merge_rounds(vec![result(10.0, 6.0, 50.0)]);
        assert_eq!((one.total_ms_median, one.rounds), (10.0, 1));
        assert!(one.round_totals_ms.is_empty());
        let r = merge_rounds(vec![
            result(10.0, 6.0, 50.0),
            result(30.0, 20.0, 70.0),
            result(20.0, 9.0, 60.0),
        ]);
        assert_eq!(r.total_ms_median, 20.0);
        assert_eq!(r.stages_ms["demosaic"], 9.0);
        assert_eq!(r.peak_rss_mb, 70.0);
        assert_eq!(r.rounds, 3);
        assert_eq!(r.round_totals_ms, vec![10.0, 30.0, 20.0]);
        assert!((r.mp_per_s - 50.0).abs() < 1e-9, "{}", r.mp_per_s);
    }
}
