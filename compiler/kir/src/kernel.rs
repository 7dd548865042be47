//! The kernel IR data structures: a [`Kernel`] is a function over buffers with a launch grid,
//! whose body is a tree of structured blocks of SSA instructions. Read this file top to bottom;
//! the semantics of every instruction are stated on its variant.

use std::fmt;
use tessera_ir::DType;

/// Where a buffer lives. Global memory is visible to every program instance and to the host;
/// shared is an on-chip scratchpad private to one program instance (L1/UB on an NPU, shared
/// memory on a GPU); local is per-lane private memory (registers or stack).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    Global,
    Shared,
    Local,
}

impl Space {
    pub fn name(self) -> &'static str {
        match self {
            Space::Global => "global",
            Space::Shared => "shared",
            Space::Local => "local",
        }
    }
}

/// How a kernel uses a buffer parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

/// The type of an SSA value: an element dtype and a lane count (1 = scalar). Every dtype but
/// `string` may be a value type. Indices are `i64` scalars.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ty {
    pub elem: DType,
    pub lanes: u16,
}

impl Ty {
    pub const INDEX: Ty = Ty {
        elem: DType::I64,
        lanes: 1,
    };
    pub const BOOL: Ty = Ty {
        elem: DType::Bool,
        lanes: 1,
    };
    pub const F32: Ty = Ty {
        elem: DType::F32,
        lanes: 1,
    };

    pub fn scalar(elem: DType) -> Ty {
        Ty { elem, lanes: 1 }
    }

    pub fn vector(elem: DType, lanes: u16) -> Ty {
        Ty { elem, lanes }
    }

    pub fn is_vector(self) -> bool {
        self.lanes > 1
    }

    /// The same lane count with another element type.
    pub fn with_elem(self, elem: DType) -> Ty {
        Ty {
            elem,
            lanes: self.lanes,
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lanes == 1 {
            write!(f, "{}", self.elem)
        } else {
            write!(f, "vec<{}x{}>", self.lanes, self.elem)
        }
    }
}

/// An SSA value, index into [`Kernel::vals`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Val(pub u32);

/// A buffer, index into [`Kernel::bufs`] (parameters first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Buf(pub u32);

/// A buffer declaration: a parameter (bound at launch) or a local scratch buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct BufDecl {
    pub name: String,
    pub space: Space,
    pub dtype: DType,
    /// Length in elements.
    pub len: u64,
    pub access: Access,
}

impl BufDecl {
    /// The number of elements of type `elem` a load or store sees in this buffer: `len` when
    /// `elem` is the buffer's dtype; when `elem` is the dtype's storage view (see
    /// [`storage_view`]), `len` for f16/bf16/float8 and the byte count for sub-byte dtypes;
    /// `None` when the buffer cannot be accessed as `elem`.
    pub fn view_len(&self, elem: DType) -> Option<u64> {
        if elem == self.dtype {
            Some(self.len)
        } else if storage_view(self.dtype) == Some(elem) {
            Some(if self.dtype.is_sub_byte() {
                self.dtype.storage_bytes(self.len)
            } else {
                self.len
            })
        } else {
            None
        }
    }
}

/// The unsigned integer type through which a buffer of `dtype` may also be accessed: `u16` for
/// f16 and bf16 (their bit patterns), `u8` for the float8 formats (theirs) and for sub-byte
/// dtypes (their packed bytes). `None` for dtypes a backend handles directly.
pub fn storage_view(dtype: DType) -> Option<DType> {
    match dtype {
        DType::F16 | DType::BF16 => Some(DType::U16),
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ => Some(DType::U8),
        d if d.is_sub_byte() => Some(DType::U8),
        _ => None,
    }
}

/// A kernel: buffer parameters, local buffers, a launch grid and a body.
///
/// The body runs once per point of the grid (`grid` empty means once). Program instances may
/// run in any order or in parallel, so two instances never write the same element.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: String,
    /// Parameters (`bufs[..num_params]`) then local buffers.
    pub bufs: Vec<BufDecl>,
    pub num_params: usize,
    /// Launch grid extents, at most 3 axes.
    pub grid: Vec<u64>,
    pub body: Block,
    /// The type of every SSA value, indexed by [`Val`].
    pub vals: Vec<Ty>,
}

impl Kernel {
    pub fn ty(&self, v: Val) -> Ty {
        self.vals[v.0 as usize]
    }

    pub fn buf(&self, b: Buf) -> &BufDecl {
        &self.bufs[b.0 as usize]
    }

    pub fn params(&self) -> &[BufDecl] {
        &self.bufs[..self.num_params]
    }
}

/// A straight-line sequence of instructions. Blocks nest inside `for` and `if`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Block {
    pub insts: Vec<Inst>,
}

/// One instruction and the values it defines.
#[derive(Clone, Debug, PartialEq)]
pub struct Inst {
    pub results: Vec<Val>,
    pub kind: InstKind,
}

/// A literal. The result type says how to read it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// Integers and bools, as the two's-complement bit pattern sign-extended to 64 bits.
    Int(i64),
    /// Floats of every width; narrow formats take the value rounded to nearest even.
    Float(f64),
}

/// Unary ops. Float ops follow IEEE 754; integer ops wrap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    Neg,
    /// |x|; for signed ints, |MIN| wraps to MIN.
    Abs,
    /// Bitwise not for ints, logical not for bool.
    Not,
    Sqrt,
    Floor,
    Ceil,
    /// Round half to even.
    Round,
    /// Round toward zero.
    Trunc,
}

/// Binary ops; both operands have the result's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    /// Float: IEEE. Int: truncating; division by zero gives 0, and MIN / -1 gives MIN.
    Div,
    /// Float: C `fmod` (sign of the dividend). Int: truncating remainder; x % 0 gives 0.
    Rem,
    /// Float min/max propagate NaN (NaN if either operand is NaN).
    Min,
    Max,
    /// Bitwise for ints, logical for bool.
    And,
    Or,
    Xor,
    /// Shifts by an amount taken modulo the bit width; `Shr` is arithmetic for signed ints.
    Shl,
    Shr,
}

/// Comparisons. The result is `bool` with the operands' lane count. Float comparisons are
/// ordered: any comparison with NaN is false, except `Ne`, which is true.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Lane reductions of a vector into a scalar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Add,
    Mul,
    Min,
    Max,
}

/// Math routines. Their meaning is the correctly rounded mathematical function (the
/// interpreter evaluates them with the platform's libm in f64); backends get them from the
/// shared `expand-math` pass, which rewrites each into primitive instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MathFn {
    Exp,
    Log,
    /// pow(x, y), two operands.
    Pow,
    Tanh,
    Erf,
    Sigmoid,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
}

impl MathFn {
    pub const ALL: [MathFn; 17] = [
        MathFn::Exp,
        MathFn::Log,
        MathFn::Pow,
        MathFn::Tanh,
        MathFn::Erf,
        MathFn::Sigmoid,
        MathFn::Sin,
        MathFn::Cos,
        MathFn::Tan,
        MathFn::Asin,
        MathFn::Acos,
        MathFn::Atan,
        MathFn::Sinh,
        MathFn::Cosh,
        MathFn::Asinh,
        MathFn::Acosh,
        MathFn::Atanh,
    ];

    pub fn arity(self) -> usize {
        if self == MathFn::Pow {
            2
        } else {
            1
        }
    }
}

/// Rounding and overflow behaviour of a cast.
///
/// Fixed rules, whatever the mode: int→float and float→float round to nearest even;
/// float→int truncates toward zero, saturates at the integer range, and sends NaN to 0;
/// int→int wraps (keeps the low bits); anything→bool is `x != 0`; bool→anything is 0 or 1.
/// `saturate` matters only for casts into the float8/float4 formats: with it, values past the
/// largest finite one clamp to it (ONNX `Cast(saturate=1)`); without it they become inf where
/// the format has one, else NaN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CastMode {
    pub saturate: bool,
}

/// A 2-D tile in a buffer: element (r, c) lives at `offset + r*row_stride + c*col_stride`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TileRef {
    pub buf: Buf,
    pub offset: Val,
    pub row_stride: i64,
    pub col_stride: i64,
}

/// The instruction set.
#[derive(Clone, Debug, PartialEq)]
pub enum InstKind {
    /// A literal of the result type (vector results splat it).
    Const(Scalar),
    /// The index of this program instance along grid axis `n` (an `i64`).
    ProgramId(u8),
    Unary(UnOp, Val),
    Binary(BinOp, Val, Val),
    Cmp(CmpOp, Val, Val),
    /// `cond ? a : b`, lane-wise when `cond` is a vector.
    Select(Val, Val, Val),
    /// Converts to the result type, see [`CastMode`].
    Cast(Val, CastMode),
    /// Reinterprets the bits as the result type, which has the same total width.
    Bitcast(Val),
    /// Broadcasts a scalar to every lane of the vector result.
    Splat(Val),
    /// Lane `n` of a vector.
    Extract(Val, u16),
    ReduceLanes(ReduceOp, Val),
    Math(MathFn, Vec<Val>),
    /// Reads `lanes` consecutive elements starting at element `index` (an `i64`). Reading out
    /// of bounds is an error in the interpreter and undefined on a backend; lowering guards.
    ///
    /// The result's element type is the buffer's dtype, or the buffer's *storage view* (see
    /// [`BufDecl::view_len`]): f16/bf16 buffers may be read as `u16` bit patterns, float8 ones
    /// as `u8`, and sub-byte ones (i4, u4, i2, u2, f4e2m1) as `u8` bytes, in which case `index`
    /// counts bytes. The `legalize-low-precision` pass produces such accesses.
    Load {
        buf: Buf,
        index: Val,
    },
    /// Writes `value` (scalar or vector) at element `index` onward. Like `load`, it may write
    /// the buffer's storage view.
    Store {
        buf: Buf,
        index: Val,
        value: Val,
    },
    /// `for iv = lo; iv < hi; iv += step` (all `i64`, `step > 0`). `iter` are the body's
    /// loop-carried parameters, initialised from `init`; the body ends with `Yield` of their
    /// next values, and the instruction's results are their final values.
    For {
        lo: Val,
        hi: Val,
        step: Val,
        iv: Val,
        iter: Vec<Val>,
        init: Vec<Val>,
        body: Block,
    },
    /// Both blocks end with `Yield` of one value per result.
    If {
        cond: Val,
        then_blk: Block,
        else_blk: Block,
    },
    /// Ends a `for` body or an `if` branch.
    Yield(Vec<Val>),
    /// Tile multiply-accumulate: `C[m×n] += A[m×k] · B[k×n]` with products formed exactly
    /// and accumulated in `acc` in increasing k order. `a`, `b` and `acc` name the element
    /// types, which must match the buffers'; targets refuse pairs their matrix unit lacks.
    Mma {
        a: TileRef,
        b: TileRef,
        c: TileRef,
        m: u32,
        n: u32,
        k: u32,
        a_ty: DType,
        b_ty: DType,
        acc: DType,
    },
}
