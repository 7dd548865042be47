//! TensorProto <-> Tensor: a round trip for every dtype, the typed repeated fields ONNX
//! writers use, and the atomic tensor-file writer.

mod common;

use common::TempDir;
use tessera_ir::{DType, Tensor};
use tessera_onnx::proto::TensorProto;
use tessera_onnx::{
    decode_tensor, dtype_to_onnx, encode_tensor, read_tensor_file, tensor_from_proto,
    write_tensor_file,
};

fn sample(dtype: DType) -> Tensor {
    if dtype == DType::String {
        return Tensor::from_strings(
            vec![2, 2],
            vec!["a".into(), "".into(), "héllo".into(), "z".into()],
        );
    }
    let n = 6u64;
    let bytes: Vec<u8> = (0..dtype.storage_bytes(n))
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(1))
        .collect();
    Tensor::new(dtype, vec![2, 3], bytes)
}

#[test]
fn round_trip_every_dtype() {
    for dtype in DType::ALL {
        let t = sample(dtype);
        let back = decode_tensor(&encode_tensor(&t, "t"), "mem", None)
            .unwrap_or_else(|e| panic!("{dtype}: {e}"));
        assert_eq!(back, t, "{dtype}");
    }
    // Scalars and empty tensors too.
    let s = Tensor::from_f32(vec![], &[2.5]);
    assert_eq!(
        decode_tensor(&encode_tensor(&s, "s"), "mem", None).unwrap(),
        s
    );
    let e = Tensor::new(DType::I32, vec![0, 4], vec![]);
    assert_eq!(
        decode_tensor(&encode_tensor(&e, "e"), "mem", None).unwrap(),
        e
    );
}

fn proto(dtype: DType, dims: &[i64]) -> TensorProto {
    TensorProto {
        name: "t".into(),
        data_type: dtype_to_onnx(dtype),
        dims: dims.to_vec(),
        ..Default::default()
    }
}

#[test]
fn typed_fields_decode_per_the_spec() {
    let mut p = proto(DType::F16, &[2]);
    p.int32_data = vec![
        half::f16::from_f32(1.5).to_bits() as i32,
        half::f16::from_f32(-2.0).to_bits() as i32,
    ];
    assert_eq!(
        tensor_from_proto(&p, None).unwrap().to_f64_vec().unwrap(),
        vec![1.5, -2.0]
    );

    let mut p = proto(DType::BF16, &[1]);
    p.int32_data = vec![half::bf16::from_f32(3.0).to_bits() as i32];
    assert_eq!(
        tensor_from_proto(&p, None).unwrap().to_f64_vec().unwrap(),
        vec![3.0]
    );

    let mut p = proto(DType::I8, &[3]);
    p.int32_data = vec![-1, 127, -128];
    assert_eq!(
        tensor_from_proto(&p, None).unwrap().to_i64_vec().unwrap(),
        vec![-1, 127, -128]
    );

    let mut p = proto(DType::Bool, &[2]);
    p.int32_data = vec![0, 5];
    assert_eq!(*tensor_from_proto(&p, None).unwrap().bytes, vec![0, 1]);

    // int4: int32_data holds packed bytes, low nibble first.
    let mut p = proto(DType::I4, &[3]);
    p.int32_data = vec![0x21, 0x0F];
    assert_eq!(
        tensor_from_proto(&p, None).unwrap().to_i64_vec().unwrap(),
        vec![1, 2, -1]
    );

    let mut p = proto(DType::U32, &[2]);
    p.uint64_data = vec![7, u32::MAX as u64];
    assert_eq!(
        tensor_from_proto(&p, None).unwrap().to_i64_vec().unwrap(),
        vec![7, u32::MAX as i64]
    );

    let mut p = proto(DType::F64, &[1]);
    p.double_data = vec![0.125];
    assert_eq!(
        tensor_from_proto(&p, None).unwrap().to_f64_vec().unwrap(),
        vec![0.125]
    );

    let mut p = proto(DType::U64, &[1]);
    p.uint64_data = vec![u64::MAX];
    assert_eq!(
        *tensor_from_proto(&p, None).unwrap().bytes,
        u64::MAX.to_le_bytes().to_vec()
    );

    // Wrong count in a typed field, and complex types.
    let mut p = proto(DType::I4, &[3]);
    p.int32_data = vec![0x21];
    assert!(tensor_from_proto(&p, None)
        .unwrap_err()
        .to_string()
        .contains("\"t\""));
    let p = TensorProto {
        name: "c".into(),
        data_type: 14,
        dims: vec![1],
        ..Default::default()
    };
    let e = tensor_from_proto(&p, None).unwrap_err();
    assert!(
        e.is_unsupported() && e.to_string().contains("COMPLEX64"),
        "{e}"
    );
}

#[test]
fn tensor_files_are_written_atomically_and_read_back() {
    let dir = TempDir::new("tfile");
    let p = dir.path().join("output_0.pb");
    let t = Tensor::from_f32(vec![2], &[1.0, -1.0]);
    write_tensor_file(&p, &t, "y").unwrap();
    assert_eq!(read_tensor_file(&p).unwrap(), t);
    // Only the final file remains: no temporary left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("output_0.pb")]);
    // A truncated tensor file is an error naming the file.
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 2]).unwrap();
    let e = read_tensor_file(&p).unwrap_err().to_string();
    assert!(e.contains("output_0.pb"), "{e}");
    // Writing into a missing folder fails cleanly.
    assert!(write_tensor_file(dir.path().join("no/such/dir/x.pb"), &t, "y").is_err());
}

#[test]
fn sequence_test_data_is_unsupported_not_a_broken_tensor() {
    use prost::Message;
    let dir = TempDir::new("seqpb");
    // A SequenceProto by hand: name (1), elem_type TENSOR (2), one tensor (3).
    let elem = encode_tensor(&Tensor::from_f32(vec![1], &[1.0]), "t");
    let mut seq = vec![0x0a, 8];
    seq.extend_from_slice(b"sequence");
    seq.extend_from_slice(&[0x10, 1, 0x1a, elem.len() as u8]);
    seq.extend_from_slice(&elem);
    let p = dir.path().join("input_0.pb");
    std::fs::write(&p, &seq).unwrap();
    let e = read_tensor_file(&p).unwrap_err();
    assert!(
        e.is_unsupported() && e.to_string().contains("SequenceProto"),
        "{e}"
    );
    // A real tensor with absurd dims is still a broken tensor.
    let big = TensorProto {
        name: "t".into(),
        data_type: 1,
        dims: vec![1 << 30, 1 << 30],
        ..Default::default()
    };
    std::fs::write(&p, big.encode_to_vec()).unwrap();
    let e = read_tensor_file(&p).unwrap_err();
    assert!(
        !e.is_unsupported() && e.to_string().contains("exceed the limit"),
        "{e}"
    );
}
