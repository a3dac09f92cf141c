//! ITU-T G.711 companding: µ-law (PCMU) and A-law (PCMA) bytes to and from 16-bit linear PCM.
//!
//! Expansion follows the segment/mantissa definition of G.711: each code is a sign bit, a 3-bit segment
//! (exponent) and a 4-bit step within the segment, and it expands to the midpoint of its quantisation
//! interval. The 256-entry expansion tables are built at compile time by the same `const fn`s that define
//! them. The compressors exist so tests, the test kit and benchmarks can produce real G.711 payloads.

/// µ-law codes are stored with every bit inverted.
const ULAW_INVERSION: u8 = 0xFF;
/// Added to µ-law magnitudes so that every segment boundary falls on a power of two.
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude µ-law can represent once the bias is added without leaving segment 7.
const ULAW_CLIP: i32 = 0x7FFF - ULAW_BIAS;
/// A-law codes are stored with the even bits inverted.
const ALAW_INVERSION: u8 = 0x55;
/// Sign bit of a (de-inverted) code.
const SIGN_BIT: u8 = 0x80;

/// Expands one µ-law code to linear PCM (full 16-bit scale, |x| ≤ 32124).
pub const fn ulaw_to_linear(code: u8) -> i16 {
    let code = code ^ ULAW_INVERSION;
    let segment = ((code >> 4) & 0x07) as i32;
    let step = (code & 0x0F) as i32;
    let magnitude = (((step << 3) + ULAW_BIAS) << segment) - ULAW_BIAS;
    // magnitude ≤ ((15 << 3) + 0x84) << 7 - 0x84 = 32124, so it fits in i16.
    if code & SIGN_BIT != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// Expands one A-law code to linear PCM (full 16-bit scale, |x| ≤ 32256).
pub const fn alaw_to_linear(code: u8) -> i16 {
    let code = code ^ ALAW_INVERSION;
    let segment = ((code >> 4) & 0x07) as i32;
    let step = (code & 0x0F) as i32;
    let magnitude = if segment == 0 {
        (step << 4) + 8
    } else {
        ((step << 4) + 0x108) << (segment - 1)
    };
    // In A-law a set sign bit means a positive sample.
    if code & SIGN_BIT != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

/// Compresses one linear PCM sample to µ-law (values beyond the µ-law range are clipped).
pub const fn linear_to_ulaw(sample: i16) -> u8 {
    let sign = if sample < 0 { SIGN_BIT } else { 0 };
    let mut magnitude = (sample as i32).abs();
    if magnitude > ULAW_CLIP {
        magnitude = ULAW_CLIP;
    }
    magnitude += ULAW_BIAS;
    // The biased magnitude lies in [0x84, 0x7FFF]: its top bit is bit 7 + segment.
    let segment = (31 - magnitude.leading_zeros() as i32) - 7;
    let step = ((magnitude >> (segment + 3)) & 0x0F) as u8;
    (sign | ((segment as u8) << 4) | step) ^ ULAW_INVERSION
}

/// Compresses one linear PCM sample to A-law (values beyond the A-law range are clipped).
pub const fn linear_to_alaw(sample: i16) -> u8 {
    let sign = if sample >= 0 { SIGN_BIT } else { 0 };
    let mut magnitude = (sample as i32).abs();
    if magnitude > 0x7FFF {
        magnitude = 0x7FFF;
    }
    let code = if magnitude < 0x100 {
        sign | ((magnitude >> 4) as u8)
    } else {
        // magnitude ≥ 256: segment 1 starts at 2^8, segment 7 ends below 2^15.
        let segment = (31 - magnitude.leading_zeros() as i32) - 7;
        let step = ((magnitude >> (segment + 3)) & 0x0F) as u8;
        sign | ((segment as u8) << 4) | step
    };
    code ^ ALAW_INVERSION
}

/// Builds the 256-entry expansion table of one law (`alaw` selects A-law, else µ-law).
const fn expansion_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = if alaw {
            alaw_to_linear(code as u8)
        } else {
            ulaw_to_linear(code as u8)
        };
        code += 1;
    }
    table
}

/// µ-law code → linear sample.
static ULAW_TABLE: [i16; 256] = expansion_table(false);
/// A-law code → linear sample.
static ALAW_TABLE: [i16; 256] = expansion_table(true);

/// Appends the expansion of every µ-law byte in `payload` to `out`.
pub(crate) fn decode_ulaw(payload: &[u8], out: &mut Vec<i16>) {
    out.extend(payload.iter().map(|&code| ULAW_TABLE[usize::from(code)]));
}

/// Appends the expansion of every A-law byte in `payload` to `out`.
pub(crate) fn decode_alaw(payload: &[u8], out: &mut Vec<i16>) {
    out.extend(payload.iter().map(|&code| ALAW_TABLE[usize::from(code)]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0xFE), 8);
        assert_eq!(ulaw_to_linear(0x7E), -8);
        assert_eq!(ulaw_to_linear(0xEF), 132);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(alaw_to_linear(0xD4), 24);
        assert_eq!(alaw_to_linear(0xC5), 264);
    }

    #[test]
    fn both_laws_are_symmetric_about_zero() {
        for code in 0..=0x7Fu8 {
            assert_eq!(
                ulaw_to_linear(code),
                -ulaw_to_linear(code | 0x80),
                "µ-law {code:#04x}"
            );
            assert_eq!(
                alaw_to_linear(code),
                -alaw_to_linear(code | 0x80),
                "A-law {code:#04x}"
            );
        }
    }

    #[test]
    fn ulaw_all_codes_round_trip() {
        for code in 0..=255u8 {
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(
                linear_to_ulaw(ulaw_to_linear(code)),
                expected,
                "µ-law {code:#04x}"
            );
        }
    }

    #[test]
    fn alaw_all_codes_round_trip() {
        for code in 0..=255u8 {
            assert_eq!(linear_to_alaw(alaw_to_linear(code)), code, "A-law {code:#04x}");
        }
    }

    #[test]
    fn compression_error_stays_within_the_segment_step() {
        for sample in i16::MIN..=i16::MAX {
            let magnitude = i32::from(sample).abs();
            let ulaw_error = (i32::from(ulaw_to_linear(linear_to_ulaw(sample))) - i32::from(sample)).abs();
            let alaw_error = (i32::from(alaw_to_linear(linear_to_alaw(sample))) - i32::from(sample)).abs();
            // Within half a quantisation step (which grows with the segment, ≤ 1/16 of the magnitude
            // plus the fixed step near zero), or clipped at the largest level.
            let allowed = magnitude / 16 + 16;
            assert!(
                ulaw_error <= allowed.max(magnitude - 32124),
                "µ-law {sample}: {ulaw_error}"
            );
            assert!(
                alaw_error <= allowed.max(magnitude - 32256),
                "A-law {sample}: {alaw_error}"
            );
        }
    }

    #[test]
    fn tables_match_the_definitions() {
        let mut out = Vec::new();
        decode_ulaw(&[0xFF, 0x80], &mut out);
        decode_alaw(&[0xD5, 0x2A], &mut out);
        assert_eq!(out, [0, 32124, 8, -32256]);
    }
}
