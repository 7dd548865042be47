//! Which x86_64 features `llvm-x86_64` code may use: this CPU's ([`Level::Native`]) or a
//! portable x86-64 level chosen at compile time (`--cpu x86-64-v3`). The features are written
//! in the fingerprint with the names of the host target's table
//! ([`tessera_host::cpu::FEATURES`]), so the one CPU runtime checks both targets' artifacts and
//! a CPU lacking one is refused at load with the feature named, never run into SIGILL.
//!
//! LLVM is given exactly these features on the baseline `x86-64` CPU (the host's model name
//! only tunes scheduling), so the code uses nothing the fingerprint does not list.

use tessera_host::cpu as host_cpu;

/// The x86-64 micro-architecture levels (psABI), each adding to the one before.
const V2: &[&str] = &["sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "cmpxchg16b"];
const V3: &[&str] = &[
    "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "lzcnt", "movbe",
];
const V4: &[&str] = &["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"];

/// What code is compiled for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Level {
    /// This CPU: every feature of the host table it has.
    Native(Vec<&'static str>),
    /// A psABI level, 2 to 4.
    Portable(u8),
}

impl Level {
    /// `native`, `x86-64-v2`, `x86-64-v3` or `x86-64-v4`.
    pub fn parse(name: &str) -> Result<Level, String> {
        match name {
            "native" => Ok(Level::Native(
                host_cpu::FEATURES
                    .iter()
                    .map(|(_, f)| *f)
                    .filter(|f| host_cpu::detected(f) == Some(true))
                    .collect(),
            )),
            "x86-64-v2" => Ok(Level::Portable(2)),
            "x86-64-v3" => Ok(Level::Portable(3)),
            "x86-64-v4" => Ok(Level::Portable(4)),
            other => Err(format!(
                "unknown CPU `{other}` (expected native, x86-64-v2, x86-64-v3 or x86-64-v4)"
            )),
        }
    }

    /// The features enabled, as the host table names them, in its order.
    pub fn features(&self) -> Vec<&'static str> {
        match self {
            Level::Native(f) => f.clone(),
            Level::Portable(n) => {
                let mut want: Vec<&str> = V2.to_vec();
                if *n >= 3 {
                    want.extend(V3);
                }
                if *n >= 4 {
                    want.extend(V4);
                }
                host_cpu::FEATURES
                    .iter()
                    .map(|(_, f)| *f)
                    .filter(|f| want.contains(f))
                    .collect()
            }
        }
    }

    /// Whether the level has feature `f` (a host-table name).
    pub fn has(&self, f: &str) -> bool {
        self.features().contains(&f)
    }

    /// The fingerprint the host runtime checks: `x86_64:sse3,…`.
    pub fn fingerprint(&self) -> String {
        format!("{}:{}", host_cpu::ISA, self.features().join(","))
    }

    /// LLVM's feature string: `+name` for each feature (LLVM spells two of them otherwise).
    pub fn llvm_features(&self) -> String {
        self.features()
            .iter()
            .map(|f| match *f {
                "bmi1" => "+bmi".to_string(),
                "cmpxchg16b" => "+cx16".to_string(),
                other => format!("+{other}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The CPU LLVM tunes scheduling for: this one when native, a generic one otherwise.
    pub fn tune_cpu(&self) -> String {
        match self {
            Level::Native(_) => inkwell::targets::TargetMachine::get_host_cpu_name().to_string(),
            Level::Portable(_) => "generic".to_string(),
        }
    }

    /// Bytes of the widest vector register.
    pub fn vector_bytes(&self) -> u32 {
        if self.has("avx512f") {
            64
        } else if self.has("avx") {
            32
        } else {
            16
        }
    }

    /// How many vector registers the register allocator has.
    pub fn vector_registers(&self) -> u32 {
        if self.has("avx512f") {
            32
        } else {
            16
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_name_their_features_in_table_order() {
        let v3 = Level::parse("x86-64-v3").unwrap();
        assert_eq!(
            v3.fingerprint(),
            "x86_64:sse3,ssse3,sse4.1,sse4.2,popcnt,cmpxchg16b,avx,avx2,fma,bmi1,bmi2,lzcnt,f16c,movbe"
        );
        assert!(v3.llvm_features().contains("+bmi,"));
        assert!(v3.llvm_features().contains("+cx16"));
        assert_eq!(v3.vector_bytes(), 32);
        assert_eq!(Level::parse("x86-64-v4").unwrap().vector_bytes(), 64);
        assert_eq!(
            Level::parse("pentium").unwrap_err(),
            "unknown CPU `pentium` (expected native, x86-64-v2, x86-64-v3 or x86-64-v4)"
        );
        // Every level's fingerprint is one the host runtime knows how to check.
        for l in ["x86-64-v2", "x86-64-v3", "x86-64-v4", "native"] {
            let fp = Level::parse(l).unwrap().fingerprint();
            if let Err(e) = host_cpu::check(&fp) {
                assert!(
                    e.starts_with("code needs CPU features this CPU lacks"),
                    "{l}: {e}"
                );
            }
        }
    }
}
