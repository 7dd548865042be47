//! Registry lines for string ops, text featurizers and the `ai.onnx.ml` LabelEncoder and
//! TreeEnsemble (run on the host by the plan).

use super::{in_domain, op, Entry};
use tessera_ir::Op;

pub(crate) const OPS: &[Entry] = &[
    op("StringConcat", Op::StringConcat),
    op("RegexFullMatch", Op::RegexFullMatch),
    op("StringNormalizer", Op::StringNormalizer),
    op("StringSplit", Op::StringSplit),
    op("TfIdfVectorizer", Op::TfIdfVectorizer),
    in_domain("ai.onnx.ml", "LabelEncoder", Op::LabelEncoder),
    in_domain("ai.onnx.ml", "TreeEnsemble", Op::TreeEnsemble),
];
