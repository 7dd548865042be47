//! What an optimizer run did, for `tessera compile --report` (text) and `--report-json`:
//! the rules that fired and how often, the e-graph's size, iterations, time and why it
//! stopped, the cost before and after on the target, and the source nodes behind each node of
//! the result (the driver adds the kernels each node became).

use crate::convert::Origin;
use crate::{Limits, OptLevel, OptOptions};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;
use tessera_target::TargetDesc;

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub target: String,
    pub level: u8,
    pub precision: String,
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// Estimated cycles (see `cost.rs`).
    pub cost_before: f64,
    pub cost_after: f64,
    pub fired: BTreeMap<String, usize>,
    pub iterations: usize,
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    pub time: Duration,
    /// Why the run stopped: `saturated`, or the limit hit.
    pub stop: String,
    /// Whether the result differs from the input graph.
    pub changed: bool,
    pub origins: Vec<Origin>,
    /// Kernel names per node of the result, filled by the driver after lowering.
    pub kernels: Vec<Vec<String>>,
}

impl Report {
    pub fn new(desc: &TargetDesc, opts: &OptOptions, nodes: usize, cost: f64) -> Report {
        Report {
            target: desc.name.clone(),
            level: match opts.level {
                OptLevel::O0 => 0,
                OptLevel::O1 => 1,
                OptLevel::O2 => 2,
            },
            precision: opts.precision.to_string(),
            nodes_before: nodes,
            nodes_after: nodes,
            cost_before: cost,
            cost_after: cost,
            stop: "not run".into(),
            ..Report::default()
        }
    }

    /// The text form `tessera compile --report` prints.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "optimizer: target {}, opt-level {}, precision {}",
            self.target, self.level, self.precision
        );
        let _ = writeln!(
            s,
            "  e-graph: {} nodes, {} classes, {} iterations, {:.1} ms, stopped: {}",
            self.egraph_nodes,
            self.egraph_classes,
            self.iterations,
            self.time.as_secs_f64() * 1e3,
            self.stop
        );
        let _ = writeln!(
            s,
            "  cost ({}): {:.0} -> {:.0} cycles ({:.2}x), graph nodes {} -> {}",
            self.target,
            self.cost_before,
            self.cost_after,
            self.cost_before / self.cost_after.max(1e-9),
            self.nodes_before,
            self.nodes_after
        );
        if self.fired.is_empty() {
            let _ = writeln!(s, "  rules fired: none");
        } else {
            let _ = writeln!(s, "  rules fired:");
            for (r, n) in &self.fired {
                let _ = writeln!(s, "    {r:<22} {n}");
            }
        }
        if !self.changed && !self.fired.is_empty() {
            let _ = writeln!(
                s,
                "  kept the input graph: what the rules found is not cheaper on {}",
                self.target
            );
        }
        if self.changed {
            let _ = writeln!(s, "  nodes of the result (kernels <- source nodes):");
            for (i, o) in self.origins.iter().enumerate() {
                let k = self
                    .kernels
                    .get(i)
                    .map(|k| k.join(", "))
                    .unwrap_or_default();
                let _ = writeln!(s, "    {} [{}] <- {}", o.node, k, o.from.join(", "));
            }
        }
        s
    }

    /// [`Report::json`] as pretty-printed text.
    pub fn json_text(&self) -> String {
        serde_json::to_string_pretty(&self.json()).unwrap_or_default() + "\n"
    }

    /// The JSON form `--report-json` writes.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "target": self.target,
            "opt_level": self.level,
            "precision": self.precision,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "cost_before": self.cost_before,
            "cost_after": self.cost_after,
            "rules_fired": self.fired,
            "iterations": self.iterations,
            "egraph_nodes": self.egraph_nodes,
            "egraph_classes": self.egraph_classes,
            "time_ms": self.time.as_secs_f64() * 1e3,
            "stop": self.stop,
            "changed": self.changed,
            "nodes": self.origins.iter().enumerate().map(|(i, o)| serde_json::json!({
                "node": o.node,
                "from": o.from,
                "kernels": self.kernels.get(i).cloned().unwrap_or_default(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Why a run stopped, naming the limit hit.
pub fn stop_text(reason: Option<&egg::StopReason>, limits: &Limits) -> String {
    match reason {
        None => "not run".into(),
        Some(egg::StopReason::Saturated) => "saturated".into(),
        // egg reports the size it reached; the report names the limit that was set.
        Some(egg::StopReason::IterationLimit(_)) => {
            format!("iteration limit ({})", limits.iterations)
        }
        Some(egg::StopReason::NodeLimit(_)) => format!("node limit ({})", limits.nodes),
        Some(egg::StopReason::TimeLimit(_)) => {
            format!("time limit ({} ms)", limits.time.as_millis())
        }
        Some(egg::StopReason::Other(s)) => s.clone(),
    }
}
