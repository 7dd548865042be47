//! `tessera`: the command-line tool. The only place in Tessera that prints to the terminal or
//! chooses an exit code: 0 ok, 1 error, 2 usage, 3 unsupported model, op or target.
//! Each subcommand is one function below; the work happens in `tessera-driver`.

use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use tessera_driver::{conformance, exit, npy, targets, CompileOptions, DriverError};
use tessera_ir::Tensor;
use tessera_runtime::{Device, Model};

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Compile and run ONNX models on many AI chips through one IR"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// A hand-written kernel bound to an ONNX op (a `.tk` file, or a folder of them), for
    /// `compile`, `run` and `bench` (repeatable; see docs/kernel-ir.md).
    #[arg(long = "custom-op", value_name = "FILE|DIR", global = true)]
    custom_ops: Vec<PathBuf>,
    #[command(flatten)]
    opt: OptArgs,
}

/// The e-graph optimizer's flags, for `compile`, `run` and `bench` (docs/optimizer.md).
#[derive(clap::Args, Clone, Debug)]
struct OptArgs {
    /// 0: no optimizer (the plain pipeline); 1: every rule, tight limits; 2: wider limits.
    #[arg(long, value_name = "0|1|2", default_value = "1", global = true)]
    opt_level: String,
    /// Which dtypes the optimizer may change: exact (never), f16, bf16, int8.
    #[arg(long, value_name = "POLICY", default_value = "exact", global = true)]
    precision: String,
}

/// What `compile` says about the optimizer.
#[derive(clap::Args, Clone, Debug, Default)]
struct ExplainArgs {
    /// Print what the optimizer did (rules, e-graph, cost, the source nodes of each kernel).
    #[arg(long)]
    report: bool,
    /// Write the optimizer report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    report_json: Option<PathBuf>,
    /// Print an intermediate form: `graph` is the graph IR before and after optimisation.
    /// `static-lib` writes, instead of a .tsa, a static library (`-o model.a`, or an object
    /// with `-o model.o`) holding every kernel and the plan behind a C entry point, and its
    /// header (`model.h`); LLVM CPU targets only (docs/aot.md). `kir` prints the kernel IR
    /// of every kernel and `asm` the target's code for each (machine instructions, or the
    /// NPU's assembly); both write no artifact, and work for cross targets too.
    #[arg(long, value_name = "WHAT", value_parser = ["graph", "static-lib", "kir", "asm"])]
    emit: Option<String>,
}

/// The `--custom-op` paths of this invocation, set once in `main` before any command runs.
static CUSTOM_OPS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
/// The optimizer flags of this invocation, set once in `main`.
static OPT: std::sync::OnceLock<OptArgs> = std::sync::OnceLock::new();

/// Compile options for `target`, with this invocation's custom ops and optimizer flags
/// (checked in `main`, so they parse here).
fn options(target: &str) -> CompileOptions {
    let mut o = CompileOptions::for_target(target);
    o.custom_ops = CUSTOM_OPS.get().cloned().unwrap_or_default();
    if let Some(a) = OPT.get() {
        o.opt_level = a.opt_level.parse().unwrap_or_default();
        o.precision = a.precision.parse().unwrap_or_default();
    }
    o
}

/// What `compile` and `show` take: a model, a target, an output file, and inputs or shapes
/// that fix the model's symbolic dims.
#[derive(clap::Args)]
struct CompileArgs {
    model: PathBuf,
    #[arg(long, default_value = "host")]
    target: String,
    /// The artifact (or library) to write; not needed with `--emit kir|asm`, which print.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Example input NAME=FILE.npy: fixes its shape, and binds its value if it decides a shape.
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Concrete shape for an input with symbolic dims: NAME=2x3x224x224.
    #[arg(long = "shape", value_name = "NAME=DIMS")]
    shapes: Vec<String>,
    /// Accept an opset newer than the newest Tessera knows, treating the model as that
    /// newest opset (a warning names each one). Without it such a model is refused (exit 3).
    #[arg(long)]
    allow_newer_opset: bool,
    /// The CPU to compile for, on the LLVM CPU targets: `native` (the default) or a portable
    /// level such as `x86-64-v3`. The artifact's fingerprint records the features it needs.
    #[arg(long)]
    cpu: Option<String>,
    #[command(flatten)]
    explain: ExplainArgs,
}

impl CompileArgs {
    /// The target as the driver takes it: `TARGET@CPU` when `--cpu` is given.
    fn target(&self) -> String {
        with_cpu(self.target.clone(), self.cpu.clone())
    }
}

/// `TARGET@CPU` when a `--cpu` is given, else the target.
fn with_cpu(target: String, cpu: Option<String>) -> String {
    match cpu {
        Some(cpu) => format!("{target}@{cpu}"),
        None => target,
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile an ONNX model into a .tsa artifact (or a static library: --emit static-lib).
    Compile(CompileArgs),
    /// Run an ONNX model or a .tsa artifact.
    Run {
        model: PathBuf,
        #[arg(long, default_value = "host")]
        target: String,
        /// An input as NAME=FILE.npy (repeatable).
        #[arg(long = "input", value_name = "NAME=FILE.npy")]
        inputs: Vec<String>,
        /// A folder of input_0.pb … (serialized ONNX TensorProtos in graph-input order).
        #[arg(long = "inputs", value_name = "DIR", conflicts_with = "inputs")]
        inputs_dir: Option<PathBuf>,
        /// Write output_0.pb … here (with --inputs) or OUTPUT_NAME.npy files (with --input).
        #[arg(long = "outputs", value_name = "DIR")]
        outputs_dir: Option<PathBuf>,
        /// Refuse the artifact unless its SHA-256 digest (as `tessera compile` prints it) is HEX.
        #[arg(long, value_name = "HEX")]
        expect_digest: Option<String>,
        /// Refuse the run, before allocating, if it needs more scratch memory than this
        /// (bytes, or with a K, M or G suffix for KiB, MiB, GiB).
        #[arg(long, value_name = "BYTES")]
        max_memory: Option<String>,
        /// Accept an opset newer than the newest Tessera knows, treating the model as that
        /// newest opset (a warning names each one). Without it such a model is refused (exit 3).
        #[arg(long)]
        allow_newer_opset: bool,
        /// npu-sim targets: run the simulator in cycle mode and print each kernel's cycle report.
        #[arg(long)]
        cycles: bool,
        /// The CPU the LLVM CPU targets compile for (as `compile --cpu`): `native` (the default)
        /// or a portable level such as `x86-64-v3`.
        #[arg(long)]
        cpu: Option<String>,
    },
    /// List targets.
    Targets,
    /// Run the ONNX backend node tests on a target.
    Conformance {
        #[arg(long, default_value = "host")]
        target: String,
        /// Only tests whose name matches this regular expression.
        #[arg(long)]
        filter: Option<String>,
        #[arg(long, default_value_t = default_jobs())]
        jobs: usize,
        /// Where the node tests are (generated by scripts/gen-node-tests.sh).
        #[arg(long, default_value = "tests/data/node-cache")]
        data: PathBuf,
        /// The JSON report's path.
        #[arg(long, default_value = "conformance-report.json")]
        report: PathBuf,
        /// Print every test, not only the summary and failures.
        #[arg(long)]
        verbose: bool,
    },
    /// Draw what a model compiles to: one self-contained HTML page (graph, kernels, grids,
    /// code sizes). MODEL may also be a .tsa artifact, drawn as its plan.
    Show(CompileArgs),
    /// The simulated NPU: `tessera npu-sim run KERNEL.asm --in r1=A.npy … ` (see `npu-sim help`).
    #[command(name = "npu-sim", disable_help_flag = true)]
    NpuSim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Median latency of a model over repeated runs after a warm-up.
    Bench {
        model: PathBuf,
        #[arg(long, default_value = "host")]
        target: String,
        /// Also time this target in the same process and print the speed ratio.
        #[arg(long)]
        baseline: Option<String>,
        /// Also time the same target compiled at this opt-level (0: without the optimizer)
        /// and print the speed ratio.
        #[arg(long, value_name = "0|1|2")]
        baseline_opt_level: Option<String>,
        #[arg(long, default_value_t = 10)]
        runs: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Inputs as NAME=FILE.npy; missing inputs are filled with deterministic values.
        #[arg(long = "input", value_name = "NAME=FILE.npy")]
        inputs: Vec<String>,
        /// Accept an opset newer than the newest Tessera knows, treating the model as that
        /// newest opset (a warning names each one). Without it such a model is refused (exit 3).
        #[arg(long)]
        allow_newer_opset: bool,
        /// npu-sim targets: after timing, run once in cycle mode and print the cycle reports.
        #[arg(long)]
        cycles: bool,
        /// After timing, run `--runs` more times measuring each kernel launch, and print the
        /// kernels by time (ms per run, share of the run, launches).
        #[arg(long)]
        profile: bool,
        /// The CPU the LLVM CPU targets compile for (as `compile --cpu`): `native` (the default)
        /// or a portable level such as `x86-64-v3`.
        #[arg(long)]
        cpu: Option<String>,
    },
}

/// Rust ignores SIGPIPE, which turns `tessera … | head` into a panic on the next print. Take
/// the default action instead, so a closed pipe ends the process quietly, as it does for other
/// Unix tools.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE as u8 } else { 0 });
        }
    };
    let _ = CUSTOM_OPS.set(cli.custom_ops);
    let checked = cli
        .opt
        .opt_level
        .parse::<tessera_driver::OptLevel>()
        .and(cli.opt.precision.parse::<tessera_driver::Precision>())
        .map_err(DriverError::from);
    if let Err(e) = checked {
        eprintln!("error: {e}");
        return ExitCode::from(e.exit_code() as u8);
    }
    let _ = OPT.set(cli.opt);
    match dispatch(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn dispatch(cmd: Cmd) -> Result<(), DriverError> {
    match cmd {
        Cmd::Compile(a) => compile(
            &a.model,
            &a.target(),
            a.output.as_deref(),
            &a.inputs,
            &a.shapes,
            Newer::flag(a.allow_newer_opset),
            &a.explain,
        ),
        Cmd::Run {
            model,
            target,
            inputs,
            inputs_dir,
            outputs_dir,
            allow_newer_opset,
            expect_digest,
            max_memory,
            cycles,
            cpu,
        } => {
            let target = with_cpu(target, cpu);
            let load = LoadOpts {
                newer: Newer::flag(allow_newer_opset),
                digest: expect_digest.as_deref().map(parse_digest).transpose()?,
                max_memory: max_memory.as_deref().map(parse_bytes).transpose()?,
                opt_level: None,
            };
            let dev = Dev::new(&target, cycles)?;
            run(
                &model,
                &target,
                &dev,
                &inputs,
                inputs_dir.as_deref(),
                outputs_dir.as_deref(),
                load,
            )?;
            dev.print_cycles();
            Ok(())
        }
        Cmd::Targets => {
            println!("{:<14} {:<22} description", "target", "status");
            for t in targets::all() {
                let status = match (t.available, t.feature) {
                    (true, _) => "built".to_string(),
                    (false, Some(f)) => format!("needs --features {f}"),
                    (false, None) => "not yet".to_string(),
                };
                println!("{:<14} {:<22} {}", t.name, status, t.description);
            }
            Ok(())
        }
        Cmd::Conformance {
            target,
            filter,
            jobs,
            data,
            report,
            verbose,
        } => conformance_cmd(&target, filter.as_deref(), jobs, &data, &report, verbose),
        Cmd::NpuSim { args } => tessera_npu_sim::cli::main_with_args(&args).map_err(|e| match e {
            tessera_npu_sim::SimError::Args(m) => DriverError::Usage(format!("npu-sim: {m}")),
            other => DriverError::Tool(format!("npu-sim: {other}")),
        }),
        Cmd::Bench {
            model,
            target,
            baseline,
            baseline_opt_level,
            runs,
            warmup,
            inputs,
            allow_newer_opset,
            cycles,
            profile,
            cpu,
        } => bench(
            &model,
            &with_cpu(target, cpu),
            baseline.as_deref(),
            baseline_opt_level.as_deref(),
            BenchRuns {
                runs,
                warmup,
                cycles,
                profile,
            },
            &inputs,
            Newer::flag(allow_newer_opset),
        ),
        Cmd::Show(a) => match a.output.as_deref() {
            Some(out) => show(
                &a.model,
                &a.target(),
                out,
                &a.inputs,
                &a.shapes,
                Newer::flag(a.allow_newer_opset),
            ),
            None => Err(DriverError::Usage("`show` needs `-o PAGE.html`".into())),
        },
    }
}

fn parse_named(specs: &[String]) -> Result<BTreeMap<String, Tensor>, DriverError> {
    let mut m = BTreeMap::new();
    for s in specs {
        let (name, file) = s
            .split_once('=')
            .ok_or_else(|| DriverError::Usage(format!("`--input {s}`: expected NAME=FILE.npy")))?;
        m.insert(name.to_string(), npy::read(Path::new(file))?);
    }
    Ok(m)
}

fn parse_shapes(specs: &[String]) -> Result<BTreeMap<String, Vec<u64>>, DriverError> {
    let mut m = BTreeMap::new();
    for s in specs {
        let (name, dims) = s.split_once('=').ok_or_else(|| {
            DriverError::Usage(format!(
                "`--shape {s}`: expected NAME=DIMS like x=1x3x224x224"
            ))
        })?;
        let dims = dims
            .split('x')
            .filter(|d| !d.is_empty())
            .map(|d| {
                d.parse::<u64>().map_err(|_| {
                    DriverError::Usage(format!("`--shape {s}`: `{d}` is not a number"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        m.insert(name.to_string(), dims);
    }
    Ok(m)
}

/// Whether `--allow-newer-opset` was given, and whether to warn about what it overrides.
#[derive(Clone, Copy)]
struct Newer {
    allow: bool,
    warn: bool,
}

impl Newer {
    fn flag(allow: bool) -> Newer {
        Newer { allow, warn: true }
    }

    /// Compile options for `target`, warning about each opset the flag overrides.
    fn options(self, model: &Path, target: &str) -> Result<CompileOptions, DriverError> {
        if self.allow && self.warn {
            for n in tessera_driver::newer_opsets(model)? {
                eprintln!("warning: {n}");
            }
        }
        Ok(CompileOptions {
            allow_newer_opset: self.allow,
            ..options(target)
        })
    }

    /// The same permission without a second warning (the bench baseline compiles again).
    fn quiet(self) -> Newer {
        Newer {
            warn: false,
            ..self
        }
    }
}

/// How `run` loads its model: the opset permission, the digest it must have, the memory cap.
#[derive(Clone, Copy)]
struct LoadOpts {
    newer: Newer,
    digest: Option<[u8; 32]>,
    max_memory: Option<u64>,
    /// An opt-level other than `--opt-level`'s (the bench baseline).
    opt_level: Option<tessera_driver::OptLevel>,
}

fn parse_digest(hex: &str) -> Result<[u8; 32], DriverError> {
    tessera_runtime::artifact::parse_digest(hex)
        .map_err(|m| DriverError::Usage(format!("--expect-digest: {m}")))
}

/// `1234`, `64K`, `512M`, `2G` (binary multiples).
fn parse_bytes(s: &str) -> Result<u64, DriverError> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&t[..i], 1u64 << 10),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&t[..i], 1 << 20),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| {
            DriverError::Usage(format!(
                "--max-memory `{s}`: expected bytes like 1048576, 64K, 512M or 2G"
            ))
        })
}

/// A progress bar on stderr when both stdout and stderr are terminals; hidden otherwise, so
/// pipes, files and CI logs stay clean.
fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !(std::io::stdout().is_terminal() && std::io::stderr().is_terminal()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let style =
        indicatif::ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

/// Compile options from `compile`'s and `show`'s flags.
fn compile_opts(
    model: &Path,
    target: &str,
    inputs: &[String],
    shapes: &[String],
    newer: Newer,
) -> Result<CompileOptions, DriverError> {
    let mut opts = newer
        .options(model, target)?
        .with_inputs(&parse_named(inputs)?);
    opts.input_shapes.extend(parse_shapes(shapes)?);
    Ok(opts)
}

/// `compile --emit static-lib`: the library and its header.
#[cfg(feature = "llvm")]
fn static_lib(
    model: &Path,
    opts: &CompileOptions,
    output: &Path,
    start: Instant,
) -> Result<(), DriverError> {
    use tessera_driver::aot;
    let prefix = aot::prefix_for(output);
    let lib = aot::compile_static_lib(model, opts, &prefix)?;
    let header = aot::write_static_lib(&lib, output)?;
    println!(
        "wrote {} ({} bytes of code and data) and {}: `{prefix}_run`, {} inputs, {} outputs, {} bytes of workspace, in {:.1}s",
        output.display(),
        lib.object.len(),
        header.display(),
        lib.inputs.len(),
        lib.outputs.len(),
        lib.workspace_bytes,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(not(feature = "llvm"))]
fn static_lib(
    _model: &Path,
    opts: &CompileOptions,
    _output: &Path,
    _start: Instant,
) -> Result<(), DriverError> {
    Err(DriverError::Lookup(targets::LookupError::FeatureDisabled {
        name: format!("{} (--emit static-lib)", opts.target),
        feature: "llvm".into(),
    }))
}

fn compile(
    model: &Path,
    target: &str,
    output: Option<&Path>,
    inputs: &[String],
    shapes: &[String],
    newer: Newer,
    explain: &ExplainArgs,
) -> Result<(), DriverError> {
    let prints = matches!(explain.emit.as_deref(), Some("kir" | "asm"));
    let output = match output {
        Some(o) => o,
        None if prints => Path::new(""),
        None => {
            return Err(DriverError::Usage(
                "`compile` needs `-o FILE` (only `--emit kir|asm` print instead of writing)".into(),
            ))
        }
    };
    let opts = compile_opts(model, target, inputs, shapes, newer)?;
    let start = Instant::now();
    if explain.emit.as_deref() == Some("static-lib") {
        return static_lib(model, &opts, output, start);
    }
    // Stages: import, lower, then one step per kernel compiled, then writing.
    let bar = progress_bar(3, "importing");
    let graph = tessera_driver::import(model, &opts)?;
    bar.inc(1);
    bar.set_message("optimizing");
    let imported = graph;
    let optimized = tessera_driver::optimize(&imported, &opts);
    let (graph, mut report) = match optimized {
        Ok(r) => (r.0, r.1),
        Err(e) => {
            bar.finish_and_clear();
            return Err(e);
        }
    };
    if explain.emit.as_deref() == Some("graph") {
        println!(
            "// graph before optimisation\n{}",
            tessera_ir::text::print(&imported)
        );
        println!(
            "// graph after optimisation\n{}",
            tessera_ir::text::print(&graph)
        );
    }
    let text = match explain.emit.as_deref() {
        Some("kir") => Some(tessera_driver::KernelText::Kir),
        Some("asm") => Some(tessera_driver::KernelText::Asm),
        _ => None,
    };
    if let Some(what) = text {
        bar.finish_and_clear();
        print!(
            "{}",
            tessera_driver::kernel_text(&graph, &opts.target, what)?
        );
        return Ok(());
    }
    bar.set_message("lowering");
    let compiled = tessera_driver::compile_graph_traced(
        &graph,
        &model.display().to_string(),
        &opts.target,
        &mut |p| match p {
            tessera_driver::Progress::Lowered { kernels } => {
                bar.inc(1);
                bar.set_length(3 + kernels as u64);
                bar.set_message("codegen");
            }
            tessera_driver::Progress::Kernel { .. } => bar.inc(1),
        },
    );
    let artifact = match compiled {
        Ok(c) => {
            report.kernels = c
                .node_kernels
                .iter()
                .map(|r| {
                    c.kernels
                        .get(r.clone())
                        .unwrap_or_default()
                        .iter()
                        .map(|k| k.name.clone())
                        .collect()
                })
                .collect();
            c.artifact
        }
        Err(e) => {
            bar.finish_and_clear();
            return Err(e);
        }
    };
    bar.set_message("writing");
    let written = tessera_driver::write_artifact(output, &artifact);
    bar.finish_and_clear();
    written?;
    let kernels = artifact.kernels.len();
    println!(
        "compiled {} for {target}: {kernels} kernels, {} plan steps, {:.1} ms -> {}",
        model.display(),
        artifact.plan.steps.len(),
        start.elapsed().as_secs_f64() * 1e3,
        output.display()
    );
    println!(
        "sha256 {}",
        tessera_runtime::artifact::digest_hex(&artifact.digest())
    );
    if explain.report {
        print!("{}", report.text());
    }
    if let Some(path) = &explain.report_json {
        tessera_driver::write_atomic(path, report.json_text().as_bytes())?;
    }
    Ok(())
}

fn is_artifact(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "tsa")
}

/// The device a command runs on: the registry's for the target, or with `--cycles` an npu-sim
/// device in cycle mode, which keeps a report per kernel launch.
struct Dev {
    device: Arc<dyn Device>,
    npu: Option<tessera_npu_sim::NpuSimDevice>,
}

impl Dev {
    fn new(target: &str, cycles: bool) -> Result<Dev, DriverError> {
        if !cycles {
            return Ok(Dev {
                device: targets::device(target)?,
                npu: None,
            });
        }
        match targets::npu_sim_device(target, tessera_npu_sim::Mode::Cycle)? {
            Some(d) => Ok(Dev {
                device: Arc::new(d.clone()),
                npu: Some(d),
            }),
            None => Err(DriverError::Usage(format!(
                "--cycles needs an npu-sim target (npu-sim, npu-sim-lite), not `{target}`"
            ))),
        }
    }

    /// Prints the cycle report of every launch since the last call, then the totals.
    fn print_cycles(&self) {
        let Some(npu) = &self.npu else { return };
        let reports = npu.take_reports();
        for (i, r) in reports.iter().enumerate() {
            println!("== launch {i}: kernel `{}` ==\n{}\n", r.kernel, r.report);
        }
        let total: u64 = reports.iter().map(|r| r.report.total_cycles).sum();
        println!("== totals over {} launches ==", reports.len());
        println!("total cycles      {total:>12}");
        println!("pipe          busy        stall   busy%");
        for p in tessera_npu_sim::sim::PIPES {
            let busy: u64 = reports
                .iter()
                .filter_map(|r| r.report.pipe(p))
                .map(|x| x.busy)
                .sum();
            let stall: u64 = reports
                .iter()
                .filter_map(|r| r.report.pipe(p))
                .map(|x| x.stall)
                .sum();
            println!(
                "{:<5} {busy:>12} {stall:>12}  {:>5.1}",
                p.name(),
                100.0 * busy as f64 / total.max(1) as f64
            );
        }
        println!("edge          bytes   transfers");
        if let Some(first) = reports.first() {
            for e in &first.report.edges {
                let (bytes, n): (u64, u64) = reports
                    .iter()
                    .filter_map(|r| r.report.edge(e.src, e.dst))
                    .fold((0, 0), |(b, n), x| (b + x.bytes, n + x.transfers));
                println!("{:<9} {bytes:>12} {n:>9}", format!("{}->{}", e.src, e.dst));
            }
        }
        let issued: u64 = reports.iter().map(|r| r.report.macs_issued).sum();
        let useful: u64 = reports.iter().map(|r| r.report.macs_useful).sum();
        let ideal: f64 = reports.iter().map(|r| r.report.ideal_cube_cycles).sum();
        println!("MACs issued       {issued:>12}");
        println!("MACs useful       {useful:>12}");
        println!("ideal Cube cycles {ideal:>12.0}");
        println!(
            "Cube utilisation  {:>11.1}%",
            100.0 * ideal / total.max(1) as f64
        );
    }
}

/// Loads `model` (an .onnx compiled now, with `inputs` fixing shapes, or a .tsa) on `dev`.
fn load_model(
    model: &Path,
    target: &str,
    dev: &Dev,
    inputs: &BTreeMap<String, Tensor>,
    load: LoadOpts,
) -> Result<Model, DriverError> {
    let mut m = if is_artifact(model) {
        Model::load_file_expecting(model, dev.device.clone(), load.digest.as_ref())?
    } else {
        let mut opts = load.newer.options(model, target)?.with_inputs(inputs);
        if let Some(l) = load.opt_level {
            opts.opt_level = l;
        }
        let artifact = tessera_driver::compile_file(model, &opts)?;
        if let Some(want) = &load.digest {
            let found = artifact.digest();
            if &found != want {
                return Err(tessera_runtime::RuntimeError::DigestMismatch {
                    expected: tessera_runtime::artifact::digest_hex(want),
                    found: tessera_runtime::artifact::digest_hex(&found),
                }
                .into());
            }
        }
        Model::load(artifact, dev.device.clone())?
    };
    m.set_max_memory(load.max_memory);
    Ok(m)
}

/// Orders named inputs as the model wants them; names every missing or unknown one.
fn order_inputs(
    model: &Model,
    mut named: BTreeMap<String, Tensor>,
) -> Result<Vec<Tensor>, DriverError> {
    let mut out = Vec::new();
    for io in model.inputs() {
        out.push(named.remove(&io.name).ok_or_else(|| {
            DriverError::Usage(format!(
                "missing input `{}` ({} {:?})",
                io.name, io.dtype, io.dims
            ))
        })?);
    }
    if let Some(extra) = named.keys().next() {
        return Err(DriverError::Usage(format!(
            "the model has no input named `{extra}`"
        )));
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn run(
    model: &Path,
    target: &str,
    dev: &Dev,
    inputs: &[String],
    inputs_dir: Option<&Path>,
    outputs_dir: Option<&Path>,
    load: LoadOpts,
) -> Result<(), DriverError> {
    if let Some(dir) = inputs_dir {
        let mut tensors = Vec::new();
        for k in 0.. {
            let p = dir.join(format!("input_{k}.pb"));
            if !p.is_file() {
                break;
            }
            tensors.push(tessera_onnx::read_tensor_file(&p)?);
        }
        let names = if is_artifact(model) {
            Model::load_file_expecting(model, dev.device.clone(), load.digest.as_ref())?
                .inputs()
                .iter()
                .map(|i| i.name.clone())
                .collect()
        } else {
            tessera_onnx::input_names(model)?
        };
        if names.len() != tensors.len() {
            return Err(DriverError::Usage(format!(
                "the model has {} inputs but {} holds {} input_K.pb files",
                names.len(),
                dir.display(),
                tensors.len()
            )));
        }
        let named: BTreeMap<String, Tensor> = names.into_iter().zip(tensors).collect();
        let m = load_model(model, target, dev, &named, load)?;
        let outs = m.run(&order_inputs(&m, named)?)?;
        let out_dir =
            outputs_dir.ok_or_else(|| DriverError::Usage("--inputs needs --outputs DIR".into()))?;
        std::fs::create_dir_all(out_dir).map_err(|e| DriverError::Io {
            path: out_dir.display().to_string(),
            message: e.to_string(),
        })?;
        for (k, (t, io)) in outs.iter().zip(m.outputs()).enumerate() {
            let bytes = tessera_onnx::encode_tensor(t, &io.name);
            tessera_driver::write_atomic(&out_dir.join(format!("output_{k}.pb")), &bytes)?;
        }
        println!("wrote {} outputs to {}", outs.len(), out_dir.display());
        return Ok(());
    }
    let named = parse_named(inputs)?;
    let m = load_model(model, target, dev, &named, load)?;
    let outs = m.run(&order_inputs(&m, named)?)?;
    for (t, io) in outs.iter().zip(m.outputs()) {
        match outputs_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| DriverError::Io {
                    path: dir.display().to_string(),
                    message: e.to_string(),
                })?;
                let bytes = npy::encode(t)
                    .map_err(|m| DriverError::Usage(format!("output `{}`: {m}", io.name)))?;
                let file: String = io
                    .name
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let path = dir.join(format!("{file}.npy"));
                tessera_driver::write_atomic(&path, &bytes)?;
                println!(
                    "{}: {} {:?} -> {}",
                    io.name,
                    t.dtype,
                    t.dims,
                    path.display()
                );
            }
            None => print_tensor(&io.name, t),
        }
    }
    Ok(())
}

fn print_tensor(name: &str, t: &Tensor) {
    let n = t.num_elements();
    let shown: Vec<String> = (0..n.min(16))
        .map(|i| {
            if t.dtype.is_float() {
                format!("{:.6}", t.get_f64(i).unwrap_or(f64::NAN))
            } else {
                format!("{}", t.get_i64(i).unwrap_or(0))
            }
        })
        .collect();
    let more = if n > 16 {
        format!(", … ({n} elements)")
    } else {
        String::new()
    };
    println!(
        "{name}: {} {:?} [{}{more}]",
        t.dtype,
        t.dims,
        shown.join(", ")
    );
}

fn conformance_cmd(
    target: &str,
    filter: Option<&str>,
    jobs: usize,
    data: &Path,
    report: &Path,
    verbose: bool,
) -> Result<(), DriverError> {
    let re = filter
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| DriverError::Usage(format!("--filter: {e}")))?;
    if !data.is_dir() {
        return Err(DriverError::Usage(format!(
            "{} does not exist; run scripts/gen-node-tests.sh first",
            data.display()
        )));
    }
    let start = Instant::now();
    let bar = progress_bar(1, "tests");
    let results = conformance::run_suite_with_progress(
        data,
        target,
        re.as_ref(),
        jobs,
        None,
        &|done, total| {
            if done == 0 {
                bar.set_length(total as u64);
            } else {
                bar.inc(1);
            }
        },
    );
    bar.finish_and_clear();
    let results = results?;
    println!("{:<60} {:<12} {:<7} message", "test", "status", "kernels");
    for r in &results {
        if verbose
            || r.status == conformance::Status::Fail
            || r.status == conformance::Status::Error
        {
            let k = match r.dense_as_kernels {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            };
            let msg: String = r.message.chars().take(100).collect();
            println!("{:<60} {:<12} {:<7} {}", r.name, r.status.name(), k, msg);
        }
    }
    let s = conformance::summary(&results);
    let get = |st| s.get(&st).copied().unwrap_or(0);
    println!(
        "\ntarget {target}: {} tests: {} pass, {} fail, {} unsupported, {} error ({:.1} s)",
        results.len(),
        get(conformance::Status::Pass),
        get(conformance::Status::Fail),
        get(conformance::Status::Unsupported),
        get(conformance::Status::Error),
        start.elapsed().as_secs_f64()
    );
    let not_kernels = results
        .iter()
        .filter(|r| r.dense_as_kernels == Some(false))
        .count();
    println!("tests where a dense op did not run as a kernel: {not_kernels}");
    tessera_driver::write_atomic(
        report,
        conformance::report_json(target, &results).as_bytes(),
    )?;
    println!("report: {}", report.display());
    Ok(())
}

/// Deterministic filler inputs for benchmarking: small values from a fixed sequence.
fn filler(dtype: tessera_ir::DType, dims: &[u64]) -> Tensor {
    let n: u64 = dims.iter().product();
    let vals: Vec<f64> = (0..n)
        .map(|i| (((i * 2654435761) % 1000) as f64 / 1000.0) - 0.5)
        .collect();
    match dtype {
        tessera_ir::DType::F32 => Tensor::from_f32(
            dims.to_vec(),
            &vals.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        ),
        tessera_ir::DType::I64 => Tensor::from_i64(
            dims.to_vec(),
            &vals.iter().map(|&v| (v * 10.0) as i64).collect::<Vec<_>>(),
        ),
        d => Tensor::new(d, dims.to_vec(), vec![0u8; d.storage_bytes(n) as usize]),
    }
}

/// How `bench` times one configuration.
#[derive(Clone, Copy)]
struct BenchRuns {
    runs: usize,
    warmup: usize,
    /// npu-sim: one more run in cycle mode, for the cycle report.
    cycles: bool,
    /// `runs` more runs timing each kernel launch, for the per-kernel table.
    profile: bool,
}

fn time_target(
    model: &Path,
    target: &str,
    named: &BTreeMap<String, Tensor>,
    how: BenchRuns,
    newer: Newer,
    opt_level: Option<tessera_driver::OptLevel>,
) -> Result<f64, DriverError> {
    let load = LoadOpts {
        newer,
        digest: None,
        max_memory: None,
        opt_level,
    };
    let m = load_model(model, target, &Dev::new(target, false)?, named, load)?;
    let mut all = named.clone();
    for io in m.inputs() {
        all.entry(io.name.clone())
            .or_insert_with(|| filler(io.dtype, &io.dims));
    }
    let inputs = order_inputs(&m, all)?;
    for _ in 0..how.warmup {
        m.run(&inputs)?;
    }
    let mut times = Vec::with_capacity(how.runs);
    for _ in 0..how.runs.max(1) {
        let t = Instant::now();
        m.run(&inputs)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let med = times[times.len() / 2];
    let label = match opt_level {
        Some(l) => format!("{target} -O{}", l as u8),
        None => target.to_string(),
    };
    println!(
        "{label:<8} median {:>10.3} ms over {} runs (min {:.3} ms, max {:.3} ms) after {} warm-up",
        med * 1e3,
        times.len(),
        times[0] * 1e3,
        times[times.len() - 1] * 1e3,
        how.warmup
    );
    if how.profile {
        print_profile(&m, &inputs, how.runs.max(1))?;
    }
    if how.cycles {
        // One more run of the same model on a cycle-mode simulator, for the report.
        let cdev = Dev::new(target, true)?;
        let cm = load_model(model, target, &cdev, named, load)?;
        cm.run(&inputs)?;
        cdev.print_cycles();
    }
    Ok(med)
}

/// `bench --profile`: `runs` profiled runs, and the kernels by their summed time, largest
/// first, with the time outside kernels as the last line.
fn print_profile(m: &Model, inputs: &[Tensor], runs: usize) -> Result<(), DriverError> {
    let mut sum: Vec<(String, u32, f64)> = Vec::new();
    let (mut other, mut total) = (0.0, 0.0);
    for _ in 0..runs {
        let (_, p) = m.run_profiled(inputs)?;
        if sum.is_empty() {
            sum = p.kernels.iter().map(|k| (k.name.clone(), 0, 0.0)).collect();
        }
        for (s, k) in sum.iter_mut().zip(&p.kernels) {
            s.1 += k.launches;
            s.2 += k.seconds;
        }
        other += p.other;
        total += p.total;
    }
    sum.retain(|s| s.1 > 0);
    sum.sort_by(|a, b| b.2.total_cmp(&a.2));
    let per = |t: f64| t * 1e3 / runs as f64;
    let share = |t: f64| if total > 0.0 { t / total * 100.0 } else { 0.0 };
    println!("profile over {runs} runs ({:.3} ms per run):", per(total));
    println!(
        "  {:<32} {:>10} {:>7} {:>9}",
        "kernel", "ms/run", "share", "launches"
    );
    for (name, launches, t) in &sum {
        println!(
            "  {name:<32} {:>10.3} {:>6.1}% {:>9}",
            per(*t),
            share(*t),
            launches / runs as u32
        );
    }
    println!(
        "  {:<32} {:>10.3} {:>6.1}%",
        "(outside kernels)",
        per(other),
        share(other)
    );
    Ok(())
}

fn bench(
    model: &Path,
    target: &str,
    baseline: Option<&str>,
    baseline_opt_level: Option<&str>,
    how: BenchRuns,
    inputs: &[String],
    newer: Newer,
) -> Result<(), DriverError> {
    let named = parse_named(inputs)?;
    let t = time_target(model, target, &named, how, newer, None)?;
    // Baselines are timed plainly: no profile, no cycle report.
    let plain = BenchRuns {
        cycles: false,
        profile: false,
        ..how
    };
    if let Some(b) = baseline {
        // The baseline is slow by design (the interpreter), so it gets fewer runs.
        let slow = BenchRuns {
            runs: how.runs.clamp(1, 3),
            warmup: how.warmup.min(1),
            ..plain
        };
        let tb = time_target(model, b, &named, slow, newer.quiet(), None)?;
        println!("speedup {target} vs {b}: {:.1}x", tb / t);
    }
    if let Some(level) = baseline_opt_level {
        let level: tessera_driver::OptLevel = level.parse()?;
        let tb = time_target(model, target, &named, plain, newer.quiet(), Some(level))?;
        let o = options(target).opt_level as u8;
        println!(
            "speedup {target} -O{o} vs -O{}: {:.2}x",
            level as u8,
            tb / t
        );
    }
    Ok(())
}

fn show(
    model: &Path,
    target: &str,
    output: &Path,
    inputs: &[String],
    shapes: &[String],
    newer: Newer,
) -> Result<(), DriverError> {
    let page = if is_artifact(model) {
        tessera_driver::show::show_artifact(model, &tessera_runtime::Artifact::read(model)?)?
    } else {
        tessera_driver::show::show_model(
            model,
            &compile_opts(model, target, inputs, shapes, newer)?,
        )?
    };
    tessera_driver::write_atomic(output, page.as_bytes())?;
    println!("wrote {} ({} bytes)", output.display(), page.len());
    Ok(())
}
