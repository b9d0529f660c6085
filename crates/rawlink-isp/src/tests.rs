use super::*;
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

/// Reads the oracle's full-depth output: P6, maxval 4095, big-endian u16 samples.
fn read_ppm16(path: &std::path::Path) -> (usize, usize, Vec<u16>) {
    let bytes = std::fs::read(path).unwrap();
    let mut fields = Vec::new();
    let mut pos = 0;
    while fields.len() < 4 {
        while bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        let start = pos;
        while !bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        fields.push(std::str::from_utf8(&bytes[start..pos]).unwrap().to_string());
    }
    pos += 1;
    assert_eq!(fields[0], "P6");
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let body = &bytes[pos..];
    assert_eq!(body.len(), w * h * 6);
    let v = body
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    (w, h, v)
}

fn run_reference(name: &str, w: usize, h: usize, exact: bool) -> RgbImage {
    let bytes = std::fs::read(data_dir().join(format!("{name}.raw"))).unwrap();
    let raw = RawPlane::from_le_bytes(w, h, &bytes).unwrap();
    let mut cfg = IspConfig::new(Profile::Reference, BayerPattern::Rggb, 12);
    cfg.denoise.exact = exact;
    Pipeline::new(&cfg).unwrap().run(raw).image
}

/// The golden files the oracle wrote at full depth.
const GOLDEN: [&str; 3] = [
    "astronaut_256x192_rggb12",
    "coffee_256x192_rggb12",
    "noise_7x5",
];

/// The reference profile's 12-bit output on golden file `name` against the oracle's:
/// the largest difference, the samples that differ, and all samples.
fn diff_to_oracle(name: &str, exact: bool) -> (i32, usize, usize) {
    let (w, h, want) = read_ppm16(&data_dir().join(format!("{name}.ref.ppm")));
    let img = run_reference(name, w, h, exact);
    let mut max_diff = 0i32;
    let mut n_diff = 0usize;
    for j in 0..w * h {
        for c in 0..3 {
            let d = (img.planes[c][j] as i32 - want[j * 3 + c] as i32).abs();
            max_diff = max_diff.max(d);
            n_diff += (d != 0) as usize;
        }
    }
    (max_diff, n_diff, 3 * w * h)
}

/// Golden test on real photographs (scikit-image's astronaut and coffee crops), with
/// the bit-exact bilateral. Tolerance: exact (0 LSB) on the 12-bit output before the
/// 8-bit conversion.
#[test]
fn reference_profile_is_bit_exact_on_photos() {
    for name in GOLDEN {
        let (max_diff, n_diff, _) = diff_to_oracle(name, true);
        assert_eq!(
            (max_diff, n_diff),
            (0, 0),
            "{name}: max diff {max_diff}, {n_diff} samples differ"
        );
    }
}

/// The same photographs with the default (fast) bilateral, whose quotients may
/// truncate one code away from the reference's. Tolerance on the 12-bit output: the
/// sharpen after it (5·centre − 4 neighbours) can turn ±1 into at most ±9, and each
/// moved quotient moves up to five outputs. Measured: at most 6 codes, under 5 % of the
/// samples (astronaut); under 8 % is the bar. The 8-bit output stays within ±1
/// (`reference_profile_png_matches_within_one`).
#[test]
fn reference_profile_fast_bilateral_is_within_tolerance_on_photos() {
    for name in GOLDEN {
        let (max_diff, n_diff, total) = diff_to_oracle(name, false);
        println!("{name}: max diff {max_diff}, {n_diff} of {total} samples differ");
        assert!(max_diff <= 9, "{name}: max diff {max_diff}");
        // The 7×5 noise patch is all edges: a third of it moves; no bar on the share.
        if !name.starts_with("noise") {
            assert!(n_diff * 100 <= 8 * total, "{name}: {n_diff} samples differ");
        }
    }
}

/// Below 12 bits the reference profile's bilateral takes the exact path whatever the
/// configuration says (one code there can become two 8-bit codes after the sharpen);
/// at 12 bits the configuration chooses, and the two paths differ on a photograph.
#[test]
fn reference_profile_is_exact_below_twelve_bits() {
    let bytes = std::fs::read(data_dir().join("astronaut_256x192_rggb12.raw")).unwrap();
    let raw = RawPlane::from_le_bytes(256, 192, &bytes).unwrap();
    let run = |bits: u8, exact: bool| {
        let mut plane = raw.clone();
        let shift = 12 - bits as u32;
        plane.data.iter_mut().for_each(|v| *v >>= shift);
        let mut cfg = IspConfig::new(Profile::Reference, BayerPattern::Rggb, bits);
        cfg.denoise.exact = exact;
        Pipeline::new(&cfg).unwrap().run(plane).image
    };
    for bits in [8, 10, 11] {
        assert!(
            run(bits, false) == run(bits, true),
            "{bits}-bit: the paths differ"
        );
    }
    assert!(
        run(12, false) != run(12, true),
        "12-bit: the fast path was not taken"
    );
}

#[test]
fn reference_profile_png_matches_within_one() {
    for (name, w, h) in [
        ("astronaut_256x192_rggb12", 256, 192),
        ("sim_640x480_n1", 640, 480),
    ] {
        let img = run_reference(name, w, h, false);
        let got = img.to_rgb8(4095);
        let dec = png::Decoder::new(
            std::fs::File::open(data_dir().join(format!("{name}.ref.png"))).unwrap(),
        );
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width as usize, info.height as usize), (w, h));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let max = got
            .iter()
            .zip(&buf[..info.buffer_size()])
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(max <= 1, "{name}: max 8-bit difference {max}");
    }
}

#[test]
fn size_mismatch_is_an_error() {
    let err = RawPlane::from_le_bytes(4, 4, &[0u8; 31]).unwrap_err();
    assert!(matches!(
        err,
        IspError::SizeMismatch {
            actual: 31,
            expected: 32,
            ..
        }
    ));
    assert!(RawPlane::from_le_bytes(0, 4, &[]).is_err());
}

#[test]
fn every_pattern_and_depth_gives_neutral_grey_on_a_flat_field() {
    for p in BayerPattern::ALL {
        for bits in [8u8, 10, 12, 14, 16] {
            let max = ((1u32 << bits) - 1) as u16;
            let (w, h) = (128, 96);
            // Grey scene with channel imbalance R:G:B = 1:2:1.5, AWB must neutralise it.
            let g = max / 3;
            let data = (0..h)
                .flat_map(|y| {
                    (0..w).map(move |x| match p.channel_at(y, x) {
                        rawlink_frame::Channel::R => g / 2,
                        rawlink_frame::Channel::G => g,
                        rawlink_frame::Channel::B => g * 3 / 4,
                    })
                })
                .collect();
            let mut cfg = IspConfig::new(Profile::Reference, p, bits);
            cfg.set_black_level(0);
            let out = Pipeline::new(&cfg)
                .unwrap()
                .run(RawPlane::new(w, h, data).unwrap());
            let centre = (h / 2) * w + w / 2;
            let px = [0, 1, 2].map(|c| out.image.planes[c][centre] as i32);
            assert!(
                (px[0] - px[1]).abs() <= (max as i32 / 50).max(2)
                    && (px[2] - px[1]).abs() <= (max as i32 / 50).max(2),
                "{p} {bits}-bit: {px:?}"
            );
            assert!(
                out.stats.wb_gains[0] > 1.9 && out.stats.wb_gains[0] < 2.1,
                "{:?}",
                out.stats
            );
        }
    }
}

/// `Pipeline::wb_gains` (the gains alone, for a DNG saved without a PNG) equals what a
/// full run applies, in both profiles, with and without a white balance.
#[test]
fn wb_gains_alone_equal_the_full_runs() {
    let (w, h) = (64, 48);
    let data: Vec<u16> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (300 + (x * 37 + y * 11) % 2000 + (x % 2) * 700) as u16))
        .collect();
    for (profile, stages) in [
        (Profile::Default, None),
        (Profile::Reference, None),
        (Profile::Default, Some("blc,demosaic")),
    ] {
        let mut cfg = IspConfig::new(profile, BayerPattern::Rggb, 12);
        cfg.set_black_level(64);
        if let Some(s) = stages {
            cfg.stages = Some(crate::parse_stage_list(s).unwrap());
        }
        let p = Pipeline::new(&cfg).unwrap();
        let plane = || RawPlane::new(w, h, data.clone()).unwrap();
        let full = p.run(plane()).stats.wb_gains;
        let alone = p.wb_gains(plane(), FrameMeta::default());
        if stages.is_none() {
            assert_eq!(alone, Some(full), "{profile}");
            assert!(full.iter().any(|&g| (g - 1.0).abs() > 0.05), "{full:?}");
        } else {
            assert_eq!(alone, None);
        }
    }
}

/// The table-driven 8-bit conversion equals the per-sample division for every code.
#[test]
fn rgb8_table_equals_the_division() {
    for max in [255u16, 1023, 4095, 65535] {
        let n = max as usize + 1;
        let w = 97;
        let h = n.div_ceil(w);
        let mut img = RgbImage::new(w, h);
        for (i, v) in img.planes[0].iter_mut().enumerate() {
            *v = (i % n) as u16;
        }
        for (i, v) in img.planes[1].iter_mut().enumerate() {
            *v = ((i * 7) % n) as u16;
        }
        let (trunc, round) = (img.to_rgb8(max), img.to_rgb8_rounded(max));
        let m = max as u32;
        for (i, px) in trunc.chunks_exact(3).enumerate() {
            for (c, &got) in px.iter().enumerate() {
                let v = img.planes[c][i] as u32;
                assert_eq!(got, (v * 255 / m) as u8, "max {max} code {v}");
                assert_eq!(round[3 * i + c], ((v * 255 + m / 2) / m) as u8);
            }
        }
    }
}

/// Recycled planes come back from `for_overwrite` (same buffers, right size); debug
/// builds hand them out filled with 0xFFFF so a producer that skips a sample is caught.
/// The pool is the process's, shared with tests running at the same time (the
/// reference sharpen recycles its input's planes), so a round may find its planes
/// taken or pushed out by another test; some round of a few must get its own back.
/// The size is one no other test asks `for_overwrite` for (RCD needs 8×8 at least),
/// and `for_overwrite` takes the smallest spare that fits.
#[test]
fn recycled_planes_are_reused_by_for_overwrite() {
    let reused = (0..50).any(|_| {
        let mut img = RgbImage::new(3, 2);
        img.planes[1][4] = 7;
        let ptrs: Vec<*const u16> = img.planes.iter().map(|p| p.as_ptr()).collect();
        img.recycle();
        let again = RgbImage::for_overwrite(2, 3);
        assert_eq!((again.width, again.height), (2, 3));
        for p in &again.planes {
            assert_eq!(p.len(), 6);
            if cfg!(debug_assertions) && ptrs.contains(&p.as_ptr()) {
                assert!(p.iter().all(|&v| v == u16::MAX));
            }
        }
        again.planes.iter().all(|p| ptrs.contains(&p.as_ptr()))
    });
    assert!(reused, "recycled buffers were never reused");
}

/// Interleaving into a reused buffer gives the same bytes as a fresh one, whatever the
/// buffer held before.
#[test]
fn rgb8_into_a_reused_buffer_equals_a_fresh_one() {
    let raw = RawPlane::new(
        64,
        48,
        (0..64 * 48).map(|i| (i * 37 % 4096) as u16).collect(),
    )
    .unwrap();
    let mut cfg = IspConfig::new(Profile::Default, BayerPattern::Rggb, 12);
    cfg.set_black_level(64);
    let out = Pipeline::new(&cfg).unwrap().run(raw);
    let mut buf = vec![0xAB; 5];
    out.to_rgb8_into(&mut buf);
    assert_eq!(buf, out.to_rgb8());
    buf.resize(64 * 48 * 3 + 100, 0xCD);
    out.to_rgb8_into(&mut buf);
    assert_eq!(buf, out.to_rgb8());
}

#[test]
fn full_scale_8bit_arithmetic_equals_the_division() {
    for bias in [0u32, 32767] {
        let add = super::full_scale_add(65535, bias).unwrap();
        for v in 0..=u16::MAX {
            let want = ((v as u32 * 255 + bias) / 65535) as u8;
            assert_eq!(super::full_scale_to_8bit(v, add), want, "{v} {bias}");
        }
    }
    // Other scales and biases take the table.
    assert_eq!(super::full_scale_add(65535, 1), None);
    assert_eq!(super::full_scale_add(4095, 0), None);
    // Both conversion paths (arithmetic at the full scale, the table below it) agree
    // with the per-sample division on an image.
    for max in [65535u16, 65534, 4095] {
        let mut img = RgbImage::new(3, 2);
        img.planes = [
            vec![0, 1, 257, 32767, 32768, max],
            vec![max, max / 2, max / 3, 7, 65, 128],
            vec![12, 4000, max - 1, 2, 3, 4],
        ];
        let m = max as u32;
        for (bias, got) in [(0, img.to_rgb8(max)), (m / 2, img.to_rgb8_rounded(max))] {
            let want: Vec<u8> = (0..6)
                .flat_map(|i| img.planes.iter().map(move |p| p[i]))
                // Codes above the scale are white (clamped), not wrapped.
                .map(|v| (((v as u32).min(m) * 255 + bias) / m) as u8)
                .collect();
            assert_eq!(got, want, "max {max} bias {bias}");
        }
    }
}

/// The kernels' run-time dispatch picks the vector unit of the machine, not the scalar
/// fallback: NEON on aarch64 (always present there; `scripts/test_aarch64.sh` runs this
/// under qemu), AVX2 or AVX-512 on x86-64 wherever the CPU has AVX2.
#[test]
fn kernels_dispatch_to_the_machines_vector_unit() {
    struct Name;
    impl pulp::WithSimd for Name {
        type Output = &'static str;
        fn with_simd<S: pulp::Simd>(self, _simd: S) -> &'static str {
            std::any::type_name::<S>()
        }
    }
    let name = pulp::Arch::new().dispatch(Name);
    #[cfg(target_arch = "aarch64")]
    assert!(name.contains("Neon"), "dispatched to {name}");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        assert!(
            name.contains("V3") || name.contains("V4"),
            "dispatched to {name}"
        );
    }
    assert!(!name.is_empty());
}

/// The pipeline folds the tone curve into every demosaic method's output (no CCM in
/// between): the same image as demosaicking with the tone stage off and applying the
/// curve afterwards, with white balance on, on every pattern.
#[test]
fn tone_folded_into_each_demosaic_equals_a_separate_pass() {
    let (w, h) = (70usize, 45usize);
    let mut s = 5u32;
    let data: Vec<u16> = (0..w * h)
        .map(|i| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((i % w) * 40 + (i / w) * 20 + (s >> 25) as usize).min(4095) as u16
        })
        .collect();
    use StageName::*;
    for method in [
        DemosaicMethod::Bilinear,
        DemosaicMethod::Malvar,
        DemosaicMethod::Rcd,
    ] {
        for p in BayerPattern::ALL {
            let run = |stages: Vec<StageName>| {
                let mut cfg = IspConfig::new(Profile::Default, p, 12);
                cfg.set_black_level(64);
                cfg.demosaic.method = method;
                cfg.stages = Some(stages);
                let raw = RawPlane::new(w, h, data.clone()).unwrap();
                (Pipeline::new(&cfg).unwrap().run(raw), cfg)
            };
            let (folded, cfg) = run(vec![Blc, Wb, Demosaic, Tone]);
            assert!(folded.timings.iter().any(|(n, _)| *n == "tone"));
            let (mut want, _) = run(vec![Blc, Wb, Demosaic]);
            stages::color::ToneLut::new(&cfg.tone, FULL_SCALE)
                .map()
                .apply(&mut want.image);
            assert!(want.image != RgbImage::new(w, h));
            assert_eq!(folded.image, want.image, "{method} {p}");
        }
    }
}

#[test]
fn reference_profile_names_the_settings_it_ignores() {
    let mut cfg = IspConfig::new(Profile::Reference, BayerPattern::Rggb, 12);
    cfg.set_black_level(64);
    cfg.denoise.exact = true; // used by the reference bilateral
    assert!(
        cfg.unused_settings().is_empty(),
        "{:?}",
        cfg.unused_settings()
    );
    cfg.blc.black = Some([64, 70, 64]);
    cfg.wb.mode = WbMode::Manual;
    cfg.tone.gamma = 2.4;
    assert_eq!(
        cfg.unused_settings(),
        ["blc.black beyond its first value", "wb", "tone"]
    );
    cfg.profile = Profile::Default;
    assert!(cfg.unused_settings().is_empty());
}

#[test]
fn levels_and_gains_that_leave_no_image_are_refused() {
    let ok = IspConfig::new(Profile::Default, BayerPattern::Rggb, 12);
    assert!(ok.validate().is_ok());
    let refused = |edit: &dyn Fn(&mut IspConfig)| {
        let mut c = ok.clone();
        edit(&mut c);
        c.validate().unwrap_err().to_string()
    };
    assert!(refused(&|c| c.set_black_level(4095)).contains("below white level 4095"));
    assert!(refused(&|c| c.blc.white = Some(0)).contains("above 0"));
    assert!(refused(&|c| c.lsc.strength = -1.0).contains("lsc.strength"));
    assert!(refused(&|c| c.ccm.matrix[1][2] = 65.0).contains("ccm.matrix"));
    let mut edge = ok.clone();
    edge.set_black_level(4094);
    edge.lsc.strength = -0.99;
    edge.ccm.matrix[1][2] = -64.0;
    assert!(edge.validate().is_ok());
}

/// One plane of `img`, as rows of letters for the small orientation case.
fn letters(img: &RgbImage, plane: usize) -> Vec<String> {
    img.planes[plane]
        .chunks(img.width)
        .map(|r| r.iter().map(|&v| (b'a' + v as u8) as char).collect())
        .collect()
}

#[test]
fn orientation_turns_the_image_as_exif_defines() {
    // Stored:  a b c
    //          d e f
    let mut img = RgbImage::new(3, 2);
    img.planes[0] = (0..6).collect();
    img.planes[2] = (0..6).rev().collect();
    let want: [&[&str]; 8] = [
        &["abc", "def"],
        &["cba", "fed"],
        &["fed", "cba"],
        &["def", "abc"],
        &["ad", "be", "cf"],
        &["da", "eb", "fc"],
        &["fc", "eb", "da"],
        &["cf", "be", "ad"],
    ];
    for (o, rows) in (1u16..=8).zip(want) {
        let out = img.clone().oriented(o).unwrap();
        assert_eq!(letters(&out, 0), rows, "orientation {o}");
        assert_eq!(out.width, rows[0].len(), "orientation {o}");
        // Every plane moves alike.
        let back: Vec<u16> = out.planes[0].iter().map(|v| 5 - v).collect();
        assert_eq!(out.planes[2], back, "orientation {o}");
    }
    assert!(img.clone().oriented(0).is_none());
    assert!(img.oriented(9).is_none());
}

#[test]
fn orientations_compose_across_block_edges() {
    // Sizes that cut the 64-pixel blocks unevenly: turning by 90° four times, or
    // mirroring twice, gives the image back; 6 then 8 undo each other.
    let (w, h) = (131, 70);
    let mut img = RgbImage::new(w, h);
    for (i, v) in img.planes[1].iter_mut().enumerate() {
        *v = (i * 7919 % 65521) as u16;
    }
    let turn = |i: RgbImage, o: u16| i.oriented(o).unwrap();
    let four = turn(turn(turn(turn(img.clone(), 6), 6), 6), 6);
    assert_eq!(four, img);
    assert_eq!(turn(turn(img.clone(), 6), 8), img);
    assert_eq!(turn(turn(img.clone(), 6), 6), turn(img.clone(), 3));
    for o in [2, 3, 4, 5, 7] {
        assert_eq!(turn(turn(img.clone(), o), o), img, "orientation {o} twice");
    }
    let t = turn(img.clone(), 5);
    assert_eq!((t.width, t.height), (h, w));
    assert_eq!(t.planes[1][3 * h + 2], img.planes[1][2 * w + 3]);
}

/// Codes above the output scale (samples above their stated depth that no stage clamped)
/// come out white in 8 and 16 bits, not wrapped around to dark.
#[test]
fn codes_above_the_scale_are_white() {
    let img = RgbImage {
        width: 3,
        height: 1,
        planes: [
            vec![1023, 1200, 65535],
            vec![0, 1023, 1024],
            vec![512, 4000, 1023],
        ],
    };
    assert_eq!(
        img.to_rgb8(1023),
        [255, 0, 127, 255, 255, 255, 255, 255, 255]
    );
    assert_eq!(
        img.to_rgb16(1023),
        [65535, 0, 32800, 65535, 65535, 65535, 65535, 65535, 65535]
    );
}
