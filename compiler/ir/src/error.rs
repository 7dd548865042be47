//! [`IrError`]: the one error type of `tessera-ir`. Every message names what it is about: the
//! node (by [`crate::Node::label`]), the value, the op and the operand index, so that a user
//! can find the problem in their model without a debugger.

use crate::dtype::DType;
use thiserror::Error;

/// The message of a caught panic (`std::panic::catch_unwind`'s payload), for the guards that
/// turn a bug's panic into an error (the conformance runner, the optimizer).
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Everything that can go wrong while building, inferring, folding, verifying, printing or
/// parsing a graph. Each variant's doc says whose fault it is.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum IrError {
    /// Bad input: a node has the wrong number of operands or results for its op.
    #[error("{node} takes {expected} {what}, but has {got}")]
    Arity {
        node: String,
        what: &'static str,
        expected: String,
        got: usize,
    },

    /// Bad input: an attribute the op table does not list for the op.
    #[error("{node} has unknown attribute `{attr}` (known attributes of {op}: {known})")]
    UnknownAttr {
        node: String,
        op: String,
        attr: String,
        known: String,
    },

    /// Bad input: an attribute with a value the op does not accept (wrong kind, out of range).
    #[error("attribute `{attr}` of {node} {msg}")]
    BadAttr {
        node: String,
        attr: String,
        msg: String,
    },

    /// Bad input (or an unbound runtime input): an operand whose contents decide the output
    /// shape is not known at compile time.
    #[error("operand {index} (`{operand}`) of {node} must be known at compile time")]
    NotConstant {
        node: String,
        index: usize,
        operand: String,
    },

    /// Bad input: a required operand is omitted.
    #[error("operand {index} (`{operand}`) of {node} is required but omitted")]
    MissingOperand {
        node: String,
        index: usize,
        operand: String,
    },

    /// Bad input: an operand's contents are unusable (a negative size, an index out of range).
    #[error("operand {index} (`{operand}`) of {node} {msg}")]
    BadOperand {
        node: String,
        index: usize,
        operand: String,
        msg: String,
    },

    /// Bad input or a compiler bug: an operand has no type when inference reaches its user.
    #[error("operand {index} (`{operand}`, value %{value}) of {node} has no type")]
    UntypedOperand {
        node: String,
        index: usize,
        operand: String,
        value: String,
    },

    /// Bad input: shapes that do not fit together (mismatched dims, ranks, axes).
    #[error("{node}: {msg}")]
    ShapeMismatch { node: String, msg: String },

    /// Bad input: operands that cannot be broadcast together under numpy rules.
    #[error("{node}: cannot broadcast {lhs} with {rhs}: dimension {lhs_dim} vs {rhs_dim}")]
    Broadcast {
        node: String,
        lhs: String,
        rhs: String,
        lhs_dim: String,
        rhs_dim: String,
    },

    /// Bad input: the nodes form a cycle. `path` lists the nodes around it.
    #[error("the graph has a cycle through {node}: {path}")]
    Cycle { node: String, path: String },

    /// Bad input: a reference to a value that is never defined (or an id out of range).
    #[error("{user} refers to value {value}, which is never defined")]
    Dangling { user: String, value: String },

    /// Bad input: a value used by a node listed before the node that defines it.
    #[error("{user} uses value %{value} before {def}, which defines it")]
    UseBeforeDef {
        user: String,
        value: String,
        def: String,
    },

    /// Bad input: a value defined twice (two producers, or a name given to two values).
    #[error("value %{value} is defined twice: by {first} and by {second}")]
    Duplicate {
        value: String,
        first: String,
        second: String,
    },

    /// Limit exceeded: a tensor with more than [`crate::MAX_ELEMENTS`] elements. Caught during
    /// inference, before anything is allocated.
    #[error("{what} would have shape {shape}, which exceeds the limit of {limit} elements")]
    TooLarge {
        what: String,
        shape: String,
        limit: u64,
    },

    /// Unsupported: a symbolic dimension where a static size is needed.
    #[error("{node}: {what} needs a static size, but dimension `{dim}` is symbolic")]
    Symbolic {
        node: String,
        what: String,
        dim: String,
    },

    /// Bad input or unsupported: a dtype the op does not accept for that operand.
    #[error("{node} does not support dtype {dtype} for {what}")]
    UnsupportedDType {
        node: String,
        dtype: DType,
        what: String,
    },

    /// Compiler bug (or verifying before inference): a node result without a type.
    #[error("result %{value} of {node} has no type")]
    UntypedResult { node: String, value: String },

    /// Bad input: text that is not a well-formed graph.
    #[error("{line}:{col}: {msg}")]
    Parse {
        line: usize,
        col: usize,
        msg: String,
    },

    /// Unsupported: a valid use of an op that the static-shape plan cannot express (a loop
    /// whose carried values change shape across iterations, If branches of different shapes).
    #[error("{node}: unsupported: {what}")]
    Unsupported { node: String, what: String },
}

impl IrError {
    /// A short, stable name for the variant, for tests and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            IrError::Arity { .. } => "arity",
            IrError::UnknownAttr { .. } => "unknown-attr",
            IrError::BadAttr { .. } => "bad-attr",
            IrError::NotConstant { .. } => "not-constant",
            IrError::MissingOperand { .. } => "missing-operand",
            IrError::BadOperand { .. } => "bad-operand",
            IrError::UntypedOperand { .. } => "untyped-operand",
            IrError::ShapeMismatch { .. } => "shape-mismatch",
            IrError::Broadcast { .. } => "broadcast",
            IrError::Cycle { .. } => "cycle",
            IrError::Dangling { .. } => "dangling",
            IrError::UseBeforeDef { .. } => "use-before-def",
            IrError::Duplicate { .. } => "duplicate",
            IrError::TooLarge { .. } => "too-large",
            IrError::Symbolic { .. } => "symbolic",
            IrError::UnsupportedDType { .. } => "unsupported-dtype",
            IrError::UntypedResult { .. } => "untyped-result",
            IrError::Parse { .. } => "parse",
            IrError::Unsupported { .. } => "unsupported",
        }
    }
}
