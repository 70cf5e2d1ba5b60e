//! A minimal writer for PyTorch checkpoints, so the tests can build `.bin` files without
//! Python: `torch.save`'s zip layout around a hand-emitted protocol-2 pickle.
//!
//! A state dict is written as `torch.save(OrderedDict(...))` writes it:
//!
//! ```text
//! archive/data.pkl      OrderedDict { key: _rebuild_tensor_v2(persistent_id(('storage',
//!                           torch.BFloat16Storage, '<n>', 'cpu', numel)), 0, shape, stride,
//!                           False, OrderedDict()) }
//! archive/byteorder     "little"
//! archive/data/<n>      raw little-endian storage bytes (64-byte aligned)
//! archive/version       "3\n"
//! ```

use std::io::Write;
use std::path::Path;

use zip::CompressionMethod;
use zip::write::{SimpleFileOptions, ZipWriter};

/// Pickle opcodes used here (names as in CPython's `pickletools`).
mod op {
    pub const PROTO: u8 = 0x80;
    pub const STOP: u8 = b'.';
    pub const MARK: u8 = b'(';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const EMPTY_LIST: u8 = b']';
    pub const EMPTY_DICT: u8 = b'}';
    pub const SETITEMS: u8 = b'u';
    pub const GLOBAL: u8 = b'c';
    pub const REDUCE: u8 = b'R';
    pub const BINPERSID: u8 = b'Q';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const LONG1: u8 = 0x8a;
    pub const BINUNICODE: u8 = b'X';
    pub const NEWFALSE: u8 = 0x89;
    pub const NEWTRUE: u8 = 0x88;
}

/// Emits pickle opcodes into a byte buffer.
#[derive(Default)]
pub struct Pickler {
    pub bytes: Vec<u8>,
}

impl Pickler {
    /// A pickle that starts with `PROTO 2`.
    pub fn protocol_2() -> Self {
        Self {
            bytes: vec![op::PROTO, 2],
        }
    }

    pub fn op(&mut self, code: u8) -> &mut Self {
        self.bytes.push(code);
        self
    }

    /// `GLOBAL 'module name'`: pushes the named callable (never resolved by a safe reader).
    pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.bytes.push(op::GLOBAL);
        self.bytes
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes.push(op::BINUNICODE);
        self.bytes
            .extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(s.as_bytes());
        self
    }

    /// A non-negative int, in the smallest opcode pickle itself would pick.
    pub fn int(&mut self, v: usize) -> &mut Self {
        if v < 0x100 {
            self.bytes.extend_from_slice(&[op::BININT1, v as u8]);
        } else if v < 0x1_0000 {
            self.bytes.push(op::BININT2);
            self.bytes.extend_from_slice(&(v as u16).to_le_bytes());
        } else {
            let v = i32::try_from(v).expect("int fits in BININT");
            self.bytes.push(op::BININT);
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.op(if v { op::NEWTRUE } else { op::NEWFALSE })
    }

    /// A tuple of ints (a shape or a stride).
    pub fn int_tuple(&mut self, values: &[usize]) -> &mut Self {
        if values.is_empty() {
            return self.op(op::EMPTY_TUPLE);
        }
        self.op(op::MARK);
        for v in values {
            self.int(*v);
        }
        self.op(op::TUPLE)
    }

    /// `collections.OrderedDict()`.
    pub fn empty_ordered_dict(&mut self) -> &mut Self {
        self.global("collections", "OrderedDict")
            .op(op::EMPTY_TUPLE)
            .op(op::REDUCE)
    }

    /// `torch._utils._rebuild_tensor_v2(<storage n>, 0, shape, stride, False, OrderedDict())`
    /// over a contiguous bf16 storage.
    pub fn bf16_tensor(&mut self, storage_key: &str, shape: &[usize]) -> &mut Self {
        let numel = shape.iter().product::<usize>();
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(op::MARK);
        // persistent_id(('storage', torch.BFloat16Storage, key, 'cpu', numel))
        self.op(op::MARK)
            .str("storage")
            .global("torch", "BFloat16Storage")
            .str(storage_key)
            .str("cpu")
            .int(numel)
            .op(op::TUPLE)
            .op(op::BINPERSID);
        self.int(0)
            .int_tuple(shape)
            .int_tuple(&contiguous_stride(shape))
            .bool(false);
        self.empty_ordered_dict().op(op::TUPLE).op(op::REDUCE)
    }

    /// `module.name(arg)`.
    pub fn call(&mut self, module: &str, name: &str, arg: &str) -> &mut Self {
        self.global(module, name)
            .op(op::MARK)
            .str(arg)
            .op(op::TUPLE)
            .op(op::REDUCE)
    }

    pub fn stop(&mut self) -> Vec<u8> {
        self.bytes.push(op::STOP);
        std::mem::take(&mut self.bytes)
    }
}

/// Row-major strides, as `torch.empty(shape).stride()`.
pub fn contiguous_stride(shape: &[usize]) -> Vec<usize> {
    let mut stride = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * shape[i + 1];
    }
    stride
}

/// One bf16 tensor of a state dict.
pub struct Bf16Tensor {
    pub key: String,
    pub shape: Vec<usize>,
    pub bits: Vec<u16>,
}

impl Bf16Tensor {
    /// Truncates f32 values to bf16; panics if any value is not exactly representable.
    pub fn from_f32(key: &str, shape: &[usize], values: &[f32]) -> Self {
        let bits = values
            .iter()
            .map(|v| {
                let b = v.to_bits();
                assert_eq!(
                    b & 0xffff,
                    0,
                    "{key}: {v} is not exactly representable in bf16"
                );
                (b >> 16) as u16
            })
            .collect();
        Self {
            key: key.to_string(),
            shape: shape.to_vec(),
            bits,
        }
    }
}

/// The `data.pkl` of a state dict: an `OrderedDict` of bf16 tensors; tensor `i` lives in
/// storage `"i"`.
pub fn state_dict_pickle(tensors: &[Bf16Tensor]) -> Vec<u8> {
    state_dict_pickle_with_call(tensors, None)
}

/// A call placed in a state dict instead of one entry's tensor: `key: module.name(arg)`.
pub struct HostileEntry<'a> {
    pub key: &'a str,
    pub module: &'a str,
    pub name: &'a str,
    pub arg: &'a str,
}

/// [`state_dict_pickle`], with `hostile`'s entry holding its call rather than a tensor.
pub fn state_dict_pickle_with_call(
    tensors: &[Bf16Tensor],
    hostile: Option<&HostileEntry>,
) -> Vec<u8> {
    let mut p = Pickler::protocol_2();
    p.empty_ordered_dict().op(op::MARK);
    for (i, t) in tensors.iter().enumerate() {
        p.str(&t.key);
        match hostile {
            Some(h) if h.key == t.key => p.call(h.module, h.name, h.arg),
            _ => p.bf16_tensor(&i.to_string(), &t.shape),
        };
    }
    p.op(op::SETITEMS).stop()
}

/// Writes a `torch.save` zip around `data_pkl` with the given storages (`data/<name>`).
pub fn write_torch_zip(path: &Path, data_pkl: &[u8], storages: &[(String, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut zip = ZipWriter::new(file);
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    fn entry<W: Write + std::io::Seek>(
        zip: &mut ZipWriter<W>,
        name: &str,
        bytes: &[u8],
        options: SimpleFileOptions,
    ) {
        zip.start_file(format!("archive/{name}"), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    entry(&mut zip, "data.pkl", data_pkl, stored);
    entry(&mut zip, "byteorder", b"little", stored);
    for (name, bytes) in storages {
        entry(
            &mut zip,
            &format!("data/{name}"),
            bytes,
            stored.with_alignment(64),
        );
    }
    entry(&mut zip, "version", b"3\n", stored);
    zip.finish().unwrap();
}

/// Writes `tensors` as a bf16 PyTorch checkpoint, as `torch.save(state_dict, path)` does.
pub fn write_state_dict(path: &Path, tensors: &[Bf16Tensor]) {
    write_state_dict_with_call(path, tensors, None)
}

/// [`write_state_dict`], with `hostile`'s entry holding its call rather than a tensor.
pub fn write_state_dict_with_call(
    path: &Path,
    tensors: &[Bf16Tensor],
    hostile: Option<&HostileEntry>,
) {
    let storages: Vec<(String, Vec<u8>)> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                i.to_string(),
                t.bits.iter().flat_map(|b| b.to_le_bytes()).collect(),
            )
        })
        .collect();
    write_torch_zip(
        path,
        &state_dict_pickle_with_call(tensors, hostile),
        &storages,
    );
}

/// A pickle whose root is `module.name(arg)`: what a malicious checkpoint uses to run code
/// in `torch.load(weights_only=False)`.
pub fn call_pickle(module: &str, name: &str, arg: &str) -> Vec<u8> {
    Pickler::protocol_2().call(module, name, arg).stop()
}

/// A legacy (pre-1.6, non-zip) `torch.save` file whose root object is `module.name(arg)`:
/// magic number, protocol 1001, system info, root, storage key list (empty).
pub fn legacy_call_file(module: &str, name: &str, arg: &str) -> Vec<u8> {
    let mut out = Vec::new();
    // 0x1950a86a20f9469cfc6c as LONG1.
    let mut p = Pickler::protocol_2();
    p.op(op::LONG1).op(10);
    p.bytes
        .extend_from_slice(&[0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);
    out.extend(p.stop());
    out.extend(Pickler::protocol_2().int(1001).stop());
    let mut p = Pickler::protocol_2();
    p.op(op::EMPTY_DICT)
        .op(op::MARK)
        .str("protocol_version")
        .int(1001)
        .str("little_endian")
        .bool(true);
    p.str("type_sizes").op(op::EMPTY_DICT).op(op::MARK);
    for (k, v) in [("short", 2), ("int", 4), ("long", 4)] {
        p.str(k).int(v);
    }
    p.op(op::SETITEMS).op(op::SETITEMS);
    out.extend(p.stop());
    out.extend(call_pickle(module, name, arg));
    out.extend(Pickler::protocol_2().op(op::EMPTY_LIST).stop());
    out
}
