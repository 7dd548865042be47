//! The kernel IR data structures: a [`Kernel`] is a function over buffers with a launch grid,
//! whose body is a tree of structured blocks of SSA instructions. Read this file top to bottom;
//! the semantics of every instruction are stated on its variant.

use std::fmt;
use tessera_ir::DType;

/// Where a buffer lives. Global memory is visible to every program instance and to the host;
/// shared is an on-chip scratchpad private to one program instance (L1/UB on an NPU, shared
/// memory on a GPU); local is per-lane private memory (registers or stack); acc is accumulator
/// memory next to a matrix unit (L0C on an NPU, accumulator registers on a GPU or CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    Global,
    Shared,
    Local,
    Acc,
}

impl Space {
    pub fn name(self) -> &'static str {
        match self {
            Space::Global => "global",
            Space::Shared => "shared",
            Space::Local => "local",
            Space::Acc => "acc",
        }
    }
}

/// Where a tile value is meant to live: a placement hint for backends, never a change of
/// meaning. Operands of tile instructions may have any role; `tile.mma` accumulates in (and
/// returns) an `acc` tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Role {
    /// Registers (a CPU's vector registers, a GPU's fragments, an NPU's UB).
    #[default]
    Reg,
    /// An on-chip scratchpad (shared memory, L1).
    Scratch,
    /// Matrix-unit accumulators (L0C, tensor-core accumulators).
    Acc,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Reg => "reg",
            Role::Scratch => "scratch",
            Role::Acc => "acc",
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

impl Access {
    /// The access mode as the text format writes it.
    pub fn name(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::ReadWrite => "readwrite",
        }
    }
}

/// The type of an SSA value: a scalar, a vector of `lanes` elements, or a 2-D tile of `rows` ×
/// `lanes` elements (`rows > 0`; `lanes` is then the column count). Every dtype but `string`
/// may be a value type. Indices are `i64` scalars.
///
/// A tile is a value like any other: it lives wherever its backend puts it (registers, a
/// scratchpad, accumulators — `role` says which is intended), and elementwise instructions
/// apply to it lane by lane. Tiles are stored row-major, element (r, c) at position
/// `r * cols + c`, wherever a position matters (`extract`, the interpreter's registers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ty {
    pub elem: DType,
    pub lanes: u16,
    /// 0 for scalars and vectors; the row count of a tile.
    pub rows: u16,
    pub role: Role,
}

impl Ty {
    pub const INDEX: Ty = Ty::scalar(DType::I64);
    pub const BOOL: Ty = Ty::scalar(DType::Bool);
    pub const F32: Ty = Ty::scalar(DType::F32);

    pub const fn scalar(elem: DType) -> Ty {
        Ty {
            elem,
            lanes: 1,
            rows: 0,
            role: Role::Reg,
        }
    }

    pub const fn vector(elem: DType, lanes: u16) -> Ty {
        Ty {
            elem,
            lanes,
            rows: 0,
            role: Role::Reg,
        }
    }

    /// A `rows × cols` tile in registers.
    pub const fn tile(elem: DType, rows: u16, cols: u16) -> Ty {
        Ty {
            elem,
            lanes: cols,
            rows,
            role: Role::Reg,
        }
    }

    pub fn is_vector(self) -> bool {
        self.rows == 0 && self.lanes > 1
    }

    pub fn is_tile(self) -> bool {
        self.rows > 0
    }

    /// A single element: neither a vector nor a tile.
    pub fn is_scalar(self) -> bool {
        self.rows == 0 && self.lanes == 1
    }

    /// Rows and columns of a tile; `None` for scalars and vectors.
    pub fn tile_shape(self) -> Option<(u32, u32)> {
        self.is_tile()
            .then_some((self.rows as u32, self.lanes as u32))
    }

    /// The number of elements the value holds: 1, the lane count, or rows × columns.
    pub fn count(self) -> u32 {
        if self.rows > 0 {
            self.rows as u32 * self.lanes as u32
        } else {
            self.lanes as u32
        }
    }

    /// The same shape (and role) with another element type.
    pub fn with_elem(self, elem: DType) -> Ty {
        Ty { elem, ..self }
    }

    /// The same type with another role.
    pub fn with_role(self, role: Role) -> Ty {
        Ty { role, ..self }
    }

    /// Whether two types agree in element type and shape, whatever their roles.
    pub fn same_shape(self, o: Ty) -> bool {
        self.elem == o.elem && self.lanes == o.lanes && self.rows == o.rows
    }

    /// The scalar type of one element.
    pub fn element(self) -> Ty {
        Ty::scalar(self.elem)
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rows > 0 {
            write!(f, "tile<{}x{}x{}", self.rows, self.lanes, self.elem)?;
            if self.role != Role::Reg {
                write!(f, ", {}", self.role.name())?;
            }
            f.write_str(">")
        } else if self.lanes == 1 {
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

impl ReduceOp {
    /// The binary op a reduction folds with.
    pub fn binop(self) -> BinOp {
        match self {
            ReduceOp::Add => BinOp::Add,
            ReduceOp::Mul => BinOp::Mul,
            ReduceOp::Min => BinOp::Min,
            ReduceOp::Max => BinOp::Max,
        }
    }
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

/// An N-D strided view of a buffer, through which tile instructions address it: element
/// `(i0, …, i_{n-1})` of the view is element `offset + Σ i_d · strides[d]` of the buffer.
/// `dims` bound the view: an index outside `0..dims[d]` on any axis is *out of range*, which
/// tile loads answer with their fill value and tile stores skip. In-range elements must lie
/// inside the buffer. The rank is 1 to [`MAX_VIEW_RANK`].
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub buf: Buf,
    /// Element offset of index (0, …, 0), an `i64`.
    pub offset: Val,
    pub dims: Vec<u64>,
    pub strides: Vec<i64>,
}

/// The highest rank a [`View`] may have.
pub const MAX_VIEW_RANK: usize = 6;

/// Where a tile sits in a view: its top-left corner, one `i64` index per view axis. A tile's
/// rows run along the view's second-to-last axis and its columns along the last (a rank-1 view
/// holds 1-row tiles); every other axis stays at its origin index.
#[derive(Clone, Debug, PartialEq)]
pub struct TileAt {
    pub view: View,
    pub origin: Vec<Val>,
}

impl TileAt {
    /// A tile at `origin` in a row-major view of `buf` with extents `dims`, starting at
    /// element `offset`.
    pub fn row_major(buf: Buf, offset: Val, dims: &[u64], origin: &[Val]) -> TileAt {
        let mut strides = vec![1i64; dims.len()];
        for d in (0..dims.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * dims[d + 1] as i64;
        }
        TileAt {
            view: View {
                buf,
                offset,
                dims: dims.to_vec(),
                strides,
            },
            origin: origin.to_vec(),
        }
    }
}

/// Which way a tile reduction runs: `Rows` reduces each row (across its columns) to one
/// element, giving an `R × 1` tile; `Cols` reduces each column, giving `1 × C`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Axis {
    Rows,
    Cols,
}

/// The instruction set.
///
/// Unary, binary, `cmp`, `select`, `cast`, `bitcast` (same element count) and `math` apply
/// to scalars, vectors and tiles alike, element by element; `splat` makes a vector or a tile
/// from a scalar. The `tile.*` instructions at the end of this enum are the tile language.
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
    /// `a * b + c` on f32 or f64 with one rounding (a fused multiply-add). Passes emit it only
    /// for backends that ask for it (`ScalarizeOptions::fma`): a backend without a fused
    /// instruction may refuse it, but never computes it with two roundings.
    Fma(Val, Val, Val),
    /// `dot acc, a, b`: a widening integer dot product of groups. `acc` (and the result) is
    /// `i32` with `L` lanes (a scalar or a vector); `a` and `b` are vectors of `G·L` lanes
    /// whose elements are 8- or 16-bit integers (`i8`, `u8`, `i16`, `u16`; the two may
    /// differ), `G` being 2 or 4. Lane `l` of the result is `acc[l] + Σ_{g<G} a[G·l+g] ·
    /// b[G·l+g]`, each product formed exactly from the operands' values and the sum wrapping in
    /// i32: the CPU pairwise (`pmaddwd`, i16 × i16 pairs) and 4-way (`vpdpbusd`, u8 × i8
    /// quads) products. The `scalarize-tiles` pass emits it only for backends that ask for it
    /// (`ScalarizeOptions::int_dot`); a backend without the form refuses it.
    Dot(Val, Val, Val),
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
    /// A masked tile load: element (r, c) of the result is the view's element at `origin`
    /// shifted by r rows and c columns, or `fill` (read as the result's element type) where
    /// that index is out of range. The result is a tile whose element type is the buffer's
    /// dtype (or its storage view, as for `load`).
    TileLoad {
        src: TileAt,
        fill: Scalar,
    },
    /// A masked tile store: writes each element of the tile `value` whose index is in range,
    /// and nothing else.
    TileStore {
        dst: TileAt,
        value: Val,
    },
    /// Moves a `rows × cols` tile from one buffer to another, usually across memory spaces
    /// (global ↔ shared ↔ acc): the DMA / TMA / cp.async primitive. Element (r, c) is written
    /// where its destination index is in range: the source element where its source index is
    /// in range, else `fill`. Both buffers have the same dtype.
    TileCopy {
        src: TileAt,
        dst: TileAt,
        rows: u32,
        cols: u32,
        fill: Scalar,
    },
    /// Tile multiply-accumulate on values: `a` is `M × K`, `b` is `K × N` and `acc` is `M × N`;
    /// the result (an `M × N` tile of `acc`'s element type, role `acc`) is `acc + a · b` with
    /// each product formed exactly and accumulated in increasing k order, one rounding per
    /// step — the semantics of [`InstKind::Mma`]. The operand types name the a/b/acc dtypes;
    /// targets refuse pairs their matrix unit lacks.
    TileMma {
        a: Val,
        b: Val,
        acc: Val,
    },
    /// Integer tile product with `b` in *packed* form, the layout of a CPU's pairwise or 4-way
    /// dot product: `a` is an `M × K` tile and `b` a `P × (N·G)` tile (8- or 16-bit integers,
    /// `i8`, `u8`, `i16` or `u16`, the two may differ) with `K = P·G`, `G` (2 or 4) being
    /// `b`'s column count over `acc`'s; `acc` is an `M × N` `i32` tile. Row `p` of `b` holds
    /// the groups of k `p·G .. p·G+G` of every column one after the other: `b[p][j·G+g]` is
    /// element (p·G+g, j) of the unpacked `K × N` operand. The result (an `M × N` `i32` acc
    /// tile) is `acc[i][j] + Σ_p Σ_g a[i][p·G+g] · b[p][j·G+g]`, each product exact and the
    /// sum wrapping in i32, which is `tile.mma` of `a` and the unpacked operand. Lowering emits
    /// it only for targets whose desc has an integer dot product (`int_dot`), with `b` a
    /// constant packed at compile time; `scalarize-tiles` expands it (with `dot` where the
    /// backend asks, else exactly in scalars).
    TileDot {
        a: Val,
        b: Val,
        acc: Val,
    },
    /// Reduces a tile along `axis` (see [`Axis`]) in increasing index order; float add and mul
    /// round after every step.
    TileReduce(ReduceOp, Axis, Val),
    /// Broadcasts a `1 × C`, `R × 1` or `1 × 1` tile to the result's `R × C` shape.
    TileBroadcast(Val),
    /// The `C × R` transpose of an `R × C` tile.
    TileTranspose(Val),
    /// An `i64` tile holding each element's row index (`Rows`) or column index (`Cols`).
    TileIndex(Axis),
    /// Orders memory: every access to shared or acc memory before it, by any pipe or program
    /// instance that shares that memory, completes before any access after it. Program
    /// instances that share no memory see no effect (the interpreter runs them one at a time).
    Barrier,
    /// A data check. When `cond` (a scalar bool) is true, this program instance stops at once
    /// and the launch fails with data error `code` and the offending `value` (an `i64`, e.g.
    /// an index as read from a tensor); nothing after the trap runs in this instance, and the
    /// runtime never hands out the launch's outputs. Which instance's trap is reported when
    /// several fire is the first in row-major grid order. `code` is the kernel's own number for
    /// the check; the plan's trap table (`Plan::traps`) says which node, op and input it is
    /// about. Lowering puts a trap before every access whose index comes from runtime data, in
    /// place of clamping it: an index out of range is an error, never a silent wrong answer.
    Trap {
        cond: Val,
        code: u32,
        value: Val,
    },
}
