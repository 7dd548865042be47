//! docs/ops.md's op table is generated from the frontend registry and the lowering's
//! execution classes; this test fails when it is stale. `TESSERA_BLESS=1` rewrites it.

use std::fmt::Write;

const BEGIN: &str = "<!-- BEGIN generated op table (TESSERA_BLESS=1 cargo test -p tessera-tests --test ops_doc) -->";
const END: &str = "<!-- END generated op table -->";

fn table() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| domain | op | opsets | graph-IR op | runs as | targets |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for line in tessera_onnx::registry() {
        let domain = if line.domain.is_empty() {
            "ai.onnx"
        } else {
            line.domain
        };
        let opsets = match line.upgrades_below.as_slice() {
            [] => "all".to_string(),
            b => {
                let parts: Vec<String> = b
                    .iter()
                    .map(|&x| {
                        if x == i64::MAX {
                            "rewritten at import".to_string()
                        } else {
                            format!("older than {x} upgraded")
                        }
                    })
                    .collect();
                format!("all ({})", parts.join(", "))
            }
        };
        let _ = writeln!(
            out,
            "| {domain} | {} | {opsets} | {} | {} | host, interp |",
            line.onnx,
            line.op.name(),
            tessera_lower::execution_of(line.op)
        );
    }
    out
}

#[test]
fn ops_doc_table_is_current() {
    let path = tessera_tests::root().join("docs/ops.md");
    let doc = std::fs::read_to_string(&path).expect("read docs/ops.md");
    let (Some(a), Some(b)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("docs/ops.md lacks the table markers")
    };
    let want = format!("{BEGIN}\n{}{END}", table());
    let have = &doc[a..b + END.len()];
    if std::env::var_os("TESSERA_BLESS").is_some() {
        let new = format!("{}{want}{}", &doc[..a], &doc[b + END.len()..]);
        std::fs::write(&path, new).expect("write docs/ops.md");
        return;
    }
    assert_eq!(
        have, want,
        "docs/ops.md's op table is stale: rerun with TESSERA_BLESS=1"
    );
}
