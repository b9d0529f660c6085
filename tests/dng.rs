//! DNG output and input, checked by independent readers: LibRaw (`raw-identify`,
//! `dcraw_emu`, Debian `libraw-bin`), `exiftool` (Debian `libimage-exiftool-perl`) and
//! `rawpy` (PyPI), all installed by `.ci/run`.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const PATTERNS: [&str; 4] = ["rggb", "bggr", "grbg", "gbrg"];
const TS: u64 = 1_795_639_406_250_000_000; // 2026-11-25 20:43:26.250 UTC

/// Samples of `bits` bits, distinct per file, as little-endian bytes.
fn samples(w: usize, h: usize, bits: u8, salt: u64) -> Vec<u8> {
    let max = (1u64 << bits) - 1;
    (0..(w * h) as u64)
        .flat_map(|i| (((i * 2_654_435_761 + salt * 97) % (max + 1)) as u16).to_le_bytes())
        .collect()
}

fn run(cmd: &mut Command) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (installed by .ci/run)"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `rawlink convert` of `samples` to a DNG; returns (raw path, dng path).
fn convert(dir: &Path, pattern: &str, bits: u8, w: usize, h: usize) -> (PathBuf, PathBuf) {
    let raw = dir.join(format!("{pattern}{bits}.raw"));
    let dng = dir.join(format!("{pattern}{bits}.dng"));
    std::fs::write(
        &raw,
        samples(w, h, bits, bits as u64 + pattern.len() as u64),
    )
    .unwrap();
    let black = (64u32 << bits) >> 12;
    run(bin().args(["convert"]).arg(&raw).arg("-o").arg(&dng).args([
        "--width",
        &w.to_string(),
        "--height",
        &h.to_string(),
        "--pattern",
        pattern,
        "--bits",
        &bits.to_string(),
        "--black-level",
        &black.to_string(),
        "--exposure-us",
        "8000",
        "--gain",
        "2.5",
        "--wb-gains",
        "2,1,1.5",
        "--timestamp-ns",
        &TS.to_string(),
    ]));
    (raw, dng)
}

#[test]
fn converted_dngs_read_back_exactly_in_rawpy_libraw_and_exiftool() {
    let d = tempfile::tempdir().unwrap();
    let (w, h) = (64usize, 48usize);
    let mut files = Vec::new();
    for p in PATTERNS {
        for bits in [10u8, 12, 16] {
            let (raw, dng) = convert(d.path(), p, bits, w, h);
            files.push((p, bits, raw, dng));
        }
    }
    // rawpy (LibRaw's Python binding): raw_image equals our payload exactly; the
    // pattern, levels and white balance are as written.
    let script = r#"
import sys, json, rawpy, numpy as np
out = []
for p, bits, raw, dng, w, h in json.loads(sys.argv[1]):
    r = rawpy.imread(dng)
    a = np.fromfile(raw, dtype='<u2').reshape(h, w)
    desc = r.color_desc.decode()
    pat = ''.join(desc[i] for i in r.raw_pattern.flatten()).lower().replace('g', 'g')
    out.append(dict(file=dng, equal=bool((r.raw_image == a).all()), shape=list(r.raw_image.shape),
                    pattern=pat, black=r.black_level_per_channel, white=int(r.white_level),
                    wb=[round(x, 3) for x in r.camera_whitebalance[:3]]))
print(json.dumps(out))
"#;
    let args: Vec<serde_json::Value> = files
        .iter()
        .map(|(p, bits, raw, dng)| serde_json::json!([p, bits, raw, dng, w, h]))
        .collect();
    let out = run(Command::new("python3").args([
        "-c",
        script,
        &serde_json::Value::from(args).to_string(),
    ]));
    let results: Vec<serde_json::Value> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(results.len(), 12);
    for ((p, bits, _, _), r) in files.iter().zip(&results) {
        assert_eq!(r["equal"], true, "{p}{bits}: raw_image differs: {r}");
        assert_eq!(r["shape"], serde_json::json!([h, w]), "{r}");
        assert_eq!(r["pattern"].as_str().unwrap(), *p, "{r}");
        let black = (64u64 << bits) >> 12;
        assert_eq!(
            r["black"],
            serde_json::json!([black, black, black, black]),
            "{r}"
        );
        assert_eq!(r["white"], (1u64 << bits) - 1, "{r}");
        assert_eq!(r["wb"], serde_json::json!([2.0, 1.0, 1.5]), "{r}");
    }
    for (p, bits, _, dng) in &files {
        // LibRaw's own tool: size, CFA and black level.
        let id = run(Command::new("raw-identify").arg("-v").arg(dng));
        let size = id
            .lines()
            .find(|l| l.starts_with("Full size:"))
            .unwrap_or_default();
        assert_eq!(
            size.split_whitespace().collect::<Vec<_>>(),
            ["Full", "size:", &w.to_string(), "x", &h.to_string()],
            "{id}"
        );
        let pat4 = p.to_uppercase();
        assert!(
            id.contains(&format!("Filter pattern: {pat4}{pat4}")),
            "{p}: {id}"
        );
        assert!(
            id.contains(&format!("black: {}", (64u64 << bits) >> 12)),
            "{id}"
        );
        assert!(
            id.contains("ISO speed: 250") && id.contains("Shutter: 1/125.0"),
            "{id}"
        );
        // exiftool: tags as written.
        let j = run(Command::new("exiftool")
            .args([
                "-j",
                "-n",
                "-CFAPattern",
                "-BlackLevel",
                "-WhiteLevel",
                "-DateTimeOriginal",
                "-SubSecTimeOriginal",
                "-ExposureTime",
                "-ISO",
                "-DNGVersion",
                "-ImageWidth",
                "-ImageHeight",
            ])
            .arg(dng));
        let e: serde_json::Value = serde_json::from_str(&j).unwrap();
        let e = &e[0];
        assert_eq!(e["ImageWidth"], w, "{e}");
        assert_eq!(e["ImageHeight"], h, "{e}");
        assert_eq!(e["WhiteLevel"], (1u64 << bits) - 1, "{e}");
        assert_eq!(e["DateTimeOriginal"], "2026:11:25 20:43:26", "{e}");
        assert_eq!(e["SubSecTimeOriginal"], 250, "{e}");
        assert_eq!(e["ExposureTime"], 0.008, "{e}");
        assert_eq!(e["ISO"], 250, "{e}");
        assert_eq!(e["DNGVersion"], "1 4 0 0", "{e}");
        let cfa = match *p {
            "rggb" => "2 2 0 1 1 2",
            "bggr" => "2 2 2 1 1 0",
            "grbg" => "2 2 1 0 2 1",
            _ => "2 2 1 2 0 1",
        };
        assert_eq!(e["CFAPattern"], cfa, "{e}");
    }
    // dcraw_emu renders one of each pattern without error.
    for (_, bits, _, dng) in files.iter().filter(|f| f.1 == 12) {
        run(Command::new("dcraw_emu").arg("-T").arg(dng));
        let tiff = PathBuf::from(format!("{}.tiff", dng.display()));
        assert!(
            std::fs::metadata(&tiff).unwrap().len() > (w * h * 3) as u64,
            "{bits}"
        );
    }
}

#[test]
fn dng_round_trips_through_convert_and_drives_the_isp() {
    let d = tempfile::tempdir().unwrap();
    // The reference frame, through DNG and back: byte-identical.
    let (raw, dng) = convert(d.path(), "rggb", 12, W, H);
    let back = d.path().join("back.raw");
    run(bin().arg("convert").arg(&dng).arg("-o").arg(&back));
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&raw).unwrap());
    // `rawlink isp` reads geometry, pattern and levels from the DNG: the reference
    // profile gives exactly the PNG it gives for the .raw with the same settings.
    let from_raw = d.path().join("raw.png");
    let from_dng = d.path().join("dng.png");
    run(bin()
        .arg("isp")
        .arg(&raw)
        .arg("-o")
        .arg(&from_raw)
        .args(["--profile", "reference"]));
    let log = bin()
        .arg("isp")
        .arg(&dng)
        .arg("-o")
        .arg(&from_dng)
        .args([
            "--profile",
            "reference",
            "--wb",
            "grayworld",
            "--width",
            "8",
            "--height",
            "8",
        ])
        .output()
        .unwrap();
    assert!(
        log.status.success(),
        "{}",
        String::from_utf8_lossy(&log.stderr)
    );
    assert_eq!(read_png(&from_raw).3, read_png(&from_dng).3);
    // In the default profile the file's white balance and colour matrix are used.
    let out = bin()
        .arg("isp")
        .arg(&dng)
        .arg("-o")
        .arg(d.path().join("default.png"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("DNG 640x480 rggb 12-bit, black 64 white 4095")
            && stderr.contains("AsShotNeutral [0.5, 1.0, 0.666667]")
            && stderr.contains("ColorMatrix1 used"),
        "{stderr}"
    );
    // A config file overrides only what it sets: one that sets nothing the file carries
    // leaves the file's levels, white balance and matrix in force (the same PNG); one
    // that sets the white level or the matrix wins over the file's.
    let with_config = |name: &str, toml: &str| {
        let cfg = d.path().join(format!("{name}.toml"));
        std::fs::write(&cfg, toml).unwrap();
        let png = d.path().join(format!("{name}.png"));
        let out = bin()
            .arg("isp")
            .arg(&dng)
            .arg("-o")
            .arg(&png)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        (read_png(&png).3, stderr)
    };
    let default_png = read_png(&d.path().join("default.png")).3;
    let (png, log) = with_config("plain", "profile = \"default\"\n");
    assert!(
        png == default_png && log.contains("ColorMatrix1 used"),
        "{log}"
    );
    let (png, _) = with_config("white", "[blc]\nwhite = 2000\n");
    assert!(png != default_png, "the config's white level was ignored");
    let (png, log) = with_config(
        "ccm",
        "[ccm]\nmatrix = [[1.2, -0.1, -0.1], [-0.1, 1.2, -0.1], [-0.1, -0.1, 1.2]]\n",
    );
    assert!(png != default_png, "the config's matrix was ignored");
    assert!(
        log.contains("ignored (the config sets ccm.matrix)"),
        "{log}"
    );
    // Bad input is a one-line error.
    std::fs::write(d.path().join("bad.dng"), b"II*\0\x08\0\0\0\xff\xff").unwrap();
    let bad = bin()
        .arg("isp")
        .arg(d.path().join("bad.dng"))
        .arg("-o")
        .arg(d.path().join("x.png"))
        .output()
        .unwrap();
    let last = String::from_utf8_lossy(&bad.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        !bad.status.success() && last.contains("corrupt DNG"),
        "{last}"
    );
}

#[test]
fn receiver_saves_dng_beside_raw_and_png() {
    let server = Server::start(&[
        "--source",
        "sim",
        "--interval-ms",
        "20",
        "--frames",
        "3",
        "--wait-clients",
        "1",
    ]);
    let d = tempfile::tempdir().unwrap();
    let o = finish(
        spawn_receive(&[
            "--connect",
            &server.addr.to_string(),
            "--out",
            d.path().to_str().unwrap(),
            "--save",
            "dng,png",
            "--png-depth",
            "16",
            "--quiet",
        ]),
        std::time::Duration::from_secs(60),
    );
    let _ = server.wait(std::time::Duration::from_secs(60));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let script = r#"
import sys, rawpy, numpy as np
for n in (1, 2, 3):
    r = rawpy.imread(f"{sys.argv[1]}/frame_{n:06d}.dng")
    i = np.arange(480).reshape(-1, 1); j = np.arange(640).reshape(1, -1)
    want = (((i + j + n * 10) * 16) % 4096).astype(np.uint16)
    assert (r.raw_image == want).all(), n
    assert r.black_level_per_channel == [64] * 4, r.black_level_per_channel
print("ok")
"#;
    assert_eq!(
        run(Command::new("python3").args(["-c", script, d.path().to_str().unwrap()])).trim(),
        "ok"
    );
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("frame_000002.json")).unwrap())
            .unwrap();
    assert_eq!(j["files"]["dng"], "frame_000002.dng");
    assert!(j["files"].get("raw").is_none());
    assert!(!d.path().join("frame_000002.raw").exists());
    // 16-bit PNG, with the frame's metadata in text chunks.
    let (pw, ph, _, px) = read_png(&d.path().join("frame_000003.png"));
    assert_eq!((pw, ph, px.len()), (W as u32, H as u32, W * H * 6));
    let dec = png::Decoder::new(std::fs::File::open(d.path().join("frame_000003.png")).unwrap());
    let r = dec.read_info().unwrap();
    let text: std::collections::HashMap<String, String> = r
        .info()
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    assert_eq!(
        text.get("rawlink.seq").map(String::as_str),
        Some("3"),
        "{text:?}"
    );
    assert_eq!(
        text.get("rawlink.exposure_us").map(String::as_str),
        Some("10000")
    );
    assert!(text
        .get("rawlink.timestamp_ns")
        .is_some_and(|t| t.parse::<u64>().unwrap() > 0));
    assert!(text.contains_key("rawlink.analog_gain") && text.contains_key("Software"));
}

/// A DNG's Orientation, set by exiftool (an independent writer), turns `rawlink isp`'s
/// output as LibRaw turns its own: the same output size as `raw-identify` reports, and
/// exactly the as-stored picture turned.
#[test]
fn dng_orientation_turns_the_isp_output_as_libraw_does() {
    let d = tempfile::tempdir().unwrap();
    let (w, h) = (64usize, 48usize);
    let (_, dng) = convert(d.path(), "rggb", 12, w, h);
    let isp = |input: &Path, name: &str| {
        let png = d.path().join(name);
        run(bin()
            .arg("isp")
            .arg(input)
            .arg("-o")
            .arg(&png)
            .args(["--profile", "reference"]));
        read_png(&png)
    };
    let (pw, ph, _, stored) = isp(&dng, "stored.png");
    assert_eq!((pw, ph), (w as u32, h as u32));
    let px = |x: usize, y: usize| &stored[3 * (y * w + x)..3 * (y * w + x) + 3];
    // Where a displayed pixel (x, y) was stored, by what each value means in EXIF.
    type Src = fn(usize, usize, usize, usize) -> (usize, usize);
    let cases: [(u16, Src); 4] = [
        (3, |x, y, w, h| (w - 1 - x, h - 1 - y)), // turned 180°
        (6, |x, y, _, h| (y, h - 1 - x)),         // turned 90° clockwise
        (8, |x, y, w, _| (w - 1 - y, x)),         // turned 90° anticlockwise
        (2, |x, y, w, _| (w - 1 - x, y)),         // mirrored
    ];
    for (o, src) in cases {
        let f = d.path().join(format!("o{o}.dng"));
        std::fs::copy(&dng, &f).unwrap();
        run(Command::new("exiftool")
            .args(["-n", &format!("-Orientation={o}"), "-overwrite_original"])
            .arg(&f));
        let id = run(Command::new("raw-identify").arg("-v").arg(&f));
        let out_size = id
            .lines()
            .find(|l| l.starts_with("Output size:"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|t| t.parse::<u32>().ok())
            .collect::<Vec<_>>();
        let (ow, oh, _, turned) = isp(&f, &format!("o{o}.png"));
        assert_eq!(out_size, [ow, oh], "orientation {o}: {id}");
        let want: Vec<u8> = (0..oh as usize)
            .flat_map(|y| (0..ow as usize).map(move |x| (x, y)))
            .flat_map(|(x, y)| {
                let (sx, sy) = src(x, y, w, h);
                px(sx, sy).to_vec()
            })
            .collect();
        assert!(turned == want, "orientation {o}");
    }
    // `convert` to .raw keeps the stored samples and says the orientation is lost.
    let f = d.path().join("o6.dng");
    let said = run(bin()
        .arg("convert")
        .arg(&f)
        .arg("-o")
        .arg(d.path().join("o6.raw")));
    assert!(said.contains("Orientation 6 is lost"), "{said}");
}

/// A DNG's white balance and colour matrix are input, not settings: values the ISP
/// cannot use (an absurd AsShotNeutral, a matrix that inverts to entries beyond ±64)
/// are reported with the file's name and ignored, and the image is still processed.
#[test]
fn unusable_dng_colour_metadata_is_ignored_with_a_warning() {
    let d = tempfile::tempdir().unwrap();
    let (w, h) = (64usize, 48usize);
    // Nearly equal camera rows: the matrix inverts to huge entries.
    let cm = [[1.0, 0.0, 0.0], [1.0, 1e-4, 0.0], [0.0, 0.0, 1.0]];
    let ccm = rawlink_dng::ccm_from_color_matrix(&cm).expect("invertible");
    assert!(ccm.iter().flatten().any(|v| v.abs() > 64.0), "{ccm:?}");
    let meta = rawlink_dng::DngMeta {
        width: w as u32,
        height: h as u32,
        pattern: rawlink_frame::BayerPattern::Rggb,
        bits: 12,
        black_level: 64,
        white_level: 4095,
        as_shot_neutral: [1e-6, 1.0, 1e6],
        color_matrix: Some(cm),
        timestamp_ns: 0,
        exposure_us: 0,
        analog_gain: 1.0,
        model: "test".into(),
        description: String::new(),
        orientation: 1,
    };
    let samples: Vec<u16> = samples(w, h, 12, 3)
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let dng = d.path().join("odd.dng");
    std::fs::write(&dng, rawlink_dng::write_dng(&meta, &samples).unwrap()).unwrap();
    let png = d.path().join("odd.png");
    let out = bin()
        .arg("isp")
        .arg(&dng)
        .arg("-o")
        .arg(&png)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(read_png(&png).0, w as u32);
    // Warnings, not info lines: they show at the quietest useful level too.
    let warn = bin()
        .arg("isp")
        .arg(&dng)
        .arg("-o")
        .arg(d.path().join("again.png"))
        .args(["--log", "warn"])
        .output()
        .unwrap();
    let warned = String::from_utf8_lossy(&warn.stderr);
    assert!(
        warned.contains("odd.dng: its ColorMatrix1 is ignored (its camera-to-sRGB matrix has entries beyond ±64)")
            && warned.contains("odd.dng: AsShotNeutral"),
        "{warned}"
    );
    assert!(
        stderr.contains("odd.dng: AsShotNeutral [1e-6, 1.0, ")
            && stderr.contains("] ignored (bad ISP parameter: white-balance gains")
            && stderr.contains("white balance from the image")
            && stderr.contains(
                "ColorMatrix1 ignored (its camera-to-sRGB matrix has entries beyond ±64)"
            ),
        "{stderr}"
    );
}

/// A DNG saved without a PNG carries the same white balance (AsShotNeutral) as one saved
/// with it: the ISP's gains are worked out even when no image is made. Before, it was
/// 1 1 1, and every raw converter showed the frame green.
#[test]
fn a_dng_saved_without_a_png_still_carries_the_white_balance() {
    let server = Server::start(&[
        "--source",
        "sim:scene",
        "--width",
        "320",
        "--height",
        "240",
        "--frames",
        "1",
        "--wait-clients",
        "2",
    ]);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with_png = receive_into(&server, a.path(), &["--save", "dng,png"]);
    let without = receive_into(&server, b.path(), &["--save", "raw,dng"]);
    for r in [with_png, without] {
        let o = finish(r, std::time::Duration::from_secs(60));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let _ = server.wait(std::time::Duration::from_secs(60));
    let neutral = |d: &Path| {
        let bytes = std::fs::read(d.join("frame_000001.dng")).unwrap();
        rawlink_dng::read_dng(&bytes).unwrap().meta.as_shot_neutral
    };
    let (x, y) = (neutral(a.path()), neutral(b.path()));
    // Capture to PNG only where a PNG was written.
    let json = |d: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(d.join("frame_000001.json")).unwrap()).unwrap()
    };
    assert!(json(a.path())["capture_to_png_ms"].is_f64());
    assert!(json(b.path())["capture_to_png_ms"].is_null());
    assert!(x.iter().any(|&v| (v - 1.0).abs() > 0.05), "{x:?}");
    for i in 0..3 {
        assert!((x[i] - y[i]).abs() < 1e-6, "{x:?} vs {y:?}");
    }
}

/// `--wb metadata` on a DNG uses its AsShotNeutral (as no `--wb` does), not the image's
/// own estimate; on headerless samples, which carry none, it says so.
#[test]
fn wb_metadata_uses_the_dngs_neutral() {
    let d = tempfile::tempdir().unwrap();
    let (w, h) = (64usize, 48usize);
    let raw = d.path().join("s.raw");
    std::fs::write(&raw, samples(w, h, 12, 7)).unwrap();
    let dng = d.path().join("s.dng");
    run(bin().arg("convert").arg(&raw).arg("-o").arg(&dng).args([
        "--width",
        "64",
        "--height",
        "48",
        "--wb-gains",
        "2,1,1.5",
    ]));
    let isp = |name: &str, extra: &[&str]| {
        let out = d.path().join(name);
        let o = bin()
            .arg("isp")
            .arg(&dng)
            .arg("-o")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        read_png(&out).3
    };
    let plain = isp("plain.png", &[]);
    assert!(isp("meta.png", &["--wb", "metadata"]) == plain);
    assert!(isp("robust.png", &["--wb", "robust"]) != plain);
    let o = bin()
        .arg("isp")
        .arg(&raw)
        .arg("-o")
        .arg(d.path().join("r.png"))
        .args(["--width", "64", "--height", "48", "--wb", "metadata"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("headerless samples carry no white balance"),
        "{err}"
    );
}

/// A DNG's own metadata describe its samples; geometry flags set to something else are
/// named as ignored (they used to be dropped without a word), and the image is the same
/// as without them.
#[test]
fn geometry_flags_that_contradict_a_dng_are_named_as_ignored() {
    let d = tempfile::tempdir().unwrap();
    let (_, dng) = convert(d.path(), "bggr", 12, 33, 17);
    let (a, b) = (d.path().join("a.png"), d.path().join("b.png"));
    let o = bin()
        .arg("isp")
        .arg(&dng)
        .arg("-o")
        .arg(&a)
        .args(["--pattern", "grbg", "--bits", "10", "--width", "5"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(
            "--pattern grbg, --bits 10, --width 5 ignored: the DNG says 33x17 bggr 12-bit"
        ),
        "{err}"
    );
    run(bin().arg("isp").arg(&dng).arg("-o").arg(&b));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // Flags that agree with the file, or are left at their defaults, say nothing.
    let o = bin()
        .arg("isp")
        .arg(&dng)
        .arg("-o")
        .arg(d.path().join("c.png"))
        .args(["--pattern", "bggr"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&o.stderr).contains("ignored"));
}
