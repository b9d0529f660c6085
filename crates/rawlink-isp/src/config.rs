//! ISP configuration: profiles, stage selection and every stage's parameters.
//!
//! The same structure is read from a TOML file (`--config isp.toml`) and then
//! overridden by command-line flags. Every field has a default, so a file only
//! names what it changes:
//!
//! ```
//! let cfg: rawlink_isp::IspConfig = toml::from_str(r#"
//!     profile = "default"
//!     stages = ["blc", "demosaic"]
//!     [blc]
//!     black = [256, 256, 256]
//!     white = 4095
//!     [demosaic]
//!     method = "malvar"
//! "#).unwrap();
//! assert_eq!(cfg.demosaic.method, rawlink_isp::DemosaicMethod::Malvar);
//! ```

use crate::IspError;
use rawlink_frame::BayerPattern;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Named sets of stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// The reference ISP's six stages: within ±1 LSB of it, or bit-exact with
    /// [`DenoiseConfig::exact`].
    Reference,
    /// Best quality that runs in real time.
    #[default]
    Default,
}

impl FromStr for Profile {
    type Err = IspError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reference" => Ok(Self::Reference),
            "default" => Ok(Self::Default),
            _ => Err(IspError::UnknownProfile(s.to_string())),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Reference => "reference",
            Self::Default => "default",
        })
    }
}

/// Stage names, in the fixed pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageName {
    /// Defective-pixel correction.
    Dpc,
    /// Black level (and white level normalisation).
    Blc,
    /// Lens-shading correction.
    Lsc,
    /// White balance.
    Wb,
    /// Demosaic.
    Demosaic,
    /// Colour-correction matrix (and saturation).
    Ccm,
    /// Tone curve (sRGB, gamma or linear; optional contrast).
    Tone,
    /// Denoise.
    Denoise,
    /// Sharpen.
    Sharpen,
}

impl StageName {
    /// Every stage in pipeline order.
    pub const ALL: [StageName; 9] = [
        Self::Dpc,
        Self::Blc,
        Self::Lsc,
        Self::Wb,
        Self::Demosaic,
        Self::Ccm,
        Self::Tone,
        Self::Denoise,
        Self::Sharpen,
    ];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dpc => "dpc",
            Self::Blc => "blc",
            Self::Lsc => "lsc",
            Self::Wb => "wb",
            Self::Demosaic => "demosaic",
            Self::Ccm => "ccm",
            Self::Tone => "tone",
            Self::Denoise => "denoise",
            Self::Sharpen => "sharpen",
        }
    }
}

impl FromStr for StageName {
    type Err = IspError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|n| n.as_str() == s.trim())
            .ok_or_else(|| {
                IspError::BadParam(format!(
                    "unknown stage {s:?} (stages: dpc, blc, lsc, wb, demosaic, ccm, tone, denoise, sharpen)"
                ))
            })
    }
}

/// Parses `a,b,c` into stage names.
/// `normalize`, the name the always-on scaling shows under when `blc` is off, is taken
/// and skipped, so a stage list copied from a run's output reads back.
pub fn parse_stage_list(s: &str) -> Result<Vec<StageName>, IspError> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && *p != "normalize")
        .map(str::parse)
        .collect()
}

/// Demosaic algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DemosaicMethod {
    /// Bilinear (the reference's).
    Bilinear,
    /// Malvar-He-Cutler 2004 gradient-corrected linear interpolation.
    Malvar,
    /// Ratio-corrected, direction-weighted interpolation (RCD family), the default.
    #[default]
    Rcd,
}

impl FromStr for DemosaicMethod {
    type Err = IspError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bilinear" => Ok(Self::Bilinear),
            "malvar" => Ok(Self::Malvar),
            "rcd" => Ok(Self::Rcd),
            _ => Err(IspError::BadParam(format!(
                "unknown demosaic method {s:?} (bilinear, malvar, rcd)"
            ))),
        }
    }
}

impl fmt::Display for DemosaicMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bilinear => "bilinear",
            Self::Malvar => "malvar",
            Self::Rcd => "rcd",
        })
    }
}

/// Defective-pixel correction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpcConfig {
    /// A pixel is defective when it exceeds the largest (or falls below the smallest) of
    /// its 8 same-colour neighbours by more than this fraction of full scale.
    pub threshold: f32,
}

impl Default for DpcConfig {
    fn default() -> Self {
        Self { threshold: 0.1 }
    }
}

/// Black and white levels.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlcConfig {
    /// Per-channel black level (R, G, B) in sample units; `None`: from metadata, else 0
    /// (the reference profile: 64).
    pub black: Option<[u16; 3]>,
    /// White level in sample units; `None`: from metadata, else `2^bits - 1`.
    pub white: Option<u16>,
}

/// Lens-shading correction.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LscConfig {
    /// Parametric radial falloff: gain = 1 + strength · (r / r_corner)². 0 disables it;
    /// above -1 (the corner gain stays positive) and at most 4.
    pub strength: f32,
    /// A gain-map file: whitespace-separated numbers, one row of the grid per line;
    /// the grid is stretched over the frame with bilinear interpolation. Overrides
    /// `strength`. A relative path in a configuration file is relative to that file.
    pub map: Option<PathBuf>,
}

/// White-balance mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WbMode {
    /// Gray world over the whole frame.
    Grayworld,
    /// Gray world restricted to unclipped mid-tones (robust to highlights and deep shadow).
    #[default]
    Robust,
    /// Fixed gains from `gains`.
    Manual,
    /// Gains from frame metadata; falls back to `robust` when the frame has none.
    Metadata,
}

impl FromStr for WbMode {
    type Err = IspError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "grayworld" => Ok(Self::Grayworld),
            "robust" => Ok(Self::Robust),
            "manual" => Ok(Self::Manual),
            "metadata" => Ok(Self::Metadata),
            _ => Err(IspError::BadParam(format!(
                "unknown white-balance mode {s:?} (grayworld, robust, manual, metadata)"
            ))),
        }
    }
}

/// White balance.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WbConfig {
    /// How gains are chosen.
    pub mode: WbMode,
    /// R, G, B gains for `manual` mode.
    pub gains: Option<[f32; 3]>,
}

/// Demosaic.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemosaicConfig {
    /// Algorithm.
    pub method: DemosaicMethod,
}

/// Colour correction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CcmConfig {
    /// Row-major 3×3 matrix applied to linear camera RGB (rows should sum to 1).
    pub matrix: [[f32; 3]; 3],
    /// Saturation factor applied with the matrix (1 = unchanged, 0 = grey).
    pub saturation: f32,
}

impl Default for CcmConfig {
    fn default() -> Self {
        Self {
            matrix: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            saturation: 1.0,
        }
    }
}

/// Tone curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToneCurve {
    /// The sRGB transfer function.
    #[default]
    Srgb,
    /// A pure power law, `v^(1/gamma)`.
    Gamma,
    /// No curve.
    Linear,
}

/// Tone mapping.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToneConfig {
    /// Transfer curve.
    pub curve: ToneCurve,
    /// Exponent for `curve = "gamma"`.
    pub gamma: f32,
    /// S-curve strength after the transfer curve, 0..=1 (0 = none).
    pub contrast: f32,
}

impl Default for ToneConfig {
    fn default() -> Self {
        Self {
            curve: ToneCurve::Srgb,
            gamma: 2.2,
            contrast: 0.0,
        }
    }
}

/// Denoise method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DenoiseMethod {
    /// Fast: edge-preserving luma filter plus chroma smoothing.
    #[default]
    Lumachroma,
    /// The reference joint bilateral (σs 2, σr 30 in 12-bit units): within ±1 code of the
    /// reference by default, bit for bit with [`DenoiseConfig::exact`].
    Bilateral,
}

/// Denoise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DenoiseConfig {
    /// Method.
    pub method: DenoiseMethod,
    /// Luma range sigma as a fraction of full scale (edges above ~2σ are kept).
    pub luma_sigma: f32,
    /// Chroma smoothing strength, 0..=1.
    pub chroma: f32,
    /// The bilateral (the reference profile's denoise, or `method = "bilateral"`) bit
    /// for bit as the reference computes it: weights from `expf` tables, multiply and
    /// add rounded separately. Off (the default), the weights are computed and the sums
    /// fused: within ±1 LSB of the reference and ~1.7× faster. The reference profile
    /// runs it exact for input below 12 bits whatever this says (see docs/ISP.md).
    pub exact: bool,
}

impl Default for DenoiseConfig {
    fn default() -> Self {
        Self {
            method: DenoiseMethod::Lumachroma,
            luma_sigma: 0.02,
            chroma: 1.0,
            exact: false,
        }
    }
}

/// Sharpen method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SharpenMethod {
    /// Unsharp mask on luma.
    #[default]
    Unsharp,
    /// The reference 3×3 kernel on every channel.
    Kernel3x3,
}

/// Sharpen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharpenConfig {
    /// Method.
    pub method: SharpenMethod,
    /// Unsharp-mask amount (0 = none).
    pub amount: f32,
    /// Detail below this fraction of full scale is not sharpened (keeps noise down).
    pub threshold: f32,
}

impl Default for SharpenConfig {
    fn default() -> Self {
        Self {
            method: SharpenMethod::Unsharp,
            amount: 0.5,
            threshold: 0.004,
        }
    }
}

/// The whole ISP configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IspConfig {
    /// Profile: its stage set and defaults.
    pub profile: Profile,
    /// CFA pattern of the input (normally from the frame, not the file).
    #[serde(skip)]
    pub pattern: BayerPattern,
    /// Bit depth of the input (normally from the frame).
    #[serde(skip)]
    pub bits: u8,
    /// Stages to run, in pipeline order; `None`: the profile's set.
    pub stages: Option<Vec<StageName>>,
    /// Defective-pixel correction.
    pub dpc: DpcConfig,
    /// Black/white levels.
    pub blc: BlcConfig,
    /// Lens shading.
    pub lsc: LscConfig,
    /// White balance.
    pub wb: WbConfig,
    /// Demosaic.
    pub demosaic: DemosaicConfig,
    /// Colour correction.
    pub ccm: CcmConfig,
    /// Tone curve.
    pub tone: ToneConfig,
    /// Denoise.
    pub denoise: DenoiseConfig,
    /// Sharpen.
    pub sharpen: SharpenConfig,
}

impl Default for IspConfig {
    fn default() -> Self {
        Self::new(Profile::Default, BayerPattern::Rggb, 12)
    }
}

impl IspConfig {
    /// Defaults for a profile and input format.
    pub fn new(profile: Profile, pattern: BayerPattern, bits: u8) -> Self {
        Self {
            profile,
            pattern,
            bits,
            stages: None,
            dpc: DpcConfig::default(),
            blc: BlcConfig::default(),
            lsc: LscConfig::default(),
            wb: WbConfig::default(),
            demosaic: DemosaicConfig::default(),
            ccm: CcmConfig::default(),
            tone: ToneConfig::default(),
            denoise: DenoiseConfig::default(),
            sharpen: SharpenConfig::default(),
        }
    }

    /// Reads a TOML file.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, IspError> {
        let text = std::fs::read_to_string(path).map_err(|error| IspError::ConfigRead {
            path: path.to_path_buf(),
            error,
        })?;
        let mut cfg: Self =
            toml::from_str(&text).map_err(|e| IspError::BadParam(toml_error(path, &text, &e)))?;
        // A relative gain-map path names a file next to the configuration, wherever the
        // command runs from.
        if let (Some(map), Some(dir)) = (&cfg.lsc.map, path.parent()) {
            if map.is_relative() {
                cfg.lsc.map = Some(dir.join(map));
            }
        }
        Ok(cfg)
    }

    /// Largest input code, `2^bits - 1`.
    pub fn max_value(&self) -> u16 {
        ((1u32 << self.bits.clamp(1, 16)) - 1) as u16
    }

    /// Sets one black level for every channel.
    pub fn set_black_level(&mut self, black: u16) {
        self.blc.black = Some([black; 3]);
    }

    /// The stages this configuration runs, in pipeline order.
    pub fn active_stages(&self) -> Vec<StageName> {
        let mut v = match (&self.stages, self.profile) {
            (Some(s), _) => s.clone(),
            (None, Profile::Reference) => vec![
                StageName::Blc,
                StageName::Demosaic,
                StageName::Wb,
                StageName::Tone,
                StageName::Denoise,
                StageName::Sharpen,
            ],
            (None, Profile::Default) => {
                let mut s = vec![
                    StageName::Dpc,
                    StageName::Blc,
                    StageName::Wb,
                    StageName::Demosaic,
                    StageName::Ccm,
                    StageName::Tone,
                    StageName::Denoise,
                    StageName::Sharpen,
                ];
                if self.lsc.strength != 0.0 || self.lsc.map.is_some() {
                    s.insert(2, StageName::Lsc);
                }
                s
            }
        };
        v.sort();
        v.dedup();
        v
    }

    /// The settings, by TOML name, that differ from their defaults although this
    /// configuration's profile does not use them. The reference profile's pipeline is
    /// fixed (one black level, gray world, bilinear, gamma 2.2, the bilateral and the 3×3
    /// kernel), so it ignores every other section; the default profile uses them all.
    pub fn unused_settings(&self) -> Vec<&'static str> {
        if self.profile != Profile::Reference {
            return Vec::new();
        }
        let d = IspConfig::default();
        let mut v = Vec::new();
        if self.blc.white.is_some() {
            v.push("blc.white");
        }
        if self.blc.black.is_some_and(|b| b[1] != b[0] || b[2] != b[0]) {
            v.push("blc.black beyond its first value");
        }
        let exact = DenoiseConfig {
            exact: d.denoise.exact,
            ..self.denoise
        };
        let sections = [
            ("dpc", self.dpc == d.dpc),
            ("lsc", self.lsc == d.lsc),
            ("wb", self.wb == d.wb),
            ("demosaic", self.demosaic == d.demosaic),
            ("ccm", self.ccm == d.ccm),
            ("tone", self.tone == d.tone),
            ("denoise (all but exact)", exact == d.denoise),
            ("sharpen", self.sharpen == d.sharpen),
        ];
        v.extend(sections.iter().filter(|(_, same)| !same).map(|(n, _)| *n));
        v
    }

    /// Checks parameters and stage selection.
    pub fn validate(&self) -> Result<(), IspError> {
        let bad = |m: String| Err(IspError::BadParam(m));
        if !(8..=16).contains(&self.bits) {
            return bad(format!("bit depth {} is not in 8..=16", self.bits));
        }
        let stages = self.active_stages();
        if !stages.contains(&StageName::Demosaic) {
            return bad("the stage list must include demosaic".into());
        }
        if self.profile == Profile::Reference {
            for s in &stages {
                if matches!(s, StageName::Dpc | StageName::Lsc | StageName::Ccm) {
                    return bad(format!(
                        "stage {} is not part of the reference profile",
                        s.as_str()
                    ));
                }
            }
        }
        if let Some(w) = self.blc.white {
            if w > self.max_value() {
                return bad(format!(
                    "white level {w} exceeds the {}-bit maximum {}",
                    self.bits,
                    self.max_value()
                ));
            }
        }
        if self.blc.white == Some(0) {
            return bad("white level must be above 0".into());
        }
        // Without a white level the largest code is white, so a black level at or above it
        // (set or implied) would leave no range: every sample would be black.
        let white = self.blc.white.unwrap_or(self.max_value());
        if let Some(b) = self.blc.black {
            if b.iter().any(|&b| b >= white) {
                return bad(format!(
                    "black level {b:?} must be below white level {white}"
                ));
            }
        }
        if self.wb.mode == WbMode::Manual && self.wb.gains.is_none() {
            return bad("white-balance mode manual needs gains (--wb-gains r,g,b)".into());
        }
        if let Some(g) = self.wb.gains {
            check_wb_gains(g)?;
        }
        let finite = |x: f32| x.is_finite();
        let within = |x: f32, lo: f32, hi: f32| x.is_finite() && (lo..=hi).contains(&x);
        if !(finite(self.dpc.threshold) && self.dpc.threshold > 0.0 && self.dpc.threshold <= 1.0) {
            return bad("dpc.threshold must be within (0, 1] (a fraction of full scale)".into());
        }
        // The radial gain at the corners is 1 + strength, which must stay positive.
        if !(finite(self.lsc.strength) && self.lsc.strength > -1.0 && self.lsc.strength <= 4.0) {
            return bad("lsc.strength must be above -1 and at most 4".into());
        }
        if !(ccm_matrix_ok(&self.ccm.matrix) && within(self.ccm.saturation, 0.0, 4.0)) {
            return bad(
                "ccm.matrix entries must be within -64..=64 and ccm.saturation within 0..=4".into(),
            );
        }
        if !(finite(self.tone.gamma) && (0.1..=10.0).contains(&self.tone.gamma)) {
            return bad("tone.gamma must be within 0.1..=10".into());
        }
        if !(finite(self.tone.contrast) && (0.0..=1.0).contains(&self.tone.contrast)) {
            return bad("tone.contrast must be within 0..=1".into());
        }
        if !(within(self.denoise.luma_sigma, 0.0, 1.0) && within(self.denoise.chroma, 0.0, 1.0)) {
            return bad("denoise.luma_sigma and denoise.chroma must be within 0..=1".into());
        }
        if !(within(self.sharpen.amount, 0.0, 8.0) && within(self.sharpen.threshold, 0.0, 1.0)) {
            return bad("sharpen.amount must be within 0..=8 and sharpen.threshold 0..=1".into());
        }
        Ok(())
    }
}

/// Checks manual white-balance gains (R, G, B): each finite and in (0, 64).
pub fn check_wb_gains(g: [f32; 3]) -> Result<(), IspError> {
    if g.iter().any(|&x| !(x.is_finite() && x > 0.0 && x < 64.0)) {
        return Err(IspError::BadParam(format!(
            "white-balance gains {g:?} must be in (0, 64)"
        )));
    }
    Ok(())
}

/// True if every entry of a colour matrix is finite and within −64..=64.
pub fn ccm_matrix_ok(m: &[[f32; 3]; 3]) -> bool {
    m.iter()
        .flatten()
        .all(|x| x.is_finite() && (-64.0..=64.0).contains(x))
}

/// A TOML error on one line: where (line, column and the table it is in), what, and the
/// line's text. toml's own rendering is a multi-line snippet with a caret.
fn toml_error(path: &std::path::Path, text: &str, e: &toml::de::Error) -> String {
    let mut out = format!("{}: ", path.display());
    if let Some(span) = e.span() {
        let start = span.start.min(text.len());
        let start = (0..=start)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        let before = &text[..start];
        let line_no = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = text[line_start..start].chars().count() + 1;
        let line = text[line_start..].lines().next().unwrap_or("").trim();
        let table = before
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('[') && l.ends_with(']'));
        out += &format!("line {line_no}, column {column}");
        if let Some(t) = table {
            out += &format!(" (in {t})");
        }
        out += &format!(": {}", e.message().trim());
        if !line.is_empty() && !line.starts_with('[') {
            let shown: String = line.chars().take(80).collect();
            out += &format!(" (`{shown}`)");
        }
    } else {
        out += e.message().trim();
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod toml_error_tests {
    use super::*;

    proptest::proptest! {
        /// Any text, as a configuration file: parsing, the error message (which slices
        /// the text by the error's span) and validation never panic, and an error is
        /// one line.
        #[test]
        fn any_config_text_parses_or_fails_in_one_line(
            text in "(\\[[a-z]{0,8}\\]\n|[a-z_.]{1,12} = [-+0-9.eE\"a-zé, \\[\\]]{0,16}\n|[\\PC\n]{0,12}){0,6}"
        ) {
            match toml::from_str::<IspConfig>(&text) {
                Ok(cfg) => {
                    let _ = cfg.validate();
                }
                Err(e) => {
                    let m = toml_error(std::path::Path::new("c.toml"), &text, &e);
                    proptest::prop_assert!(!m.contains('\n'), "{m}");
                }
            }
        }

        /// Any stage list: parsed or refused, never a panic.
        #[test]
        fn any_stage_list_parses_or_fails(s in "[a-z,é ]{0,40}") {
            let _ = parse_stage_list(&s);
        }
    }

    /// One line that says where (line, column, table), what, and shows the line.
    #[test]
    fn toml_errors_are_one_line_with_the_place() {
        let text = "[sharpen]\namount = \"lots\"\n";
        let e = toml::from_str::<IspConfig>(text).unwrap_err();
        let m = toml_error(std::path::Path::new("isp.toml"), text, &e);
        assert_eq!(
            m,
            "isp.toml: line 2, column 10 (in [sharpen]): invalid type: string \"lots\", expected f32 (`amount = \"lots\"`)"
        );
        let text = "[dpc]\nthreshold = 1e300\n";
        let cfg: IspConfig = toml::from_str(text).unwrap();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("dpc.threshold must be within (0, 1]"), "{e}");
        // Above full scale nothing could ever be repaired; refused rather than run (it
        // used to overflow the edge columns' test and repair every pixel there).
        let cfg: IspConfig = toml::from_str("[dpc]\nthreshold = 6e5\n").unwrap();
        assert!(cfg.validate().is_err());
        let cfg: IspConfig = toml::from_str("[dpc]\nthreshold = 1.0\n").unwrap();
        assert!(cfg.validate().is_ok());
        let text = "nonsense = 1\n";
        let e = toml::from_str::<IspConfig>(text).unwrap_err();
        let m = toml_error(std::path::Path::new("c.toml"), text, &e);
        assert!(
            m.starts_with("c.toml: line 1, column 1: unknown field `nonsense`"),
            "{m}"
        );
        assert!(!m.contains('\n'), "{m}");
    }
}
