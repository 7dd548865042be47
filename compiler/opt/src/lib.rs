//! `tessera-opt`: the e-graph optimizer. It loads a typed graph into an [`egg`] e-graph
//! ([`convert`]), runs the rule families of [`rules`] under node, iteration and time limits,
//! and extracts the cheapest graph by a cost model read from the target description
//! ([`cost`]). Start at [`optimize`]; docs/optimizer.md is the guide.
//!
//! ```
//! let mut g = tessera_ir::text::parse(
//!     "graph @g(%x: f32[2,3]) -> (%y) {\n\
//!        %t = Transpose(%x) {perm = [1, 0]}\n\
//!        %y = Transpose(%t) {perm = [1, 0]}\n\
//!      }\n",
//! )?;
//! tessera_ir::infer_shapes(&mut g)?;
//! let desc = tessera_target::TargetDesc::default();
//! let (out, report) = tessera_opt::optimize(&g, &desc, &tessera_opt::OptOptions::default())?;
//! assert_eq!(report.fired.get("transpose-transpose"), Some(&1));
//! assert!(!tessera_ir::text::print(&out).contains("Transpose"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod analysis;
pub mod convert;
pub mod cost;
mod error;
pub mod lang;
pub mod report;
pub mod rules;

pub use error::OptError;
pub use report::Report;

use std::time::{Duration, Instant};
use tessera_ir::Graph;
use tessera_target::TargetDesc;

/// How hard to optimise. `O0` is the pipeline without the optimizer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum OptLevel {
    O0,
    /// The default: every rule, tight limits.
    #[default]
    O1,
    /// Every rule, wider limits.
    O2,
}

impl std::str::FromStr for OptLevel {
    type Err = OptError;
    fn from_str(s: &str) -> Result<OptLevel, OptError> {
        match s {
            "0" => Ok(OptLevel::O0),
            "1" => Ok(OptLevel::O1),
            "2" => Ok(OptLevel::O2),
            _ => Err(OptError::Usage(format!(
                "--opt-level `{s}`: expected 0, 1 or 2"
            ))),
        }
    }
}

/// Which dtypes the optimizer may change (docs/optimizer.md gives each policy's error bound).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Never changes a dtype; results differ from `--opt-level 0` by f32 reassociation only.
    #[default]
    Exact,
    /// f32 matrix products may run on f16 operands with f32 accumulation.
    F16,
    /// f32 matrix products may run on bf16 operands with f32 accumulation.
    Bf16,
    /// Quantized (QDQ) products run in integers; the same rules as `exact` today.
    Int8,
}

impl std::str::FromStr for Precision {
    type Err = OptError;
    fn from_str(s: &str) -> Result<Precision, OptError> {
        match s {
            "exact" => Ok(Precision::Exact),
            "f16" => Ok(Precision::F16),
            "bf16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            _ => Err(OptError::Usage(format!(
                "--precision `{s}`: expected exact, f16, bf16 or int8"
            ))),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Exact => "exact",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        })
    }
}

/// The bounds of one e-graph run. Node and iteration limits are deterministic; the time limit
/// is a safety net (a run that hits it is reported, and may differ between machines).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub nodes: usize,
    pub iterations: usize,
    pub time: Duration,
}

impl Limits {
    pub fn for_level(level: OptLevel) -> Limits {
        match level {
            OptLevel::O0 | OptLevel::O1 => Limits {
                nodes: 20_000,
                iterations: 8,
                time: Duration::from_millis(500),
            },
            OptLevel::O2 => Limits {
                nodes: 100_000,
                iterations: 16,
                time: Duration::from_secs(2),
            },
        }
    }
}

/// What to optimise for.
#[derive(Clone, Debug, Default)]
pub struct OptOptions {
    pub level: OptLevel,
    pub precision: Precision,
    /// `None`: the level's limits.
    pub limits: Option<Limits>,
    /// Evaluates classes whose operands are all known (`tessera_ir::fold`); the driver passes
    /// its interpreter-backed folder. `None` folds only the data-free `Constant`/`Shape`/`Size`.
    pub folder: Option<std::sync::Arc<dyn tessera_ir::ConstEval>>,
}

/// Optimises `g` (typed by shape inference) for the target `desc`. Returns the graph to lower
/// and what happened. At [`OptLevel::O0`], or when no rule fires or nothing cheaper is found,
/// the graph is returned unchanged.
pub fn optimize(
    g: &Graph,
    desc: &TargetDesc,
    opts: &OptOptions,
) -> Result<(Graph, Report), OptError> {
    optimize_with(g, desc, opts, rules::all(opts.precision))
}

/// [`optimize`] with a rule set of the caller's (tests of the bounds and of rule errors).
pub fn optimize_with(
    g: &Graph,
    desc: &TargetDesc,
    opts: &OptOptions,
    rules: Vec<std::sync::Arc<dyn rules::Rule>>,
) -> Result<(Graph, Report), OptError> {
    // The rules and extraction are written not to panic; this guard keeps the promise that no
    // model that imports makes the optimizer panic, should one of them (or egg) still do so.
    let run = std::panic::AssertUnwindSafe(|| run(g, desc, opts, rules));
    match std::panic::catch_unwind(run) {
        Ok(r) => r,
        Err(p) => Err(OptError::Internal(format!(
            "panic (a bug): {}",
            tessera_ir::error::panic_message(p.as_ref())
        ))),
    }
}

fn run(
    g: &Graph,
    desc: &TargetDesc,
    opts: &OptOptions,
    rules: Vec<std::sync::Arc<dyn rules::Rule>>,
) -> Result<(Graph, Report), OptError> {
    let model = cost::CostModel::new(desc);
    let before = model.graph_cost(g);
    let mut report = Report::new(desc, opts, g.nodes.len(), before);
    if opts.level == OptLevel::O0 {
        return Ok((g.clone(), report));
    }
    let limits = opts.limits.unwrap_or_else(|| Limits::for_level(opts.level));
    let start = Instant::now();
    let loaded = convert::to_egraph(g, opts.folder.clone())?;
    let rules: Vec<_> = rules.into_iter().map(rules::Adapt::rewrite).collect();
    let mut runner = egg::Runner::default()
        .with_node_limit(limits.nodes)
        .with_iter_limit(limits.iterations)
        .with_time_limit(limits.time)
        .with_egraph(loaded.egraph);
    runner = runner.run(&rules);
    let loaded = convert::Loaded {
        egraph: runner.egraph,
        class: loaded.class,
        roots: loaded.roots,
    };
    let eg = &loaded.egraph;
    report.iterations = runner.iterations.len();
    report.egraph_nodes = eg.total_number_of_nodes();
    report.egraph_classes = eg.number_of_classes();
    report.stop = report::stop_text(runner.stop_reason.as_ref(), &limits);
    report.fired = eg.analysis.fired.clone();
    if let Some((rule, message)) = &eg.analysis.error {
        return Err(OptError::Rule {
            rule: rule.clone(),
            message: message.clone(),
        });
    }
    if report.fired.is_empty() {
        report.time = start.elapsed();
        return Ok((g.clone(), report));
    }
    let extractor = egg::Extractor::new(eg, cost::Cycles { eg, model: &model });
    let choice = |id: egg::Id| extractor.find_best_node(id).clone();
    let (out, origins) = convert::from_egraph(g, &loaded, &choice)?;
    let after = model.graph_cost(&out);
    report.time = start.elapsed();
    if after >= before {
        return Ok((g.clone(), report));
    }
    tessera_ir::verify(&out)
        .map_err(|e| OptError::Internal(format!("the optimized graph does not verify: {e}")))?;
    report.cost_after = after;
    report.nodes_after = out.nodes.len();
    report.origins = origins;
    report.changed = true;
    Ok((out, report))
}
