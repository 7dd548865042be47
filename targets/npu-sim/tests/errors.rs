//! Every hard error of the simulator, each asserting the error kind and the pc
//! it names; plus the sync model's visible effects on timing and on deadlock.

mod common;
use common::*;
use tessera_npu_sim::{
    assemble, run_kernel, DType, KernelArgs, Machine, Mem, Mode, NdArray, Pipe, SimError,
};

fn run(src: &str) -> Result<tessera_npu_sim::RunOutput, SimError> {
    run_kernel(src, &target(), &KernelArgs::default(), Mode::Cycle)
}

const SETUP: &str = "\
    LI r1, 0
    LI r3, 1
    LI r4, 16
";

#[test]
fn out_of_bounds_dma_names_pc_and_memory() {
    // L1 is 512 KiB: a 32-byte row at 512 KiB lies just past its end.
    let src = format!(
        "{SETUP}    LI r6, 524288\n    DMA GM->L1 f16 r6, r1, r3, r4, r4, r4, r3, r4\n    HALT\n"
    );
    match run(&src) {
        Err(SimError::OutOfBounds { pc, mem, addr, .. }) => {
            assert_eq!((pc, mem, addr), (4, "L1", 524288))
        }
        other => panic!("expected OutOfBounds, got {other:?}"),
    }
    // GM holds only the kernel's buffers: reading past them is an error too.
    let src = format!("{SETUP}    LI r6, 0\n    LI r1, 1000000\n    DMA GM->L1 f16 r6, r1, r3, r4, r4, r4, r3, r4\n    HALT\n");
    assert!(matches!(
        run(&src),
        Err(SimError::OutOfBounds {
            pc: 5,
            mem: "GM",
            ..
        })
    ));
}

#[test]
fn misaligned_access_names_pc() {
    // L1 needs 32-byte alignment.
    let src = format!(
        "{SETUP}    LI r6, 16\n    DMA GM->L1 f16 r6, r1, r3, r4, r4, r4, r3, r4\n    HALT\n"
    );
    match run(&src) {
        Err(SimError::Misaligned {
            pc,
            mem,
            addr,
            align,
            ..
        }) => assert_eq!((pc, mem, addr, align), (4, "L1", 16, 32)),
        other => panic!("expected Misaligned, got {other:?}"),
    }
    // MMA operands must sit on the L0A 512-byte boundary.
    let src = "LI r1, 1\nLI r2, 0\nLI r3, 256\nMMA f16->f32 r2, r3, r2, r1, r1, r1, r1\nHALT\n";
    assert!(matches!(
        run(src),
        Err(SimError::Misaligned {
            pc: 3,
            mem: "L0A",
            ..
        })
    ));
}

#[test]
fn uninitialised_l0c_read_names_pc() {
    // DMA out of L0C before any MMA wrote it.
    let src = format!(
        "{SETUP}    LI r6, 0\n    DMA L0C->GM f32 r1, r6, r3, r4, r4, r4, r3, r4\n    HALT\n"
    );
    match run(&src) {
        Err(SimError::UninitL0C { pc, addr, .. }) => assert_eq!((pc, addr), (4, 0)),
        other => panic!("expected UninitL0C, got {other:?}"),
    }
    // An accumulate (init = 0) onto accumulators nobody initialised.
    let src = "LI r1, 1\nLI r2, 0\nMMA f16->f32 r2, r2, r2, r1, r1, r1, r2\nHALT\n";
    assert!(matches!(run(src), Err(SimError::UninitL0C { pc: 2, .. })));
    // The same MMA with init set is fine, and so is reading it back afterwards.
    let src = "LI r1, 1\nLI r2, 0\nMMA f16->f32 r2, r2, r2, r1, r1, r1, r1\nMMA f16->f32 r2, r2, r2, r1, r1, r1, r2\nHALT\n";
    assert!(run(src).is_ok());
}

#[test]
fn unsatisfiable_wait_is_a_deadlock() {
    let src = "NOP\nWAIT_FLAG MTE2, CUBE, 0\nHALT\n";
    match run(src) {
        Err(SimError::Deadlock { pc, instr, .. }) => {
            assert_eq!((pc, instr.as_str()), (1, "WAIT_FLAG MTE2, CUBE, 0"))
        }
        other => panic!("expected Deadlock, got {other:?}"),
    }
    // A wait issued before its set is fine: the pipes run independently.
    assert!(run("WAIT_FLAG MTE1, MTE2, 0\nSET_FLAG MTE1, MTE2, 0\nHALT\n").is_ok());
    // ...unless the waiting pipe's queue fills up first, so the scalar unit
    // never reaches the set: a real hardware deadlock, found at the wait.
    let src = "WAIT_FLAG MTE1, MTE2, 0\nLI r1, 40\nl: SET_FLAG MTE2, MTE1, 1\nDBNZ r1, l\nSET_FLAG MTE1, MTE2, 0\nHALT\n";
    match run(src) {
        Err(SimError::Deadlock { pc, detail, .. }) => {
            assert_eq!(pc, 0);
            assert!(detail.contains("queue is full"), "{detail}");
        }
        other => panic!("expected Deadlock, got {other:?}"),
    }
}

#[test]
fn other_bad_programs_are_errors() {
    assert!(matches!(
        run("NOP\n"),
        Err(SimError::PcOutOfRange { pc: 1 })
    ));
    // No DMA edge GM->L0C exists on this target.
    let src = format!("{SETUP}    DMA GM->L0C f32 r1, r1, r3, r4, r4, r4, r3, r4\n    HALT\n");
    assert!(
        matches!(run(&src), Err(SimError::BadOperand { pc: 3, ref msg, .. }) if msg.contains("no DMA edge"))
    );
    // Casts only happen out of L0C.
    let src = format!("{SETUP}    DMA GM->L1 f32->f16 r1, r1, r3, r4, r4, r4, r3, r4\n    HALT\n");
    assert!(matches!(run(&src), Err(SimError::BadOperand { pc: 3, .. })));
    assert!(matches!(
        run("LI r1, 0\nLI r2, 5\nDIV r3, r2, r1\nHALT\n"),
        Err(SimError::BadOperand { pc: 2, .. })
    ));
    assert!(matches!(
        run("LI r1, -1\nLI r2, 1\nMMA f16->f32 r1, r2, r2, r2, r2, r2, r2\nHALT\n"),
        Err(SimError::BadOperand { pc: 2, .. })
    ));
    let t = target();
    let prog = assemble("l: JMP l\n").unwrap();
    let mut m = Machine::new(&t, 0, Mode::Functional).unwrap();
    m.max_steps = 1000;
    assert!(matches!(
        m.run(&prog),
        Err(SimError::StepLimit { pc: 0, limit: 1000 })
    ));
}

#[test]
fn vector_mask_selects_lanes() {
    let x: Vec<f32> = (0..8).map(|i| i as f32 - 3.0).collect();
    let src = "\
    LI r0, 0
    LI r3, 1
    LI r4, 8
    LI r5, 0x5          ; lanes 0 and 2
    DMA GM->UB f32 r0, r1, r3, r4, r4, r4, r3, r4
    SET_FLAG MTE2, VEC, 0
    WAIT_FLAG MTE2, VEC, 0
    VRELU f32 r0, r0, r4
    VADD f32 r0, r0, r0, r4, mask=r5
    SET_FLAG VEC, MTE3, 0
    WAIT_FLAG VEC, MTE3, 0
    DMA UB->GM f32 r2, r0, r3, r4, r4, r4, r3, r4
    HALT
";
    let args = KernelArgs::default()
        .input(1, NdArray::from_f32(&[8], &x))
        .output(2, NdArray::zeros(DType::F32, &[8]));
    let out = run_kernel(src, &target(), &args, Mode::Functional).unwrap();
    assert_eq!(
        out.output(2).unwrap().to_f32(),
        vec![0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0]
    );
}

#[test]
fn flags_serialise_pipes_in_the_cycle_count() {
    // A 16 KiB GM->L1 load (100 + 128 cycles) and a 4x4x4-tile MMA (8 + 64 cycles).
    let body = |sync: &str| {
        format!(
            "LI r0, 0\nLI r1, 1\nLI r2, 64\nLI r3, 128\nLI r4, 4\n\
             DMA GM->L1 f16 r0, r0, r3, r3, r3, r3, r3, r3\n{sync}\
             MMA f16->f32 r0, r0, r0, r4, r4, r4, r1\nHALT\n"
        )
    };
    let args = KernelArgs::default().input(5, NdArray::zeros(DType::F16, &[128, 128]));
    let go = |src: String| {
        let src = src.replace("DMA GM->L1 f16 r0, r0,", "DMA GM->L1 f16 r0, r5,");
        run_kernel(&src, &target(), &args, Mode::Cycle)
            .unwrap()
            .report
            .unwrap()
    };
    let free = go(body(""));
    let synced = go(body("SET_FLAG MTE2, CUBE, 0\nWAIT_FLAG MTE2, CUBE, 0\n"));
    let (dma, mma) = (100 + 128 * 128 * 2 / 128, 8 + 64);
    assert!(
        free.total_cycles < dma + mma,
        "independent pipes overlap: {}",
        free.total_cycles
    );
    assert!(
        synced.total_cycles >= dma + mma,
        "a flag serialises them: {}",
        synced.total_cycles
    );
    assert!(synced.pipe(Pipe::Cube).unwrap().stall > 0);
    assert_eq!(synced.edge(Mem::Gm, Mem::L1).unwrap().bytes, 128 * 128 * 2);
}

#[test]
fn scalar_loads_and_stores_check_memory_bounds_alignment_and_initialisation() {
    // UB bytes nothing wrote.
    match run("LI r1, 64\nLD UB i32 r2, r1, 0\nHALT\n") {
        Err(SimError::UninitRead {
            pc,
            mem,
            addr,
            ref instr,
        }) => {
            assert_eq!((pc, mem, addr), (1, "UB", 64));
            assert_eq!(instr, "LD UB i32 r2, r1, 0");
        }
        other => panic!("expected UninitRead, got {other:?}"),
    }
    // A store then a load round-trips, sign-extending i16 and zero-extending u16.
    let out =
        run("LI r1, -2\nST UB i16 r1, r0, 32\nLD UB i16 r2, r0, 32\nLD UB u16 r3, r0, 32\nHALT\n")
            .unwrap();
    assert_eq!((out.regs[2] as i64, out.regs[3]), (-2, 0xfffe));
    // Natural alignment only, but that one is enforced.
    match run("LI r1, 2\nST UB i32 r1, r1, 0\nHALT\n") {
        Err(SimError::Misaligned {
            pc,
            mem,
            addr,
            align,
            ..
        }) => assert_eq!((pc, mem, addr, align), (1, "UB", 2, 4)),
        other => panic!("expected Misaligned, got {other:?}"),
    }
    // Past the end of the UB (192 KiB), and below address 0.
    assert!(matches!(
        run("LI r1, 196608\nST UB u8 r1, r1, 0\nHALT\n"),
        Err(SimError::OutOfBounds {
            pc: 1,
            mem: "UB",
            ..
        })
    ));
    assert!(matches!(
        run("LI r1, 0\nLD GM u8 r2, r1, -1\nHALT\n"),
        Err(SimError::OutOfBounds {
            pc: 1,
            mem: "GM",
            ..
        })
    ));
    // The scalar unit reaches GM and UB only.
    match run("LI r1, 0\nLD L1 u8 r2, r1, 0\nHALT\n") {
        Err(SimError::BadOperand { pc, ref msg, .. }) => assert_eq!(
            (pc, msg.as_str()),
            (1, "the scalar unit reaches GM and UB, not L1")
        ),
        other => panic!("expected BadOperand, got {other:?}"),
    }
}

#[test]
fn new_alu_and_vector_ops_refuse_bad_operands() {
    // Unsigned division by zero faults; signed MIN / -1 wraps.
    match run("LI r1, 5\nLI r2, 0\nDIVU r3, r1, r2\nHALT\n") {
        Err(SimError::BadOperand { pc, ref msg, .. }) => {
            assert_eq!((pc, msg.as_str()), (2, "DIVU by zero"))
        }
        other => panic!("expected BadOperand, got {other:?}"),
    }
    let out = run("LI r1, 1\nSHLI r1, r1, 63\nLI r2, -1\nDIV r3, r1, r2\nREM r4, r1, r2\nSRAI r5, r2, 7\nHALT\n").unwrap();
    assert_eq!(
        (out.regs[3] as i64, out.regs[4], out.regs[5] as i64),
        (i64::MIN, 0, -1)
    );
    // A compare must write u8, and a VSEL condition must be initialised.
    let src = "LI r1, 0\nLI r2, 0\nST UB u64 r2, r1, 0\nST UB u64 r2, r1, 8\nLI r4, 4\nLI r5, 64\n\
               VCMPLT f32->f16 r5, r1, r1, r4\nHALT\n";
    match run(src) {
        Err(SimError::BadOperand { pc, ref msg, .. }) => assert_eq!(
            (pc, msg.as_str()),
            (6, "the Vector unit has no CMPLT on f32->f16")
        ),
        other => panic!("expected BadOperand, got {other:?}"),
    }
    let src = "LI r1, 0\nLI r2, 0\nST UB u64 r2, r1, 0\nST UB u64 r2, r1, 8\nLI r4, 4\nLI r5, 64\n\
               VSEL f32 r1, r1, r1, r4, cond=r5\nHALT\n";
    assert!(
        matches!(
            run(src),
            Err(SimError::UninitRead {
                pc: 6,
                mem: "UB",
                addr: 64,
                ..
            })
        ),
        "{:?}",
        run(src)
    );
}

#[test]
fn a_transposing_dma_off_the_l1_to_l0_edges_or_into_a_short_box_is_refused() {
    // GM->L1 cannot transpose.
    let src = format!(
        "{SETUP}    LI r6, 0\n    DMA GM->L1 f16 r6, r1, r3, r4, r4, r4, r3, r4, transpose\n    HALT\n"
    );
    match run(&src) {
        Err(SimError::BadOperand { pc, ref msg, .. }) => assert_eq!(
            (pc, msg.as_str()),
            (
                4,
                "DMA GM->L1 cannot transpose: only L1->L0A, L1->L0B and GM->UB do"
            )
        ),
        other => panic!("expected BadOperand, got {other:?}"),
    }
    // L1 -> L0B turned over: a 1 x 16 source needs a destination of at least 16 x 1.
    let src = format!(
        "{SETUP}    LI r6, 0\n    DMA GM->L1 f16 r6, r1, r3, r4, r4, r4, r3, r4\n    DMA L1->L0B f16 r6, r6, r3, r4, r4, r4, r3, r4, transpose\n    HALT\n"
    );
    match run(&src) {
        Err(SimError::BadOperand { pc, ref msg, .. }) => assert_eq!(
            (pc, msg.as_str()),
            (
                5,
                "transposed destination 1x16 is smaller than the source 1x16 turned over"
            )
        ),
        other => panic!("expected BadOperand, got {other:?}"),
    }
}

/// ISA 0.4's row forms: a 2 x 16 f32 block of ones at UB 64 (row stride 16), reduced by
/// `VREDSUM ..., rows=, stride=` into a column at UB 256 (results 32 bytes apart), then
/// multiplied back along its rows by `VMUL ..., row=`.
const ROWS: &str = "\
    LI r1, 0
    LI r2, 0x3f800000
    ST UB f32 r2, r1, 0
    LI r5, 64
    LI r6, 32
    LI r4, 16
    LI r7, 2
    LI r8, 256
    LI r9, 320
    VDUP f32 r5, r1, r6
";

#[test]
fn row_forms_reduce_and_broadcast_per_row_and_check_their_operands() {
    let src = format!(
        "{ROWS}    VREDSUM f32 r8, r5, r4, rows=r7, stride=r4\n    VMUL f32 r9, r5, r8, r6, row=r4\n    BARRIER\n    LD UB f32 r10, r8, 32\n    LD UB f32 r11, r9, 64\n    HALT\n"
    );
    let out = run(&src).unwrap();
    assert_eq!(f32::from_bits(out.regs[10] as u32), 16.0);
    assert_eq!(f32::from_bits(out.regs[11] as u32), 16.0);
    // One start-up each: VDUP 8 + 1, VREDSUM 8 + 2 rows x 1, VMUL 8 + 1, and the flag-free
    // VEC pipe does nothing else.
    let vec = out
        .report
        .unwrap()
        .pipes
        .iter()
        .find(|p| p.pipe == Pipe::Vec)
        .unwrap()
        .busy;
    assert_eq!(vec, 9 + 10 + 9);
    let bad = |tail: &str, pc: usize, want: &str| match run(&format!("{ROWS}{tail}    HALT\n")) {
        Err(SimError::BadOperand { pc: p, ref msg, .. }) => {
            assert_eq!((p, msg.as_str()), (pc, want))
        }
        other => panic!("expected BadOperand `{want}`, got {other:?}"),
    };
    bad(
        "    VREDSUM f32 r8, r5, r4, rows=r1, stride=r4\n",
        10,
        "a row reduction of zero rows",
    );
    bad(
        "    LI r12, 8\n    VREDMAX f32 r8, r5, r4, rows=r7, stride=r12\n",
        11,
        "row stride 8 is below the row length 16",
    );
    bad(
        "    VADD f32 r9, r5, r8, r6, row=r1\n",
        10,
        "a row-broadcast VEC with rows of 0 elements",
    );
    // Rows of 3 f32: the second row starts 12 bytes in, off the UB's 32-byte alignment.
    let src = format!(
        "{ROWS}    VREDSUM f32 r8, r5, r4, rows=r7, stride=r4\n    LI r12, 3\n    VADD f32 r9, r5, r8, r6, row=r12\n    HALT\n"
    );
    assert!(
        matches!(
            run(&src),
            Err(SimError::Misaligned {
                pc: 12,
                mem: "UB",
                ..
            })
        ),
        "{:?}",
        run(&src)
    );
    // The row form exists for binary arithmetic only.
    assert!(assemble("VSEL f32 r1, r2, r3, r4, row=r5").is_err());
    assert!(assemble("VEXP f32 r1, r2, r3, row=r5").is_err());
}

#[test]
fn vmadd_rounds_once_takes_a_scalar_addend_and_checks_its_multiplier() {
    // x = m = 1 + 2^-12: x·m = 1 + 2^-11 + 2^-24, a tie in f32 that rounds to 1 + 2^-11, so
    // x·m − (1 + 2^-11) is 2^-24 rounded once and 0 when the product is rounded first.
    let x = 1.0f32 + f32::EPSILON * 2048.0;
    let b = -(1.0f32 + f32::EPSILON * 4096.0);
    // UB: x at 0 (8 lanes), m at 32, the addends at 64, results at 128 and 160.
    let src = "\
    LI r0, 0
    LI r3, 1
    LI r4, 8
    LI r5, 32
    LI r6, 64
    LI r8, 128
    LI r9, 160
    LI r10, 24
    DMA GM->UB f32 r0, r1, r3, r10, r10, r10, r3, r10
    SET_FLAG MTE2, VEC, 0
    WAIT_FLAG MTE2, VEC, 0
    VMADD f32 r8, r0, r6, r4, mul=r5
    VMADDS f32 r9, r0, r6, r4, mul=r5
    SET_FLAG VEC, MTE3, 0
    WAIT_FLAG VEC, MTE3, 0
    LI r10, 16
    DMA UB->GM f32 r2, r8, r3, r10, r10, r10, r3, r10
    HALT
";
    let mut input = vec![x; 16];
    input.extend((0..8).map(|i| b - i as f32));
    let args = KernelArgs::default()
        .input(1, NdArray::from_f32(&[24], &input))
        .output(2, NdArray::zeros(DType::F32, &[16]));
    let out = run_kernel(src, &target(), &args, Mode::Cycle).unwrap();
    let got = out.output(2).unwrap().to_f32();
    let want: Vec<f32> = (0..8)
        .map(|i| x.mul_add(x, input[16 + i]))
        .chain((0..8).map(|_| x.mul_add(x, b)))
        .collect();
    assert_eq!(got, want);
    assert_eq!(got[0], f32::EPSILON / 2.0);
    assert_eq!(x * x + b, 0.0, "the unfused product and sum round twice");
    // A multiplier nothing wrote is an uninitialised read, named at its address.
    let bad = "LI r1, 0\nLI r2, 0\nST UB u64 r2, r1, 0\nST UB u64 r2, r1, 8\nLI r4, 4\nLI r5, 64\n\
               VMADD f32 r1, r1, r1, r4, mul=r5\nHALT\n";
    assert!(
        matches!(
            run(bad),
            Err(SimError::UninitRead {
                pc: 6,
                mem: "UB",
                addr: 64,
                ..
            })
        ),
        "{:?}",
        run(bad)
    );
    // A misaligned multiplier, and MADD on an integer dtype, are refused.
    let bad = "LI r1, 0\nLI r2, 0\nST UB u64 r2, r1, 0\nST UB u64 r2, r1, 8\nLI r4, 4\nLI r5, 4\n\
               VMADD f32 r1, r1, r1, r4, mul=r5\nHALT\n";
    assert!(
        matches!(run(bad), Err(SimError::Misaligned { pc: 6, .. })),
        "{:?}",
        run(bad)
    );
    let bad = "LI r1, 0\nLI r2, 0\nST UB u64 r2, r1, 0\nST UB u64 r2, r1, 8\nLI r4, 4\n\
               VMADD i32 r1, r1, r1, r4, mul=r1\nHALT\n";
    match run(bad) {
        Err(SimError::BadOperand { pc, ref msg, .. }) => assert_eq!(
            (pc, msg.as_str()),
            (5, "the Vector unit has no MADD on i32->i32")
        ),
        other => panic!("expected BadOperand, got {other:?}"),
    }
}
