//! The optimizer's one error enum.

/// Every error the optimizer reports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptError {
    /// A compiler bug: a rule built an intermediate that does not type, or one whose type
    /// differs from the class it was merged into. The rule is named.
    #[error("optimizer rule `{rule}` built a malformed graph: {message}")]
    Rule { rule: String, message: String },
    /// A compiler bug outside the rules (the graph handed over was not in topological order,
    /// extraction found a cycle, …).
    #[error("optimizer: {0}")]
    Internal(String),
    /// Bad input: an option value the optimizer does not know.
    #[error("{0}")]
    Usage(String),
}
