//! CPU features: which x86_64 extensions the generated code may use, how they are written in
//! a fingerprint (`x86_64:sse3,ssse3,sse4.1,…`), and whether the running CPU has them.
//!
//! Cranelift names its ISA flags `has_sse41`; Rust's `is_x86_feature_detected!` names the
//! same feature `sse4.1`. The fingerprint uses Rust's names, because the runtime checks it.

/// Cranelift x86_64 flag name and the `is_x86_feature_detected!` name, one row per feature.
/// Rows with an empty Cranelift name are features only the LLVM CPU targets use (Cranelift has
/// no flag for them), listed here so that one table checks every CPU target's fingerprint.
pub const FEATURES: &[(&str, &str)] = &[
    ("has_sse3", "sse3"),
    ("has_ssse3", "ssse3"),
    ("has_sse41", "sse4.1"),
    ("has_sse42", "sse4.2"),
    ("has_popcnt", "popcnt"),
    ("has_cmpxchg16b", "cmpxchg16b"),
    ("has_avx", "avx"),
    ("has_avx2", "avx2"),
    ("has_fma", "fma"),
    ("has_bmi1", "bmi1"),
    ("has_bmi2", "bmi2"),
    ("has_lzcnt", "lzcnt"),
    ("has_avx_vnni", "avxvnni"),
    ("has_avx512f", "avx512f"),
    ("has_avx512vl", "avx512vl"),
    ("has_avx512dq", "avx512dq"),
    ("has_avx512bitalg", "avx512bitalg"),
    ("has_avx512vbmi", "avx512vbmi"),
    ("has_avx512vnni", "avx512vnni"),
    ("", "f16c"),
    ("", "movbe"),
    ("", "avx512bw"),
    ("", "avx512cd"),
    ("", "avx512bf16"),
];

/// Whether code for `isa` may use fused multiply-add instructions.
#[cfg(feature = "compiler")]
pub fn has_fma(isa: &dyn cranelift_codegen::isa::TargetIsa) -> bool {
    isa.isa_flags()
        .iter()
        .any(|f| f.name == "has_fma" && f.as_bool() == Some(true))
}

/// The features of x86-64-v2 (SSE4.2 and POPCNT), which `Host::portable` compiles for.
pub const PORTABLE: &[&str] = &[
    "has_sse3",
    "has_ssse3",
    "has_sse41",
    "has_sse42",
    "has_popcnt",
    "has_cmpxchg16b",
];

/// The prefix of every host fingerprint.
pub const ISA: &str = "x86_64";

/// Whether the running CPU has `feature` (a Rust feature name); `None` for a name this
/// runtime does not know.
pub fn detected(feature: &str) -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        // The macro wants a literal, hence one arm per feature.
        let d = match feature {
            "sse3" => std::is_x86_feature_detected!("sse3"),
            "ssse3" => std::is_x86_feature_detected!("ssse3"),
            "sse4.1" => std::is_x86_feature_detected!("sse4.1"),
            "sse4.2" => std::is_x86_feature_detected!("sse4.2"),
            "popcnt" => std::is_x86_feature_detected!("popcnt"),
            "cmpxchg16b" => std::is_x86_feature_detected!("cmpxchg16b"),
            "avx" => std::is_x86_feature_detected!("avx"),
            "avx2" => std::is_x86_feature_detected!("avx2"),
            "fma" => std::is_x86_feature_detected!("fma"),
            "bmi1" => std::is_x86_feature_detected!("bmi1"),
            "bmi2" => std::is_x86_feature_detected!("bmi2"),
            "lzcnt" => std::is_x86_feature_detected!("lzcnt"),
            "avxvnni" => std::is_x86_feature_detected!("avxvnni"),
            "avx512f" => std::is_x86_feature_detected!("avx512f"),
            "avx512vl" => std::is_x86_feature_detected!("avx512vl"),
            "avx512dq" => std::is_x86_feature_detected!("avx512dq"),
            "avx512bitalg" => std::is_x86_feature_detected!("avx512bitalg"),
            "avx512vbmi" => std::is_x86_feature_detected!("avx512vbmi"),
            "avx512vnni" => std::is_x86_feature_detected!("avx512vnni"),
            "f16c" => std::is_x86_feature_detected!("f16c"),
            "movbe" => std::is_x86_feature_detected!("movbe"),
            "avx512bw" => std::is_x86_feature_detected!("avx512bw"),
            "avx512cd" => std::is_x86_feature_detected!("avx512cd"),
            "avx512bf16" => std::is_x86_feature_detected!("avx512bf16"),
            _ => return None,
        };
        Some(d)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        FEATURES.iter().any(|(_, f)| *f == feature).then_some(false)
    }
}

/// The fingerprint for code compiled with the given enabled Cranelift flags.
pub fn fingerprint<'a>(enabled_flags: impl IntoIterator<Item = &'a str>) -> String {
    let enabled: Vec<&str> = enabled_flags.into_iter().collect();
    // Table order, not Cranelift's order, so the same features always print the same way.
    let names: Vec<&str> = FEATURES
        .iter()
        .filter(|(flag, _)| enabled.contains(flag))
        .map(|(_, name)| *name)
        .collect();
    format!("{ISA}:{}", names.join(","))
}

/// Checks that this CPU runs code with `fingerprint`; the error names what is missing.
pub fn check(fingerprint: &str) -> Result<(), String> {
    let features = match fingerprint.split_once(':') {
        Some((isa, rest)) if isa == ISA => rest,
        None if fingerprint == ISA => "",
        _ => {
            return Err(format!(
                "code was compiled for `{fingerprint}`, not for {ISA}"
            ))
        }
    };
    if !cfg!(target_arch = "x86_64") {
        return Err(format!(
            "code was compiled for {ISA}, and this CPU is not {ISA}"
        ));
    }
    let mut missing = Vec::new();
    for f in features.split(',').filter(|f| !f.is_empty()) {
        match detected(f) {
            Some(true) => {}
            Some(false) => missing.push(f),
            None => {
                return Err(format!(
                    "code needs CPU feature `{f}`, which this runtime does not know"
                ))
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "code needs CPU features this CPU lacks: {}",
            missing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_uses_rust_names_in_table_order() {
        assert_eq!(
            fingerprint(["has_sse42", "has_sse41", "has_avx"]),
            "x86_64:sse4.1,sse4.2,avx"
        );
        assert_eq!(fingerprint([]), "x86_64:");
    }

    #[test]
    fn check_refuses_other_isas_and_unknown_features() {
        assert_eq!(
            check("aarch64:neon").unwrap_err(),
            "code was compiled for `aarch64:neon`, not for x86_64"
        );
        assert_eq!(
            check("x86_64:sse4.1,teleport").unwrap_err(),
            "code needs CPU feature `teleport`, which this runtime does not know"
        );
        assert!(check("x86_64:").is_ok());
        assert!(check("x86_64").is_ok());
    }
}
