//! Test helpers: a terse graph builder shared by the unit tests of every module.

use crate::shape::Dim;
use crate::{Attr, DType, Graph, Node, Op, Shape, Tensor, TensorType, ValueId};

/// Parses a type such as `f32[N,3]` (test input only).
pub fn ty(s: &str) -> TensorType {
    let (d, rest) = s.split_once('[').expect("type has [");
    let dims = rest.trim_end_matches(']');
    let dims = if dims.is_empty() {
        vec![]
    } else {
        dims.split(',')
            .map(|x| {
                x.trim()
                    .parse::<u64>()
                    .map(Dim::Fixed)
                    .unwrap_or_else(|_| Dim::Sym(x.trim().to_string()))
            })
            .collect()
    };
    TensorType::new(d.parse::<DType>().expect("dtype"), Shape(dims))
}

pub struct B {
    pub g: Graph,
    n: usize,
}

impl B {
    pub fn new() -> B {
        B {
            g: Graph::new("t"),
            n: 0,
        }
    }

    pub fn input(&mut self, name: &str, t: &str) -> ValueId {
        let id = self.g.add_value(name, Some(ty(t)));
        self.g.inputs.push(id);
        id
    }

    pub fn ints(&mut self, name: &str, v: &[i64]) -> ValueId {
        self.g
            .add_const(name, Tensor::from_i64(vec![v.len() as u64], v))
    }

    pub fn konst(&mut self, name: &str, t: Tensor) -> ValueId {
        self.g.add_const(name, t)
    }

    /// Adds a node with `n_out` untyped results.
    pub fn node(
        &mut self,
        op: Op,
        inputs: &[Option<ValueId>],
        n_out: usize,
        attrs: &[(&str, Attr)],
    ) -> Vec<ValueId> {
        let k = self.n;
        self.n += 1;
        let outputs: Vec<ValueId> = (0..n_out)
            .map(|j| self.g.add_value(format!("n{k}_{j}"), None))
            .collect();
        self.g.nodes.push(Node {
            name: format!("n{k}"),
            op,
            inputs: inputs.to_vec(),
            outputs: outputs.clone(),
            attrs: attrs
                .iter()
                .map(|(n, a)| (n.to_string(), a.clone()))
                .collect(),
        });
        outputs
    }

    pub fn node1(&mut self, op: Op, inputs: &[ValueId], attrs: &[(&str, Attr)]) -> ValueId {
        let ins: Vec<Option<ValueId>> = inputs.iter().map(|&i| Some(i)).collect();
        self.node(op, &ins, 1, attrs)[0]
    }

    /// Runs inference and returns the printed type of `v`.
    pub fn infer(&mut self, v: ValueId) -> Result<String, crate::IrError> {
        crate::infer_shapes(&mut self.g)?;
        Ok(self.g.ty(v).map(|t| t.to_string()).unwrap_or_default())
    }
}

pub fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}
