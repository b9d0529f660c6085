//! A bit-exact model of glibc's `expf` (glibc ≥ 2.27, the "optimized-routines"
//! algorithm): `x·32/ln2 = k + r`, `2^(k/32)` from a 32-entry table, a cubic in `r`,
//! all in binary64 without fused multiply-add, then one rounding to binary32.
//!
//! The reference ISP builds its bilateral weight tables with the C library's `expf`;
//! using this model makes rawlink's tables identical on every platform and libm.

const TAB: [u64; 32] = [
    0x3FF0000000000000,
    0x3FEFD9B0D3158574,
    0x3FEFB5586CF9890F,
    0x3FEF9301D0125B51,
    0x3FEF72B83C7D517B,
    0x3FEF54873168B9AA,
    0x3FEF387A6E756238,
    0x3FEF1E9DF51FDEE1,
    0x3FEF06FE0A31B715,
    0x3FEEF1A7373AA9CB,
    0x3FEEDEA64C123422,
    0x3FEECE086061892D,
    0x3FEEBFDAD5362A27,
    0x3FEEB42B569D4F82,
    0x3FEEAB07DD485429,
    0x3FEEA47EB03A5585,
    0x3FEEA09E667F3BCD,
    0x3FEE9F75E8EC5F74,
    0x3FEEA11473EB0187,
    0x3FEEA589994CCE13,
    0x3FEEACE5422AA0DB,
    0x3FEEB737B0CDC5E5,
    0x3FEEC49182A3F090,
    0x3FEED503B23E255D,
    0x3FEEE89F995AD3AD,
    0x3FEEFF76F2FB5E47,
    0x3FEF199BDD85529C,
    0x3FEF3720DCEF9069,
    0x3FEF5818DCFBA487,
    0x3FEF7C97337B9B5F,
    0x3FEFA4AFA2A490DA,
    0x3FEFD0765B6E4540,
];

/// `expf(x)` as glibc computes it, for finite `x` up to the overflow threshold
/// (about 88.72). Larger arguments return `f32::INFINITY`.
pub fn expf_glibc(x: f32) -> f32 {
    if x > f32::from_bits(0x42b1_7217) {
        return f32::INFINITY;
    }
    if x < f32::from_bits(0xc2cf_f1b4) {
        return 0.0; // below log(2^-150): rounds to zero
    }
    let n = 32.0f64;
    let k_scale = f64::from_bits(0x3ff7_1547_652b_82fe) * n;
    let shift = f64::from_bits(0x4338_0000_0000_0000);
    let c0 = f64::from_bits(0x3fac_6af8_4b91_2394) / n / n / n;
    let c1 = f64::from_bits(0x3fce_bfce_50fa_c4f3) / n / n;
    let c2 = f64::from_bits(0x3fe6_2e42_ff0c_52d6) / n;
    let z = k_scale * x as f64;
    let kd = z + shift;
    let ki = kd.to_bits();
    let kd = kd - shift;
    let r = z - kd;
    let s = f64::from_bits(TAB[(ki % 32) as usize].wrapping_add(ki << 47));
    let hi = c0 * r + c1;
    let y = c2 * r + 1.0;
    let y = hi * (r * r) + y;
    (y * s) as f32
}

/// `2^t` for `t ≤ 0`, computed rather than looked up, so that it vectorises: the nearest
/// integer `k` to `t` goes into the float's exponent bits, `2^(t−k)` comes from a
/// degree-4 polynomial on [−½, ½] (fitted for relative error, below 3·10⁻⁶; exactly 1
/// at 0). Arguments below −125 give about 2^−125 instead of a smaller number or zero.
/// Uses fused multiply-add: call it from code compiled for FMA (a `pulp` kernel).
#[inline(always)]
pub(crate) fn exp2_nonpositive(t: f32) -> f32 {
    const C: [f32; 5] = [1.0, 0.693_124_2, 0.240_240_99, 0.055_906_426, 0.009_582_853];
    // Adding 1.5·2^23 rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let t = t.max(-125.0);
    let k = t + ROUND;
    let f = t - (k - ROUND);
    let p = C[4]
        .mul_add(f, C[3])
        .mul_add(f, C[2])
        .mul_add(f, C[1])
        .mul_add(f, C[0]);
    f32::from_bits(p.to_bits().wrapping_add(k.to_bits() << 23))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error against `f64` over the whole argument range, integers included
    /// (where the polynomial's `f` is 0 and the result must be an exact power of two).
    #[test]
    fn exp2_nonpositive_is_within_three_millionths() {
        let mut worst = 0f64;
        for i in 0..=1_250_000u32 {
            let t = -(i as f32) * 1e-4;
            let got = exp2_nonpositive(t) as f64;
            let want = (t as f64).exp2();
            worst = worst.max((got / want - 1.0).abs());
        }
        assert!(worst < 3e-6, "worst relative error {worst:e}");
        for k in 0..=125 {
            assert_eq!(
                exp2_nonpositive(-(k as f32)),
                (-(k as f32)).exp2(),
                "2^-{k}"
            );
        }
        // Clamped below −125, never zero, never a denormal or garbage.
        assert_eq!(exp2_nonpositive(-500.0), exp2_nonpositive(-125.0));
        assert!(exp2_nonpositive(-1e30).is_normal());
    }

    #[test]
    fn agrees_with_known_values() {
        assert_eq!(expf_glibc(0.0), 1.0);
        assert_eq!(expf_glibc(-200.0), 0.0);
        assert!((expf_glibc(-1.0) - 0.367_879_45).abs() < 1e-7);
        assert!((expf_glibc(-0.125) - 0.882_496_9).abs() < 1e-7);
    }

    /// On glibc targets the platform `expf` (which `f32::exp` calls) is the same
    /// algorithm, so the two agree bit for bit over the arguments the ISP uses.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn matches_platform_expf_on_glibc() {
        let r_coeff = -0.5f32 / (30.0f32 * 30.0);
        let mut mismatches = 0;
        for d in 0..190_000u32 {
            let x = d as f32 * r_coeff;
            if expf_glibc(x).to_bits() != std::hint::black_box(x).exp().to_bits() {
                mismatches += 1;
            }
        }
        assert_eq!(mismatches, 0);
    }
}
