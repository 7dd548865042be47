//! Tests of the text format: exact round trips, literal spelling, errors with positions, and
//! no panics on truncated or mangled text.

use super::*;
use crate::testutil::kitchen_sink;

fn round_trip(k: &Kernel) -> String {
    let t = print_kernel(k);
    let back = match parse_kernel(&t) {
        Ok(b) => b,
        Err(e) => panic!("{e}\n{t}"),
    };
    // Debug, not ==, because a NaN literal is not == to itself (its bits are checked by the
    // printed text being identical).
    assert!(
        format!("{back:?}") == format!("{k:?}"),
        "parse(print(k)) differs from k:\n{t}"
    );
    assert_eq!(print_kernel(&back), t);
    t
}

#[test]
fn kitchen_sink_round_trips_exactly() {
    let k = kitchen_sink();
    crate::verify::verify(&k).unwrap();
    let t = round_trip(&k);
    assert!(t.contains("const nan(0x7ff8000000000001) : f32"), "{t}");
    assert!(t.contains("const 1e-40 : f32"), "{t}");
    assert!(t.contains("const -0.0 : f32"), "{t}");
    assert!(t.contains("const -inf : f64"), "{t}");
    assert!(t.contains("const 0.3333333333333333 : f64"), "{t}");
    assert!(t.contains("%\"h.in/0\": global f16[16] read"), "{t}");
    assert!(
        t.contains("local %\"priv \\\"q\\\"\": local i32[4] readwrite"),
        "{t}"
    );
    assert!(t.contains("cast sat"), "{t}");
    assert!(t.contains(" : f32 x f32 -> f32"), "{t}");
}

#[test]
fn the_printed_form_reads_as_documented() {
    let mut b = crate::KernelBuilder::new("add");
    let x = b.param("x", DType::F32, 24, Access::Read);
    let y = b.param("y", DType::F32, 24, Access::Write);
    b.set_grid(&[2]);
    let p = b.program_id(0);
    let n = b.index(12);
    let base = b.mul(p, n);
    let z = b.const_float(Ty::F32, 0.0);
    b.range_fold(0, 12, &[z], |b, i, acc| {
        let at = b.add(base, i);
        let v = b.load(x, at, 1);
        let s = b.add(acc[0], v);
        b.store(y, at, s);
        vec![s]
    });
    let k = b.finish();
    let expect = "\
kernel @add(%x: global f32[24] read, %y: global f32[24] write) grid [2] {
  %0 = program_id 0 : i64
  %1 = const 12 : i64
  %2 = mul %0, %1 : i64
  %3 = const 0.0 : f32
  %4 = const 0 : i64
  %5 = const 12 : i64
  %6 = const 1 : i64
  %12 = for %7 = %4 to %5 step %6 iter(%8 = %3) : (f32) {
    %9 = add %2, %7 : i64
    %10 = load %x[%9] : f32
    %11 = add %8, %10 : f32
    store %11, %y[%9]
    yield %11
  }
}
";
    assert_eq!(round_trip(&k), expect);
}

#[test]
fn programs_of_several_kernels() {
    let ks = vec![kitchen_sink(), kitchen_sink()];
    let t = print_program(&ks);
    let back = parse_program(&t).unwrap();
    assert_eq!(format!("{back:?}"), format!("{ks:?}"));
    assert_eq!(print_program(&back), t);
    let e = parse_kernel(&t).unwrap_err();
    assert_eq!(e.to_string(), "1:1: expected one kernel, found 2");
}

#[test]
fn comments_and_whitespace_are_ignored() {
    let src = "// a comment\nkernel @k() grid [] { // trailing\n  %0 = const 1 : i32\n}\n";
    let k = parse_kernel(src).unwrap();
    assert_eq!(
        print_kernel(&k),
        "kernel @k() grid [] {\n  %0 = const 1 : i32\n}\n"
    );
}

fn perr(src: &str) -> String {
    parse_kernel(src).unwrap_err().to_string()
}

#[test]
fn errors_have_positions() {
    assert_eq!(
        perr("kernel @k() grid [] {\n  %0 = frob 1 : i32\n}"),
        "2:8: unknown instruction `frob`"
    );
    assert_eq!(
        perr("kernel @k() grid [] {\n  %0 = const 1 : f33\n}"),
        "2:18: unknown dtype `f33`"
    );
    assert_eq!(perr("kernel @k(%x: global f32[4] read) grid [] {\n  %0 = const 0 : i64\n  %1 = load %z[%0] : f32\n}"), "3:13: unknown buffer `%z`");
    assert_eq!(
        perr("kernel @k() grid [] {\n  %0 = const 1 : i32\n"),
        "3:1: expected `}`, found end of input"
    );
    assert_eq!(
        perr("kernel @k() grid [] { %0 = const 1 # : i32 }"),
        "1:36: unexpected character `#`"
    );
    assert_eq!(
        perr("kernel @k() grid [] { %0 = const 1x : i32 }"),
        "1:34: bad literal `1x`"
    );
    assert_eq!(
        perr("kernel @k() grid [] { %0 = const nan : f32 }"),
        "1:38: expected `(`, found `:`"
    );
    // Verifier errors come through with the kernel and instruction.
    assert_eq!(
        perr("kernel @k() grid [] {\n  %1 = add %0, %0 : f32\n}"),
        "kernel `k`: instruction #0 `%1 = add %0, %0 : f32`: uses %0 before it is defined"
    );
}

#[test]
fn absurd_input_is_refused_without_panic() {
    assert!(
        perr("kernel @k() grid [] { %99999999999 = const 1 : i32 }").contains("expected a value")
    );
    assert!(perr("kernel @k() grid [] { %16777216 = const 1 : i32 }").contains("too large"));
    let deep = format!(
        "kernel @k() grid [] {{ %0 = const true : bool {} }}",
        "if %0 { ".repeat(1000)
    );
    assert!(perr(&deep).contains("bad literal") || perr(&deep).contains("nest"));
    let deep = format!(
        "kernel @k() grid [] {{ %0 = const 1 : bool {} }}",
        "if %0 { ".repeat(1000)
    );
    assert!(
        perr(&deep).contains("blocks nest deeper than 200"),
        "{}",
        perr(&deep)
    );
}

/// A tiny deterministic generator for the fuzz tests (no dependency needed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn truncations_and_mutations_never_panic() {
    let t = print_program(&[kitchen_sink()]);
    let chars: Vec<char> = t.chars().collect();
    for n in 0..chars.len() {
        let s: String = chars[..n].iter().collect();
        // Every proper prefix is rejected: the kernel's closing brace is the last token.
        assert!(
            parse_program(&s).is_err() || s.trim().is_empty() || n + 1 >= chars.len(),
            "prefix {n} parsed"
        );
    }
    let mut rng = Lcg(7);
    let alphabet: Vec<char> = "%@{}[](),:=<>-x0123456789abcfgiklmnoprstuvxy \n\"\\."
        .chars()
        .collect();
    for _ in 0..3000 {
        let mut c = chars.clone();
        for _ in 0..1 + rng.next() % 4 {
            let i = (rng.next() as usize) % c.len();
            match rng.next() % 3 {
                0 => {
                    c.remove(i);
                }
                1 => c.insert(i, alphabet[(rng.next() as usize) % alphabet.len()]),
                _ => c[i] = alphabet[(rng.next() as usize) % alphabet.len()],
            }
        }
        let s: String = c.into_iter().collect();
        if let Ok(ks) = parse_program(&s) {
            // Whatever parses must print and parse back to the same thing.
            let again = parse_program(&print_program(&ks)).unwrap();
            assert!(format!("{again:?}") == format!("{ks:?}"));
        }
    }
}
