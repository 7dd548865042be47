//! Tests of the verifier: one valid kernel, then one broken rule per test, each asserting the
//! error's message.

use super::*;
use crate::builder::KernelBuilder;

/// A valid kernel: y[i] = sum_j x[j] for i in 0..4, with a loop, an if and a vector.
fn good() -> Kernel {
    let mut b = KernelBuilder::new("good");
    let x = b.param("x", DType::F32, 4, Access::Read);
    let y = b.param("y", DType::F32, 4, Access::Write);
    let zero = b.const_float(Ty::F32, 0.0);
    let s = b.range_fold(0, 4, &[zero], |b, j, acc| {
        let v = b.load(x, j, 1);
        vec![b.add(acc[0], v)]
    })[0];
    let c = b.cmp(CmpOp::Gt, s, zero);
    let r = b.if_else(c, &[Ty::F32], |_| vec![s], |_| vec![zero])[0];
    let v = b.splat(r, 4);
    let at = b.index(0);
    b.store(y, at, v);
    b.finish()
}

fn err(k: &Kernel) -> String {
    verify(k).unwrap_err().to_string()
}

#[test]
fn a_well_formed_kernel_passes() {
    verify(&good()).unwrap();
}

#[test]
fn use_before_definition() {
    let mut k = good();
    // %0 is the literal 0.0; make it use the loop's result, defined later.
    k.body.insts.swap(0, 4);
    assert_eq!(err(&k), "kernel `good`: instruction #0 `%8 = for %4 = %1 to %2 step %3 iter(%5 = %0) : (f32) {`: uses %1 before it is defined");
}

#[test]
fn values_of_a_loop_body_are_not_visible_after_it() {
    let mut k = good();
    // Store the loaded value %6 (defined inside the loop body) after the loop.
    let last = k.body.insts.len() - 1;
    if let InstKind::Store { value, .. } = &mut k.body.insts[last].kind {
        *value = Val(6);
    }
    assert_eq!(
        err(&k),
        "kernel `good`: instruction #9 `store %6, %y[%12]`: uses %6 outside the block that defines it"
    );
    // The induction variable too.
    let mut k = good();
    if let InstKind::Store { index, .. } = &mut k.body.insts[last].kind {
        *index = Val(4);
    }
    assert!(
        err(&k).ends_with("uses %4 outside the block that defines it"),
        "{}",
        err(&k)
    );
}

#[test]
fn a_value_defined_twice() {
    let mut k = good();
    k.body.insts[1].results[0] = Val(0);
    assert_eq!(
        err(&k),
        "kernel `good`: instruction #1 `%0 = const 0 : f32`: defines %0 a second time"
    );
}

#[test]
fn binary_operands_must_agree() {
    let mut b = KernelBuilder::new("mix");
    let a = b.const_float(Ty::F32, 1.0);
    let i = b.index(1);
    b.binary(BinOp::Add, a, i);
    let k = b.finish();
    assert_eq!(
        err(&k),
        "kernel `mix`: instruction #2 `%2 = add %0, %1 : f32`: right operand is i64, expected f32"
    );
}

#[test]
fn shifts_are_for_ints_and_sqrt_for_floats() {
    let mut b = KernelBuilder::new("ops");
    let a = b.const_float(Ty::F32, 1.0);
    b.binary(BinOp::Shl, a, a);
    assert!(err(&b.finish()).ends_with("Shl is not defined on f32"));
    let mut b = KernelBuilder::new("ops");
    let a = b.index(4);
    b.unary(UnOp::Sqrt, a);
    assert!(err(&b.finish()).ends_with("Sqrt is not defined on i64"));
}

#[test]
fn store_value_must_match_the_buffer() {
    let mut b = KernelBuilder::new("st");
    let y = b.param("y", DType::F16, 4, Access::Write);
    let v = b.const_float(Ty::F32, 1.0);
    let i = b.index(0);
    b.store(y, i, v);
    assert_eq!(
        err(&b.finish()),
        "kernel `st`: instruction #2 `store %0, %y[%1]`: stores f32 into buffer `y` of f16"
    );
}

#[test]
fn store_into_a_read_only_parameter() {
    let mut b = KernelBuilder::new("ro");
    let y = b.param("y", DType::F32, 4, Access::Read);
    let v = b.const_float(Ty::F32, 1.0);
    let i = b.index(0);
    b.store(y, i, v);
    assert!(err(&b.finish()).ends_with("stores into read-only parameter `y`"));
}

#[test]
fn load_index_must_be_i64() {
    let mut b = KernelBuilder::new("ld");
    let x = b.param("x", DType::F32, 4, Access::Read);
    let i = b.const_int(Ty::scalar(DType::I32), 0);
    b.load(x, i, 1);
    assert!(err(&b.finish()).ends_with("index is i32, expected i64"));
}

#[test]
fn yield_must_match_the_loop() {
    let mut k = good();
    if let InstKind::For { body, .. } = &mut k.body.insts[4].kind {
        let last = body.insts.len() - 1;
        body.insts[last].kind = InstKind::Yield(vec![Val(4)]);
    }
    assert_eq!(err(&k), "kernel `good`: instruction #4 > body #2 `yield %4`: yielded value 0 (%4) is i64, expected f32");
}

#[test]
fn blocks_must_end_with_yield_and_yield_only_ends_blocks() {
    let mut k = good();
    if let InstKind::For { body, .. } = &mut k.body.insts[4].kind {
        body.insts.pop();
    }
    assert!(
        err(&k).ends_with("block does not end with yield"),
        "{}",
        err(&k)
    );
    let mut k = good();
    k.body.insts.push(Inst {
        results: vec![],
        kind: InstKind::Yield(vec![]),
    });
    assert!(
        err(&k).ends_with("yield outside a `for` body or `if` branch"),
        "{}",
        err(&k)
    );
}

#[test]
fn if_branches_must_yield_the_results() {
    let mut k = good();
    if let InstKind::If { else_blk, .. } = &mut k.body.insts[6].kind {
        else_blk.insts[0].kind = InstKind::Yield(vec![]);
    }
    assert!(
        err(&k).ends_with("yields 0 values but the block must yield 1"),
        "{}",
        err(&k)
    );
}

#[test]
fn kernel_level_rules() {
    let mut k = good();
    k.grid = vec![1, 1, 1, 1];
    assert_eq!(
        err(&k),
        "kernel `good`: grid has 4 axes; at most 3 are allowed"
    );
    let mut k = good();
    k.bufs[0].dtype = DType::String;
    assert!(err(&k).contains("has dtype string"));
    let mut k = good();
    k.bufs[1].name = "x".into();
    assert!(err(&k).contains("two buffers are named `x`"));
    let mut k = good();
    k.bufs.push(BufDecl {
        name: "g".into(),
        space: Space::Global,
        dtype: DType::F32,
        len: 1,
        access: Access::ReadWrite,
    });
    assert!(err(&k).contains("local buffer `g` is global"));
    let mut k = good();
    k.num_params = 5;
    assert!(err(&k).contains("num_params 5 exceeds"));
}

#[test]
fn buffer_ids_and_value_ids_are_checked() {
    let mut k = good();
    if let InstKind::Store { buf, .. } = &mut k.body.insts[9].kind {
        *buf = Buf(7);
    }
    assert!(
        err(&k).ends_with("names buffer 7 but the kernel has 2"),
        "{}",
        err(&k)
    );
    let mut k = good();
    if let InstKind::Store { value, .. } = &mut k.body.insts[9].kind {
        *value = Val(99);
    }
    assert!(
        err(&k).ends_with("uses %99, which is not in the value table"),
        "{}",
        err(&k)
    );
}

#[test]
fn mma_dtypes_must_match_buffers() {
    let mut b = KernelBuilder::new("mma");
    let a = b.param("a", DType::F16, 4, Access::Read);
    let c = b.param("c", DType::F32, 4, Access::ReadWrite);
    let z = b.index(0);
    let t = |buf| TileRef {
        buf,
        offset: z,
        row_stride: 2,
        col_stride: 1,
    };
    b.mma(t(a), t(a), t(c), 2, 2, 2);
    let mut k = b.finish();
    verify(&k).unwrap();
    if let InstKind::Mma { b_ty, .. } = &mut k.body.insts[1].kind {
        *b_ty = DType::BF16;
    }
    assert!(
        err(&k).ends_with("b is declared bf16 but buffer `a` holds f16"),
        "{}",
        err(&k)
    );
}

#[test]
fn select_and_vector_lanes() {
    let mut b = KernelBuilder::new("sel");
    let c = b.const_int(Ty::vector(DType::Bool, 2), 1);
    let v = b.const_float(Ty::vector(DType::F32, 4), 1.0);
    b.select(c, v, v);
    assert!(err(&b.finish()).ends_with("condition is vec<2xbool>; expected bool or vec<4xbool>"));
    let mut b = KernelBuilder::new("ext");
    let v = b.const_float(Ty::vector(DType::F32, 4), 1.0);
    b.extract(v, 4);
    assert!(err(&b.finish()).ends_with("extracts lane 4 of vec<4xf32>"));
}

#[test]
fn loads_and_stores_may_use_the_storage_view() {
    let mut b = KernelBuilder::new("view");
    let h = b.param("h", DType::F16, 4, Access::ReadWrite);
    let q = b.param("q", DType::I4, 5, Access::ReadWrite);
    let i = b.index(0);
    let bits = b.emit_inst(
        InstKind::Load { buf: h, index: i },
        &[Ty::vector(DType::U16, 4)],
    )[0];
    b.store(h, i, bits);
    let byte = b.emit_inst(
        InstKind::Load { buf: q, index: i },
        &[Ty::scalar(DType::U8)],
    )[0];
    b.store(q, i, byte);
    let k = b.finish();
    verify(&k).unwrap();
    // A view that is not the dtype's storage view is refused.
    let mut k2 = k.clone();
    k2.vals[1] = Ty::vector(DType::I16, 4);
    assert!(
        err(&k2).ends_with("loads vec<4xi16> from buffer `h` of f16"),
        "{}",
        err(&k2)
    );
    // Byte views count bytes: 5 nibbles are 3 bytes, so byte 3 is out of bounds.
    let mut hb = vec![0u8; 8];
    let mut qb = vec![0x21u8, 0x43, 0x05];
    crate::interp::run_kernel(&k, &mut [&mut hb, &mut qb]).unwrap();
    assert_eq!(qb, vec![0x21, 0x43, 0x05]);
}
