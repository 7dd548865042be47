//! The C ABI called from Rust, as C would call it: loading from a file and from memory, the
//! info functions, runs on many threads at once, and every error code raised by a real bad
//! argument, each with its message.

use std::ffi::{c_char, CStr, CString};
use std::path::PathBuf;
use std::sync::OnceLock;
use tessera_capi::*;

/// The CNN example compiled for host once, as a `.tsa` file, plus its bytes.
fn artifact() -> &'static (PathBuf, Vec<u8>) {
    static A: OnceLock<(PathBuf, Vec<u8>)> = OnceLock::new();
    A.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let opts = tessera_driver::CompileOptions::for_target("host");
        let a = tessera_driver::compile_file(&root.join("examples/cnn/model.onnx"), &opts)
            .expect("the CNN example compiles");
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi-abi-cnn.tsa");
        tessera_driver::write_artifact(&path, &a).unwrap();
        (path, a.encode())
    })
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(tessera_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn load_file(path: &str, target: Option<&str>) -> (TesseraStatus, *mut TesseraModel) {
    let p = cstr(path);
    let t = target.map(cstr);
    let mut m = std::ptr::null_mut();
    let s = unsafe {
        tessera_model_load_file(
            p.as_ptr(),
            t.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            &mut m,
        )
    };
    (s, m)
}

fn info(m: *const TesseraModel, input: bool, k: usize) -> (TesseraStatus, TesseraTensorInfo) {
    let mut i = TesseraTensorInfo {
        name: std::ptr::null(),
        dtype: 0,
        rank: 0,
        dims: std::ptr::null(),
        byte_len: 0,
    };
    let s = unsafe {
        if input {
            tessera_model_input_info(m, k, &mut i)
        } else {
            tessera_model_output_info(m, k, &mut i)
        }
    };
    (s, i)
}

/// Runs `m` on `input` and returns the single output's bytes.
fn run(m: *const TesseraModel, input: &[u8], out_len: usize) -> (TesseraStatus, Vec<u8>) {
    let mut out = vec![0u8; out_len];
    let ins = [TesseraInput {
        data: input.as_ptr().cast(),
        len: input.len(),
    }];
    let outs = [TesseraOutput {
        data: out.as_mut_ptr().cast(),
        len: out.len(),
    }];
    let s = unsafe { tessera_model_run(m, ins.as_ptr(), 1, outs.as_ptr(), 1) };
    (s, out)
}

fn example_input() -> Vec<u8> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    tessera_driver::npy::read(&root.join("examples/cnn/input.npy"))
        .unwrap()
        .bytes
        .to_vec()
}

#[test]
fn abi_version_and_names() {
    assert_eq!(tessera_abi_version(), TESSERA_ABI_VERSION);
    let v = unsafe { CStr::from_ptr(tessera_version()) }
        .to_str()
        .unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    let name = |s| {
        unsafe { CStr::from_ptr(tessera_status_name(s)) }
            .to_str()
            .unwrap()
    };
    assert_eq!(name(TESSERA_ERR_INVALID_INPUT), "TESSERA_ERR_INVALID_INPUT");
    assert_eq!(name(999), "unknown status");
    let dt = |d| {
        unsafe { CStr::from_ptr(tessera_dtype_name(d)) }
            .to_str()
            .unwrap()
    };
    assert_eq!(
        (dt(1), dt(16), dt(22), dt(14)),
        ("float", "bfloat16", "int4", "unknown")
    );
}

#[test]
fn loads_describes_and_runs_like_the_rust_api() {
    let (path, bytes) = artifact();
    let (s, m) = load_file(path.to_str().unwrap(), Some("host"));
    assert_eq!(s, TESSERA_OK, "{}", last_error());
    assert_eq!(
        unsafe { CStr::from_ptr(tessera_model_target(m)) }
            .to_str()
            .unwrap(),
        "host"
    );
    assert_eq!(
        unsafe { (tessera_model_input_count(m), tessera_model_output_count(m)) },
        (1, 1)
    );
    let (s, i) = info(m, true, 0);
    assert_eq!(s, TESSERA_OK);
    let dims = unsafe { std::slice::from_raw_parts(i.dims, i.rank) };
    assert_eq!(
        (
            unsafe { CStr::from_ptr(i.name) }.to_str().unwrap(),
            i.dtype,
            dims,
            i.byte_len
        ),
        ("input", 1, &[1u64, 3, 32, 32][..], 4 * 3 * 32 * 32)
    );
    let (_, o) = info(m, false, 0);

    let input = example_input();
    let (s, got) = run(m, &input, o.byte_len as usize);
    assert_eq!(s, TESSERA_OK, "{}", last_error());
    let model =
        tessera_driver::load(tessera_runtime::Artifact::decode(bytes).unwrap(), "host").unwrap();
    let t = tessera_abi::Tensor::new(tessera_abi::DType::F32, vec![1, 3, 32, 32], input.clone());
    let want = model.run(&[t]).unwrap();
    assert_eq!(
        got, *want[0].bytes,
        "the C ABI and the Rust API give the same bytes"
    );

    // The same artifact from memory, with the target left to the artifact.
    let mut m2 = std::ptr::null_mut();
    assert_eq!(
        unsafe {
            tessera_model_load_memory(bytes.as_ptr(), bytes.len(), std::ptr::null(), &mut m2)
        },
        TESSERA_OK
    );
    assert_eq!(run(m2, &input, o.byte_len as usize).1, got);
    unsafe {
        tessera_model_free(m);
        tessera_model_free(m2);
        tessera_model_free(std::ptr::null_mut());
    }
}

#[test]
fn one_model_runs_on_many_threads_at_once() {
    let (path, _) = artifact();
    let (s, m) = load_file(path.to_str().unwrap(), None);
    assert_eq!(s, TESSERA_OK, "{}", last_error());
    let out_len = info(m, false, 0).1.byte_len as usize;
    let input = example_input();
    let reference = run(m, &input, out_len).1;
    struct Shared(*mut TesseraModel);
    // SAFETY: the ABI promises a loaded model may be run from any thread at once.
    unsafe impl Sync for Shared {}
    let shared = Shared(m);
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| {
                let sh = &shared;
                for _ in 0..3 {
                    let (s, got) = run(sh.0, &input, out_len);
                    assert_eq!(s, TESSERA_OK, "{}", last_error());
                    assert_eq!(got, reference);
                }
            });
        }
    });
    unsafe { tessera_model_free(m) };
}

#[test]
fn every_error_has_its_code_and_a_message() {
    let (path, bytes) = artifact();
    let p = path.to_str().unwrap();
    let mut m = std::ptr::null_mut::<TesseraModel>();

    // NULL arguments.
    assert_eq!(
        unsafe { tessera_model_load_file(std::ptr::null(), std::ptr::null(), &mut m) },
        TESSERA_ERR_NULL_POINTER
    );
    assert_eq!(last_error(), "argument `path` is NULL");
    assert_eq!(
        unsafe {
            tessera_model_load_file(cstr(p).as_ptr(), std::ptr::null(), std::ptr::null_mut())
        },
        TESSERA_ERR_NULL_POINTER
    );
    assert_eq!(last_error(), "argument `out` is NULL");
    assert_eq!(
        unsafe { tessera_model_load_memory(std::ptr::null(), 0, std::ptr::null(), &mut m) },
        TESSERA_ERR_NULL_POINTER
    );
    assert_eq!(info(std::ptr::null(), true, 0).0, TESSERA_ERR_NULL_POINTER);
    assert_eq!(last_error(), "argument `model` is NULL");
    assert_eq!(
        unsafe { tessera_model_run(std::ptr::null(), std::ptr::null(), 0, std::ptr::null(), 0) },
        TESSERA_ERR_NULL_POINTER
    );

    // Files and artifacts.
    let (s, m0) = load_file("/nonexistent/model.tsa", None);
    assert_eq!((s, m0.is_null()), (TESSERA_ERR_IO, true));
    assert!(
        last_error().starts_with("/nonexistent/model.tsa: "),
        "{}",
        last_error()
    );
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    assert_eq!(
        unsafe { tessera_model_load_memory(bad.as_ptr(), bad.len(), std::ptr::null(), &mut m) },
        TESSERA_ERR_INVALID_ARTIFACT
    );
    assert!(
        last_error().starts_with("invalid artifact: "),
        "{}",
        last_error()
    );
    assert!(m.is_null());
    assert_eq!(
        unsafe { tessera_model_load_memory(bytes.as_ptr(), 10, std::ptr::null(), &mut m) },
        TESSERA_ERR_INVALID_ARTIFACT
    );

    // Targets.
    assert_eq!(load_file(p, Some("interp")).0, TESSERA_ERR_WRONG_TARGET);
    assert_eq!(
        last_error(),
        "the artifact was compiled for target `host`, but the device runs `interp`"
    );
    assert_eq!(
        load_file(p, Some("npu-sim")).0,
        TESSERA_ERR_UNSUPPORTED_TARGET
    );
    assert!(last_error().contains("`npu-sim`"), "{}", last_error());
    let bad_utf8: [c_char; 3] = [0xff_u8 as c_char, 0x41, 0];
    assert_eq!(
        unsafe { tessera_model_load_file(cstr(p).as_ptr(), bad_utf8.as_ptr(), &mut m) },
        TESSERA_ERR_INVALID_ARGUMENT
    );
    assert_eq!(last_error(), "argument `target` is not UTF-8");

    // Indices and buffers.
    let (s, m) = load_file(p, None);
    assert_eq!(s, TESSERA_OK);
    assert_eq!(info(m, false, 3).0, TESSERA_ERR_INVALID_ARGUMENT);
    assert_eq!(
        last_error(),
        "output index 3 is out of range: the model has 1 outputs"
    );
    let out_len = info(m, false, 0).1.byte_len as usize;
    let input = example_input();
    assert_eq!(
        run(m, &input[..input.len() - 4], out_len).0,
        TESSERA_ERR_INVALID_INPUT
    );
    assert_eq!(
        last_error(),
        "input `input`: holds 12284 bytes, its shape (f32 [1, 3, 32, 32]) needs 12288"
    );
    assert_eq!(run(m, &input, out_len + 1).0, TESSERA_ERR_INVALID_OUTPUT);
    assert!(last_error().starts_with("output `"), "{}", last_error());
    assert_eq!(
        unsafe { tessera_model_run(m, std::ptr::null(), 0, std::ptr::null(), 0) },
        TESSERA_ERR_INVALID_INPUT
    );
    assert_eq!(
        last_error(),
        "input `(all)`: the model takes 1 inputs, 0 were given"
    );
    let ins = [TesseraInput {
        data: std::ptr::null(),
        len: input.len(),
    }];
    assert_eq!(
        unsafe { tessera_model_run(m, ins.as_ptr(), 1, std::ptr::null(), 0) },
        TESSERA_ERR_NULL_POINTER
    );
    assert_eq!(last_error(), "argument `inputs[0].data (`input`)` is NULL");
    unsafe { tessera_model_free(m) };
}

#[test]
fn bad_input_data_is_invalid_data_naming_the_node() {
    // Gather with indices [1, -1, 100000000] into 1000 rows (tests/data/bad): the kernel's data
    // check refuses the last index.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bad = root.join("tests/data/bad");
    let a = tessera_driver::compile_file(
        &bad.join("gather_oob.onnx"),
        &tessera_driver::CompileOptions::for_target("host"),
    )
    .unwrap();
    let bytes = a.encode();
    let mut m = std::ptr::null_mut();
    assert_eq!(
        unsafe { tessera_model_load_memory(bytes.as_ptr(), bytes.len(), std::ptr::null(), &mut m) },
        TESSERA_OK
    );
    let data = tessera_driver::npy::read(&bad.join("gather_data.npy")).unwrap();
    let indices = tessera_driver::npy::read(&bad.join("gather_indices.npy")).unwrap();
    let mut out = vec![0u8; info(m, false, 0).1.byte_len as usize];
    let ins = [
        TesseraInput {
            data: data.bytes.as_ptr().cast(),
            len: data.bytes.len(),
        },
        TesseraInput {
            data: indices.bytes.as_ptr().cast(),
            len: indices.bytes.len(),
        },
    ];
    let outs = [TesseraOutput {
        data: out.as_mut_ptr().cast(),
        len: out.len(),
    }];
    assert_eq!(
        unsafe { tessera_model_run(m, ins.as_ptr(), 2, outs.as_ptr(), 1) },
        TESSERA_ERR_INVALID_DATA
    );
    let msg = last_error();
    assert!(
        msg.starts_with("Gather node \"gather_oob\": input `indices` holds 100000000"),
        "{msg}"
    );
    assert_eq!(
        unsafe { CStr::from_ptr(tessera_status_name(TESSERA_ERR_INVALID_DATA)) }
            .to_str()
            .unwrap(),
        "TESSERA_ERR_INVALID_DATA"
    );
    unsafe { tessera_model_free(m) };
}
