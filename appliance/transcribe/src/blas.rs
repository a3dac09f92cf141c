//! The matrix kernels under whisper.cpp's encoder: OpenBLAS (Debian's `libopenblas0-serial`), which picks
//! its kernels for the CPU once, when the library loads. An OpenBLAS older than the CPU does not recognise
//! it and falls back to generic SSE3 kernels ("Prescott": Debian 12's 0.3.21 on a 5th-generation Xeon),
//! slower than whisper.cpp without BLAS; only the `OPENBLAS_CORETYPE` environment variable overrides that
//! choice, and only before the library loads.
//!
//! So the programs that transcribe call [`restart_with_fitting_kernels`] first thing: unless the operator
//! set `OPENBLAS_CORETYPE`, the process replaces itself once with a copy that has it set to the kernels
//! this CPU's vector units run ([`kernels_for`]). [`kernel_report`] says what is in use, for the log.

/// OpenBLAS's override for its kernel choice.
const CORETYPE_VARIABLE: &str = "OPENBLAS_CORETYPE";
/// Set together with `OPENBLAS_CORETYPE` when airlock chose the kernels, for the log line.
const CHOSEN_MARKER: &str = "AIRLOCK_OPENBLAS_CORETYPE_CHOSEN";

/// The vector extensions that decide which OpenBLAS x86-64 kernels a CPU can run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VectorUnits {
    pub avx: bool,
    pub avx2_fma: bool,
    /// AVX-512 F, CD, BW, DQ and VL: what OpenBLAS's SkylakeX kernels use.
    pub avx512_skylake: bool,
}

impl VectorUnits {
    /// What this CPU has (all false off x86-64, where OpenBLAS's detection is left alone).
    pub fn of_this_cpu() -> VectorUnits {
        #[cfg(target_arch = "x86_64")]
        {
            VectorUnits {
                avx: std::is_x86_feature_detected!("avx"),
                avx2_fma: std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
                avx512_skylake: std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512cd")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512dq")
                    && std::is_x86_feature_detected!("avx512vl"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            VectorUnits::default()
        }
    }
}

/// The OpenBLAS x86-64 kernels for a CPU with these vector units (None: leave OpenBLAS's choice).
pub fn kernels_for(units: VectorUnits) -> Option<&'static str> {
    if units.avx512_skylake {
        Some("SkylakeX")
    } else if units.avx2_fma {
        Some("Haswell")
    } else if units.avx {
        Some("Sandybridge")
    } else {
        None
    }
}

/// Unless `OPENBLAS_CORETYPE` is set, replaces this process with a copy of itself (same arguments and
/// environment) that has it set to the kernels for this CPU. Call before any other thread starts. Returns
/// when no restart is needed, or with the error if the restart failed (the process then goes on with
/// OpenBLAS's own choice).
pub fn restart_with_fitting_kernels() -> Result<(), std::io::Error> {
    use std::os::unix::process::CommandExt;

    if std::env::var_os(CORETYPE_VARIABLE).is_some() {
        return Ok(());
    }
    let Some(kernels) = kernels_for(VectorUnits::of_this_cpu()) else {
        return Ok(());
    };
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let error = std::process::Command::new(std::env::current_exe()?)
        .arg0(argv0)
        .args(args)
        .env(CORETYPE_VARIABLE, kernels)
        .env(CHOSEN_MARKER, kernels)
        .exec();
    Err(error)
}

/// One line on the kernels in use, for the start-up log.
pub fn kernel_report() -> String {
    match (std::env::var(CORETYPE_VARIABLE), std::env::var_os(CHOSEN_MARKER)) {
        (Ok(kernels), Some(_)) => format!(
            "OpenBLAS kernels {kernels}, chosen by airlock for this CPU's vector units ({CORETYPE_VARIABLE} \
             overrides)"
        ),
        (Ok(kernels), None) => format!("OpenBLAS kernels {kernels}, from {CORETYPE_VARIABLE}"),
        (Err(_), _) => "OpenBLAS kernels of OpenBLAS's own choice".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_follow_the_widest_vector_unit() {
        let mut units = VectorUnits::default();
        assert_eq!(kernels_for(units), None);
        units.avx = true;
        assert_eq!(kernels_for(units), Some("Sandybridge"));
        units.avx2_fma = true;
        assert_eq!(kernels_for(units), Some("Haswell"));
        units.avx512_skylake = true;
        assert_eq!(kernels_for(units), Some("SkylakeX"));
    }
}
