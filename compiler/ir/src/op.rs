//! The op table: every graph-IR op declared once, with its ONNX name, family, operand and
//! result counts, and attribute names. Graph ops follow the newest ONNX opset's semantics;
//! frontends upgrade older forms (attributes that became inputs, and so on) on the way in.
//! The printer, the parser, the verifier and shape inference all read this table.

use std::fmt;

/// What kind of work an op is; lowering and the conformance report group by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Elementwise arithmetic, logic and activations.
    Elementwise,
    /// Matrix products, convolutions, pooling, normalisations, softmax.
    Dense,
    /// Reductions over axes.
    Reduce,
    /// Shape changes and data movement.
    Movement,
    /// Quantize and dequantize.
    Quant,
    /// Ops that only produce constants or shapes (no data-dependent numerics).
    Meta,
    /// Control flow with subgraphs (If, Loop, Scan), run by the plan.
    Control,
}

/// Operand or result count: `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arity {
    pub min: usize,
    /// [`ANY`] for no upper bound.
    pub max: usize,
}

/// No upper bound on an operand or result count.
pub const ANY: usize = usize::MAX;

impl Arity {
    pub fn allows(&self, n: usize) -> bool {
        n >= self.min && n <= self.max
    }
}

/// One row of the op table.
#[derive(Clone, Copy, Debug)]
pub struct OpInfo {
    pub op: Op,
    pub name: &'static str,
    pub family: Family,
    pub inputs: Arity,
    pub outputs: Arity,
    pub attrs: &'static [&'static str],
}

macro_rules! op_table {
    ($( $variant:ident : $family:ident, in ($imin:expr, $imax:expr), out ($omin:expr, $omax:expr), [$($attr:literal),*] ;)*) => {
        /// A graph op. The variant name is the ONNX op type.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Op { $($variant),* }

        /// The op table, one row per op.
        pub const OPS: &[OpInfo] = &[
            $(OpInfo {
                op: Op::$variant,
                name: stringify!($variant),
                family: Family::$family,
                inputs: Arity { min: $imin, max: $imax },
                outputs: Arity { min: $omin, max: $omax },
                attrs: &[$($attr),*],
            }),*
        ];
    };
}

// Columns: op, family, operand count, result count, attribute names.
// Counts use `n`, `a..=b` or `a..` (unbounded). Optional operands count toward the maximum.
op_table! {
    // ---- elementwise: binary arithmetic and logic (numpy broadcasting) ----
    Add: Elementwise, in (2, 2), out (1, 1), [];
    Sub: Elementwise, in (2, 2), out (1, 1), [];
    Mul: Elementwise, in (2, 2), out (1, 1), [];
    Div: Elementwise, in (2, 2), out (1, 1), [];
    Pow: Elementwise, in (2, 2), out (1, 1), [];
    Mod: Elementwise, in (2, 2), out (1, 1), ["fmod"];
    And: Elementwise, in (2, 2), out (1, 1), [];
    Or: Elementwise, in (2, 2), out (1, 1), [];
    Xor: Elementwise, in (2, 2), out (1, 1), [];
    Equal: Elementwise, in (2, 2), out (1, 1), [];
    Less: Elementwise, in (2, 2), out (1, 1), [];
    LessOrEqual: Elementwise, in (2, 2), out (1, 1), [];
    Greater: Elementwise, in (2, 2), out (1, 1), [];
    GreaterOrEqual: Elementwise, in (2, 2), out (1, 1), [];
    BitShift: Elementwise, in (2, 2), out (1, 1), ["direction"];
    BitwiseAnd: Elementwise, in (2, 2), out (1, 1), [];
    BitwiseOr: Elementwise, in (2, 2), out (1, 1), [];
    BitwiseXor: Elementwise, in (2, 2), out (1, 1), [];
    PRelu: Elementwise, in (2, 2), out (1, 1), [];
    Where: Elementwise, in (3, 3), out (1, 1), [];
    // ---- elementwise: variadic ----
    Max: Elementwise, in (1, ANY), out (1, 1), [];
    Min: Elementwise, in (1, ANY), out (1, 1), [];
    Sum: Elementwise, in (1, ANY), out (1, 1), [];
    Mean: Elementwise, in (1, ANY), out (1, 1), [];
    // ---- elementwise: unary ----
    Abs: Elementwise, in (1, 1), out (1, 1), [];
    Neg: Elementwise, in (1, 1), out (1, 1), [];
    Reciprocal: Elementwise, in (1, 1), out (1, 1), [];
    Sqrt: Elementwise, in (1, 1), out (1, 1), [];
    Exp: Elementwise, in (1, 1), out (1, 1), [];
    Log: Elementwise, in (1, 1), out (1, 1), [];
    Erf: Elementwise, in (1, 1), out (1, 1), [];
    Sin: Elementwise, in (1, 1), out (1, 1), [];
    Cos: Elementwise, in (1, 1), out (1, 1), [];
    Tan: Elementwise, in (1, 1), out (1, 1), [];
    Asin: Elementwise, in (1, 1), out (1, 1), [];
    Acos: Elementwise, in (1, 1), out (1, 1), [];
    Atan: Elementwise, in (1, 1), out (1, 1), [];
    Sinh: Elementwise, in (1, 1), out (1, 1), [];
    Cosh: Elementwise, in (1, 1), out (1, 1), [];
    Asinh: Elementwise, in (1, 1), out (1, 1), [];
    Acosh: Elementwise, in (1, 1), out (1, 1), [];
    Atanh: Elementwise, in (1, 1), out (1, 1), [];
    Tanh: Elementwise, in (1, 1), out (1, 1), [];
    Sigmoid: Elementwise, in (1, 1), out (1, 1), [];
    Relu: Elementwise, in (1, 1), out (1, 1), [];
    LeakyRelu: Elementwise, in (1, 1), out (1, 1), ["alpha"];
    Elu: Elementwise, in (1, 1), out (1, 1), ["alpha"];
    Selu: Elementwise, in (1, 1), out (1, 1), ["alpha", "gamma"];
    Celu: Elementwise, in (1, 1), out (1, 1), ["alpha"];
    ThresholdedRelu: Elementwise, in (1, 1), out (1, 1), ["alpha"];
    Gelu: Elementwise, in (1, 1), out (1, 1), ["approximate"];
    HardSigmoid: Elementwise, in (1, 1), out (1, 1), ["alpha", "beta"];
    HardSwish: Elementwise, in (1, 1), out (1, 1), [];
    Softplus: Elementwise, in (1, 1), out (1, 1), [];
    Softsign: Elementwise, in (1, 1), out (1, 1), [];
    Mish: Elementwise, in (1, 1), out (1, 1), [];
    Shrink: Elementwise, in (1, 1), out (1, 1), ["bias", "lambd"];
    Floor: Elementwise, in (1, 1), out (1, 1), [];
    Ceil: Elementwise, in (1, 1), out (1, 1), [];
    Round: Elementwise, in (1, 1), out (1, 1), [];
    Sign: Elementwise, in (1, 1), out (1, 1), [];
    Not: Elementwise, in (1, 1), out (1, 1), [];
    BitwiseNot: Elementwise, in (1, 1), out (1, 1), [];
    IsNaN: Elementwise, in (1, 1), out (1, 1), [];
    IsInf: Elementwise, in (1, 1), out (1, 1), ["detect_negative", "detect_positive"];
    Clip: Elementwise, in (1, 3), out (1, 1), [];
    Cast: Elementwise, in (1, 1), out (1, 1), ["to", "saturate", "round_mode"];
    CastLike: Elementwise, in (2, 2), out (1, 1), ["saturate", "round_mode"];
    // ---- dense ----
    MatMul: Dense, in (2, 2), out (1, 1), [];
    MatMulInteger: Dense, in (2, 4), out (1, 1), [];
    // Tessera's own (no ONNX name): `activation(scale * (A - a_zp)(B - b_zp) + bias +
    // residual)`, one kernel, made by the optimizer's fusion and low-precision rules
    // (compiler/opt).
    FusedMatMul: Dense, in (2, 7), out (1, 1), ["activation", "transB"];
    Gemm: Dense, in (2, 3), out (1, 1), ["alpha", "beta", "transA", "transB"];
    Conv: Dense, in (2, 3), out (1, 1), ["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"];
    // Tessera's own (com.microsoft's name, which the importer rewrites into Conv and its
    // activation): `activation(Conv(X, W, B) + Z)`, one kernel, made by the optimizer's
    // fusion rules (compiler/opt).
    FusedConv: Dense, in (2, 4), out (1, 1), ["activation", "auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"];
    ConvInteger: Dense, in (2, 4), out (1, 1), ["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"];
    ConvTranspose: Dense, in (2, 3), out (1, 1), ["auto_pad", "dilations", "group", "kernel_shape", "output_padding", "output_shape", "pads", "strides"];
    MaxPool: Dense, in (1, 1), out (1, 2), ["auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides"];
    AveragePool: Dense, in (1, 1), out (1, 1), ["auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape", "pads", "strides"];
    LpPool: Dense, in (1, 1), out (1, 1), ["auto_pad", "ceil_mode", "dilations", "kernel_shape", "p", "pads", "strides"];
    GlobalAveragePool: Dense, in (1, 1), out (1, 1), [];
    GlobalMaxPool: Dense, in (1, 1), out (1, 1), [];
    GlobalLpPool: Dense, in (1, 1), out (1, 1), ["p"];
    BatchNormalization: Dense, in (5, 5), out (1, 3), ["epsilon", "momentum", "training_mode"];
    LayerNormalization: Dense, in (2, 3), out (1, 3), ["axis", "epsilon", "stash_type"];
    InstanceNormalization: Dense, in (3, 3), out (1, 1), ["epsilon"];
    GroupNormalization: Dense, in (3, 3), out (1, 1), ["epsilon", "num_groups", "stash_type"];
    RMSNormalization: Dense, in (2, 2), out (1, 1), ["axis", "epsilon", "stash_type"];
    LpNormalization: Dense, in (1, 1), out (1, 1), ["axis", "p"];
    MeanVarianceNormalization: Dense, in (1, 1), out (1, 1), ["axes"];
    Softmax: Dense, in (1, 1), out (1, 1), ["axis"];
    LogSoftmax: Dense, in (1, 1), out (1, 1), ["axis"];
    Hardmax: Dense, in (1, 1), out (1, 1), ["axis"];
    // ---- reductions ----
    ReduceSum: Reduce, in (1, 2), out (1, 1), ["keepdims", "noop_with_empty_axes"];
    ReduceMean: Reduce, in (1, 2), out (1, 1), ["keepdims", "noop_with_empty_axes"];
    ReduceMax: Reduce, in (1, 2), out (1, 1), ["keepdims", "noop_with_empty_axes"];
    ReduceMin: Reduce, in (1, 2), out (1, 1), ["keepdims", "noop_with_empty_axes"];
    ReduceProd: Reduce, in (1, 2), out (1, 1), ["keepdims", "noop_with_empty_axes"];
    ReduceL1: Reduce, in (1, 2), out (1, 1), ["keepdims", "noop_with_empty_axes"];
    ReduceL2: Reduce, in (1, 2), out (1, 1), ["keepdims", "noop_with_empty_axes"];
    ReduceSumSquare: Reduce, in (1, 2), out (1, 1), ["keepdims", "noop_with_empty_axes"];
    ReduceLogSum: Reduce, in (1, 2), out (1, 1), ["keepdims", "noop_with_empty_axes"];
    ReduceLogSumExp: Reduce, in (1, 2), out (1, 1), ["keepdims", "noop_with_empty_axes"];
    ArgMax: Reduce, in (1, 1), out (1, 1), ["axis", "keepdims", "select_last_index"];
    ArgMin: Reduce, in (1, 1), out (1, 1), ["axis", "keepdims", "select_last_index"];
    CumSum: Reduce, in (2, 2), out (1, 1), ["exclusive", "reverse"];
    TopK: Reduce, in (2, 2), out (2, 2), ["axis", "largest", "sorted"];
    // ---- shape and data movement ----
    Reshape: Movement, in (2, 2), out (1, 1), ["allowzero"];
    Flatten: Movement, in (1, 1), out (1, 1), ["axis"];
    Transpose: Movement, in (1, 1), out (1, 1), ["perm"];
    Squeeze: Movement, in (1, 2), out (1, 1), [];
    Unsqueeze: Movement, in (2, 2), out (1, 1), [];
    Concat: Movement, in (1, ANY), out (1, 1), ["axis"];
    Split: Movement, in (1, 2), out (1, ANY), ["axis", "num_outputs"];
    Slice: Movement, in (3, 5), out (1, 1), [];
    Gather: Movement, in (2, 2), out (1, 1), ["axis"];
    GatherElements: Movement, in (2, 2), out (1, 1), ["axis"];
    GatherND: Movement, in (2, 2), out (1, 1), ["batch_dims"];
    ScatterElements: Movement, in (3, 3), out (1, 1), ["axis", "reduction"];
    ScatterND: Movement, in (3, 3), out (1, 1), ["reduction"];
    Expand: Movement, in (2, 2), out (1, 1), [];
    Pad: Movement, in (2, 4), out (1, 1), ["mode"];
    Tile: Movement, in (2, 2), out (1, 1), [];
    Identity: Movement, in (1, 1), out (1, 1), [];
    Dropout: Movement, in (1, 3), out (1, 2), ["seed"];
    DepthToSpace: Movement, in (1, 1), out (1, 1), ["blocksize", "mode"];
    SpaceToDepth: Movement, in (1, 1), out (1, 1), ["blocksize", "mode"];
    Trilu: Movement, in (1, 2), out (1, 1), ["upper"];
    OneHot: Movement, in (3, 3), out (1, 1), ["axis"];
    EyeLike: Movement, in (1, 1), out (1, 1), ["dtype", "k"];
    Resize: Movement, in (1, 4), out (1, 1), ["antialias", "axes", "coordinate_transformation_mode", "cubic_coeff_a", "exclude_outside", "extrapolation_value", "keep_aspect_ratio_policy", "mode", "nearest_mode"];
    // ---- constants and shapes ----
    Shape: Meta, in (1, 1), out (1, 1), ["end", "start"];
    Size: Meta, in (1, 1), out (1, 1), [];
    Constant: Meta, in (0, 0), out (1, 1), ["value", "value_float", "value_floats", "value_int", "value_ints", "value_string", "value_strings"];
    ConstantOfShape: Meta, in (1, 1), out (1, 1), ["value"];
    Range: Meta, in (3, 3), out (1, 1), [];
    // ---- random values (seeded and deterministic: tessera-lower's random.rs) ----
    RandomUniform: Meta, in (0, 0), out (1, 1), ["dtype", "high", "low", "seed", "shape"];
    RandomNormal: Meta, in (0, 0), out (1, 1), ["dtype", "mean", "scale", "seed", "shape"];
    RandomUniformLike: Elementwise, in (1, 1), out (1, 1), ["dtype", "high", "low", "seed"];
    RandomNormalLike: Elementwise, in (1, 1), out (1, 1), ["dtype", "mean", "scale", "seed"];
    Bernoulli: Elementwise, in (1, 1), out (1, 1), ["dtype", "seed"];
    Multinomial: Reduce, in (1, 1), out (1, 1), ["dtype", "sample_size", "seed"];
    // ---- quantization ----
    QuantizeLinear: Quant, in (2, 3), out (1, 1), ["axis", "block_size", "output_dtype", "precision", "saturate"];
    DequantizeLinear: Quant, in (2, 3), out (1, 1), ["axis", "block_size", "output_dtype"];
    DynamicQuantizeLinear: Quant, in (1, 1), out (3, 3), [];
    // ---- added: sequence and attention ops ----
    Attention: Dense, in (3, 7), out (1, 4), ["is_causal", "kv_num_heads", "left_window_size", "q_num_heads", "qk_matmul_output_mode", "right_window_size", "scale", "softcap", "softmax_precision"];
    RotaryEmbedding: Dense, in (3, 4), out (1, 1), ["interleaved", "num_heads", "rotary_embedding_dim"];
    NegativeLogLikelihoodLoss: Dense, in (2, 3), out (1, 1), ["ignore_index", "reduction"];
    SoftmaxCrossEntropyLoss: Dense, in (2, 3), out (1, 2), ["ignore_index", "reduction"];
    CumProd: Reduce, in (2, 2), out (1, 1), ["exclusive", "reverse"];
    Swish: Elementwise, in (1, 1), out (1, 1), ["alpha"];
    SwiGLU: Elementwise, in (2, 2), out (1, 1), ["alpha"];
    Einsum: Dense, in (1, ANY), out (1, 1), ["equation"];
    RNN: Dense, in (3, 6), out (1, 2), ["activation_alpha", "activation_beta", "activations", "clip", "direction", "hidden_size", "layout"];
    GRU: Dense, in (3, 6), out (1, 2), ["activation_alpha", "activation_beta", "activations", "clip", "direction", "hidden_size", "layout", "linear_before_reset"];
    LSTM: Dense, in (3, 8), out (1, 3), ["activation_alpha", "activation_beta", "activations", "clip", "direction", "hidden_size", "input_forget", "layout"];
    BlackmanWindow: Meta, in (1, 1), out (1, 1), ["output_datatype", "periodic"];
    HannWindow: Meta, in (1, 1), out (1, 1), ["output_datatype", "periodic"];
    HammingWindow: Meta, in (1, 1), out (1, 1), ["output_datatype", "periodic"];
    Det: Dense, in (1, 1), out (1, 1), [];
    BitCast: Elementwise, in (1, 1), out (1, 1), ["to"];
    // ---- added: spatial ops ----
    MaxUnpool: Dense, in (2, 3), out (1, 1), ["kernel_shape", "pads", "strides"];
    LRN: Dense, in (1, 1), out (1, 1), ["alpha", "beta", "bias", "size"];
    ReverseSequence: Movement, in (2, 2), out (1, 1), ["batch_axis", "time_axis"];
    CenterCropPad: Movement, in (2, 2), out (1, 1), ["axes"];
    Col2Im: Movement, in (3, 3), out (1, 1), ["dilations", "pads", "strides"];
    GridSample: Movement, in (2, 2), out (1, 1), ["align_corners", "mode", "padding_mode"];
    AffineGrid: Movement, in (2, 2), out (1, 1), ["align_corners"];
    // ---- added: linear attention and quantized ops ----
    LinearAttention: Dense, in (3, 6), out (1, 2), ["chunk_size", "kv_num_heads", "q_num_heads", "scale", "update_rule"];
    CausalConvWithState: Dense, in (2, 4), out (1, 2), ["activation"];
    QLinearMatMul: Dense, in (8, 8), out (1, 1), [];
    TensorScatter: Movement, in (2, 3), out (1, 1), ["axis", "mode"];
    DeformConv: Dense, in (3, 5), out (1, 1), ["dilations", "group", "kernel_shape", "offset_group", "pads", "strides"];
    RoiAlign: Dense, in (3, 3), out (1, 1), ["coordinate_transformation_mode", "mode", "output_height", "output_width", "sampling_ratio", "spatial_scale"];
    QLinearConv: Dense, in (8, 9), out (1, 1), ["auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"];
    // ---- added: spectral, training and ml ops ----
    DFT: Dense, in (1, 3), out (1, 1), ["inverse", "onesided"];
    STFT: Dense, in (2, 4), out (1, 1), ["onesided"];
    MelWeightMatrix: Dense, in (5, 5), out (1, 1), ["output_datatype"];
    Momentum: Dense, in (3, ANY), out (1, ANY), ["alpha", "beta", "mode", "norm_coefficient"];
    Adagrad: Dense, in (3, ANY), out (1, ANY), ["decay_factor", "epsilon", "norm_coefficient"];
    Adam: Dense, in (3, ANY), out (1, ANY), ["alpha", "beta", "epsilon", "norm_coefficient", "norm_coefficient_post"];
    Binarizer: Dense, in (1, 1), out (1, 1), ["threshold"];
    ArrayFeatureExtractor: Dense, in (2, 2), out (1, 1), [];
    // ---- control flow: subgraph attributes; `captures` counts the trailing operands that
    // pass outer values into the bodies (see infer/control.rs) ----
    If: Control, in (1, ANY), out (1, ANY), ["captures", "else_branch", "then_branch"];
    // M and cond are optional, but their positions are always there (checked by inference).
    Loop: Control, in (0, ANY), out (1, ANY), ["body", "captures"];
    // ---- selections whose result size depends on the data (run by the plan on the host) ----
    NonZero: Movement, in (1, 1), out (1, 1), [];
    Compress: Movement, in (2, 2), out (1, 1), ["axis"];
    Unique: Movement, in (1, 1), out (1, 4), ["axis", "sorted"];
    NonMaxSuppression: Movement, in (2, 5), out (1, 1), ["center_point_box"];
    // ---- string ops and encoders (run by the plan on the host) ----
    StringConcat: Movement, in (2, 2), out (1, 1), [];
    RegexFullMatch: Movement, in (1, 1), out (1, 1), ["pattern"];
    StringNormalizer: Movement, in (1, 1), out (1, 1), ["case_change_action", "is_case_sensitive", "locale", "stopwords"];
    StringSplit: Movement, in (1, 1), out (1, 2), ["delimiter", "maxsplit"];
    TreeEnsemble: Dense, in (1, 1), out (1, 1), ["aggregate_function", "leaf_targetids", "leaf_weights", "membership_values", "n_targets", "nodes_falseleafs", "nodes_falsenodeids", "nodes_featureids", "nodes_hitrates", "nodes_missing_value_tracks_true", "nodes_modes", "nodes_splits", "nodes_trueleafs", "nodes_truenodeids", "post_transform", "tree_roots"];
    TfIdfVectorizer: Movement, in (1, 1), out (1, 1), ["max_gram_length", "max_skip_count", "min_gram_length", "mode", "ngram_counts", "ngram_indexes", "pool_int64s", "pool_strings", "weights"];
    LabelEncoder: Movement, in (1, 1), out (1, 1), ["default_float", "default_int64", "default_string", "default_tensor", "keys_floats", "keys_int64s", "keys_strings", "keys_tensor", "values_floats", "values_int64s", "values_strings", "values_tensor"];
    Scan: Control, in (1, ANY), out (1, ANY), ["body", "captures", "num_scan_inputs", "scan_input_axes", "scan_input_directions", "scan_output_axes", "scan_output_directions"];
    // ---- custom ops: a hand-written kernel (see `custom.rs`); `source` holds its file ----
    Custom: Dense, in (0, ANY), out (1, ANY), ["domain", "op_type", "source"];
}

impl Op {
    pub fn info(self) -> &'static OpInfo {
        // The table is declared in variant order, so the discriminant indexes it.
        &OPS[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    pub fn family(self) -> Family {
        self.info().family
    }

    pub fn from_name(name: &str) -> Option<Op> {
        OPS.iter().find(|i| i.name == name).map(|i| i.op)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The ONNX names of an op's operands, for error messages. Variadic ops repeat the last name.
pub fn operand_names(op: Op) -> &'static [&'static str] {
    use Op::*;
    match op {
        If => &["cond", "captured"],
        Loop => &["M", "cond", "v_initial"],
        Scan => &["initial_state_and_scan_inputs"],
        Reshape | Expand => &["data", "shape"],
        Slice => &["data", "starts", "ends", "axes", "steps"],
        Tile => &["input", "repeats"],
        Pad => &["data", "pads", "constant_value", "axes"],
        Squeeze | Unsqueeze => &["data", "axes"],
        Split => &["input", "split"],
        ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceProd | ReduceL1 | ReduceL2
        | ReduceSumSquare | ReduceLogSum | ReduceLogSumExp => &["data", "axes"],
        Range => &["start", "limit", "delta"],
        TopK => &["X", "K"],
        Resize => &["X", "roi", "scales", "sizes"],
        MaxUnpool => &["X", "I", "output_shape"],
        ReverseSequence => &["input", "sequence_lens"],
        CenterCropPad => &["input_data", "shape"],
        Col2Im => &["input", "image_shape", "block_shape"],
        GridSample => &["X", "grid"],
        AffineGrid => &["theta", "size"],
        OneHot => &["indices", "depth", "values"],
        DFT => &["input", "dft_length", "axis"],
        STFT => &["signal", "frame_step", "window", "frame_length"],
        MelWeightMatrix => &[
            "num_mel_bins",
            "dft_length",
            "sample_rate",
            "lower_edge_hertz",
            "upper_edge_hertz",
        ],
        Momentum | Adagrad | Adam => &["R", "T", "inputs"],
        Binarizer => &["X"],
        ArrayFeatureExtractor => &["X", "Y"],
        Trilu => &["input", "k"],
        CumSum => &["x", "axis"],
        MatMul => &["A", "B"],
        MatMulInteger => &["A", "B", "a_zero_point", "b_zero_point"],
        FusedMatMul => &[
            "A",
            "B",
            "bias",
            "a_zero_point",
            "b_zero_point",
            "scale",
            "residual",
        ],
        Gemm => &["A", "B", "C"],
        Conv | ConvTranspose => &["X", "W", "B"],
        FusedConv => &["X", "W", "B", "Z"],
        ConvInteger => &["x", "w", "x_zero_point", "w_zero_point"],
        BatchNormalization => &["X", "scale", "B", "input_mean", "input_var"],
        LayerNormalization => &["X", "Scale", "B"],
        InstanceNormalization => &["input", "scale", "B"],
        GroupNormalization => &["X", "scale", "bias"],
        RMSNormalization => &["X", "scale"],
        Where => &["condition", "X", "Y"],
        LinearAttention => &["query", "key", "value", "past_state", "decay", "beta"],
        CausalConvWithState => &["input", "weight", "bias", "past_state"],
        QLinearMatMul => &[
            "a",
            "a_scale",
            "a_zero_point",
            "b",
            "b_scale",
            "b_zero_point",
            "y_scale",
            "y_zero_point",
        ],
        TensorScatter => &["past_cache", "update", "write_indices"],
        DeformConv => &["X", "W", "offset", "B", "mask"],
        RoiAlign => &["X", "rois", "batch_indices"],
        QLinearConv => &[
            "x",
            "x_scale",
            "x_zero_point",
            "w",
            "w_scale",
            "w_zero_point",
            "y_scale",
            "y_zero_point",
            "B",
        ],
        Clip => &["input", "min", "max"],
        CastLike => &["input", "target_type"],
        PRelu => &["X", "slope"],
        Gather | GatherElements | GatherND => &["data", "indices"],
        ScatterElements | ScatterND => &["data", "indices", "updates"],
        Dropout => &["data", "ratio", "training_mode"],
        QuantizeLinear => &["x", "y_scale", "y_zero_point"],
        DequantizeLinear => &["x", "x_scale", "x_zero_point"],
        Max | Min | Sum | Mean | Concat => &["inputs"],
        MaxPool | AveragePool | LpPool | GlobalAveragePool | GlobalMaxPool | GlobalLpPool => &["X"],
        Add | Sub | Mul | Div | Pow | Mod | And | Or | Xor | Equal | Less | LessOrEqual
        | Greater | GreaterOrEqual | BitShift | BitwiseAnd | BitwiseOr | BitwiseXor => &["A", "B"],
        _ => &["input"],
    }
}

/// The ONNX name of operand `i` of `op` (variadic ops repeat their last name).
pub fn operand_name(op: Op, i: usize) -> &'static str {
    let names = operand_names(op);
    names.get(i).or(names.last()).copied().unwrap_or("input")
}

/// The operand positions whose *contents* (not just types) determine an op's output shapes.
/// Shape inference requires them to be known at compile time; the frontend binds runtime
/// inputs that feed these positions.
pub fn shape_operands(op: Op) -> &'static [usize] {
    use Op::*;
    match op {
        Reshape | Expand | Tile | Squeeze | Unsqueeze | Split | TopK | OneHot | Trilu | CumSum => {
            &[1]
        }
        ReduceSum | ReduceMean | ReduceMax | ReduceMin | ReduceProd | ReduceL1 | ReduceL2
        | ReduceSumSquare | ReduceLogSum | ReduceLogSumExp => &[1],
        Slice => &[1, 2, 3, 4],
        Pad => &[1, 3],
        Range => &[0, 1, 2],
        ConstantOfShape => &[0],
        Resize => &[1, 2, 3],
        MaxUnpool => &[2],
        CenterCropPad | AffineGrid => &[1],
        Col2Im => &[1, 2],
        CumProd => &[1],
        BlackmanWindow | HannWindow | HammingWindow => &[0],
        DFT => &[1, 2],
        STFT => &[1, 3],
        MelWeightMatrix => &[0, 1],
        // The trip count sizes a Loop's scan outputs.
        Loop => &[0],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_discriminant() {
        for (i, info) in OPS.iter().enumerate() {
            assert_eq!(info.op as usize, i, "{}", info.name);
            assert_eq!(Op::from_name(info.name), Some(info.op));
        }
    }

    #[test]
    fn shape_operands_are_within_arity() {
        for info in OPS {
            for &i in shape_operands(info.op) {
                assert!(i < info.inputs.max, "{} operand {i}", info.name);
            }
        }
        assert_eq!(operand_name(Op::Reshape, 1), "shape");
        assert_eq!(operand_name(Op::Concat, 7), "inputs");
    }
}
