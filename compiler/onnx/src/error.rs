//! The frontend's error type. Every failure names what it is about (file, node, value or
//! tensor), so a user can find the problem in the model without a debugger.

use std::path::PathBuf;

/// An error importing an ONNX model or tensor file.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The bytes are not a valid protobuf message (truncated, malformed).
    #[error("{file}: not a valid ONNX protobuf: {reason}")]
    Decode { file: String, reason: String },

    /// An op Tessera does not implement. Maps to CLI exit code 3.
    #[error("unsupported op `{op_type}` (domain \"{domain}\", opset {opset}) at node \"{node}\"")]
    Unsupported {
        op_type: String,
        domain: String,
        opset: i64,
        node: String,
    },

    /// A supported op used in a way Tessera does not implement (an attribute, a type, a
    /// legacy semantic). Maps to CLI exit code 3 as well.
    #[error("unsupported feature at {at}: {what}")]
    UnsupportedFeature { at: String, what: String },

    /// An external-data reference that cannot be used.
    #[error("tensor \"{tensor}\": external data \"{path}\": {reason}")]
    ExternalData {
        tensor: String,
        path: String,
        reason: String,
    },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The graph-IR passes (folding, inference, verification) refused the imported graph.
    #[error(transparent)]
    Ir(#[from] crate::compat::IrError),

    /// A model that breaks the ONNX rules: the message names the node or value.
    #[error("bad model: {0}")]
    BadModel(String),

    /// Unsupported: the model imports an opset of a known domain newer than the newest one
    /// Tessera's registry knows. An opset Tessera has never seen may change what an op means,
    /// so it is refused unless [`crate::ImportOptions::allow_newer_opset`] is set. Exit code 3.
    #[error(
        "the model imports opset {opset} of domain \"{}\", newer than the newest Tessera knows ({newest}); \
         an unknown opset may change what ops mean (--allow-newer-opset treats it as opset {newest})",
        domain_name(domain)
    )]
    NewerOpset {
        domain: String,
        opset: i64,
        newest: i64,
    },
}

/// How a domain is written in messages: the default domain by its canonical name.
pub(crate) fn domain_name(domain: &str) -> &str {
    if domain.is_empty() {
        "ai.onnx"
    } else {
        domain
    }
}

impl OnnxError {
    /// Whether this error means "the model is valid but uses something Tessera lacks"
    /// (CLI exit code 3) rather than "the input is broken".
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            OnnxError::Unsupported { .. }
                | OnnxError::UnsupportedFeature { .. }
                | OnnxError::Ir(crate::compat::IrError::Unsupported { .. })
                | OnnxError::NewerOpset { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> OnnxError {
        OnnxError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = OnnxError> = std::result::Result<T, E>;
