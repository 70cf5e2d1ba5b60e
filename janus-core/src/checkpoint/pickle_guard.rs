//! Refuses PyTorch pickles that import or call anything a tensor state dict does not use.
//!
//! burn-store's reader never runs code, but a call it does not know becomes an opaque value
//! that is dropped, so a hostile entry (`{"lm_head.weight": os.system(...)}`, the classic
//! `torch.load` exploit) or a pickled foreign object would only surface later as a
//! misleading missing tensor. Before burn-store reads a pickle, [`check_file`] walks its
//! opcodes with a small stack and memo model, never resolving a global, and refuses any
//! global outside the table below with [`JanusError::UnsafePickle`], naming the state-dict
//! key the offending call sits under.
//!
//! | global | what torch writes it for | called |
//! | --- | --- | --- |
//! | `collections.OrderedDict` | the state dict, empty hook tables | yes |
//! | `torch._utils._rebuild_tensor`, `_rebuild_tensor_v2`, `_rebuild_tensor_v3` | a tensor over a storage | yes |
//! | `torch._utils._rebuild_parameter`, `_rebuild_parameter_with_state` | an `nn.Parameter` | yes |
//! | `torch._tensor._rebuild_from_type_v2` | a tensor subclass around a rebuild call | yes |
//! | `torch.{Float,Double,Half,BFloat16,Long,Int,Short,Char,Byte,Bool}Storage` | storage type in a persistent id | no |
//! | `torch.UntypedStorage`, `torch.storage.UntypedStorage` | storage type in a persistent id | no |
//! | `torch.Tensor`, `torch.nn.parameter.Parameter` | type argument of `_rebuild_from_type_v2` | no |
//! | `torch.<dtype>` (`torch.uint16`, `torch.bfloat16`, ...) | dtype argument of `_rebuild_tensor_v3` | no |
//!
//! A "no" global may be referenced but not called (`REDUCE`, `NEWOBJ`, `INST`, `OBJ`), and
//! `BUILD` on any global is refused. The containers are those burn-store's reader opens: a
//! zip's `data.pkl` (PyTorch 1.6+), the five pickles of a legacy file, a bare pickle. A TAR
//! file (PyTorch 0.1) is refused as unchecked. Malformed streams and unknown opcodes are
//! [`JanusError::Checkpoint`] errors naming the offset.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::Path;
use std::rc::Rc;

use crate::error::JanusError;

/// Most bytes one pickle may take (burn-store's reader refuses larger `data.pkl` entries
/// too); also bounds every length an opcode claims.
const MAX_PICKLE_SIZE: u64 = 100 * 1024 * 1024;

/// Checks the pickle(s) of the PyTorch checkpoint at `path`, detecting its container as
/// burn-store's reader does. A file it would not read as a checkpoint is left to its error.
pub(crate) fn check_file(path: &Path) -> Result<(), JanusError> {
    let checkpoint_err = |message: String| JanusError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let io_err = |e: std::io::Error| checkpoint_err(e.to_string());
    let mut file = File::open(path).map_err(io_err)?;
    let mut header = Vec::new();
    (&mut file)
        .take(TAR_MAGIC_OFFSET as u64 + 5)
        .read_to_end(&mut header)
        .map_err(io_err)?;
    file.rewind().map_err(io_err)?;

    let (entry, result) = if header.starts_with(b"PK\x03\x04") || header.starts_with(b"PK\x05\x06")
    {
        let mut archive = zip::ZipArchive::new(BufReader::new(file))
            .map_err(|e| checkpoint_err(e.to_string()))?;
        let Some(name) = data_pkl_name(&archive).map_err(|e| checkpoint_err(e.to_string()))? else {
            return Ok(());
        };
        let pickle = archive
            .by_name(&name)
            .map_err(|e| checkpoint_err(format!("{name}: {e}")))?;
        let result = scan_pickles(&mut BufReader::new(pickle), 1, 0);
        (name, result)
    } else if header.get(TAR_MAGIC_OFFSET..TAR_MAGIC_OFFSET + 5) == Some(b"ustar") {
        return Err(checkpoint_err(
            "a TAR-format (PyTorch 0.1) checkpoint is not checked for unsafe pickle calls, so it is not loaded; re-save it with a current torch.save".into(),
        ));
    } else if starts_with_legacy_magic(&header) {
        // Magic number, protocol version, system info, the state dict, the storage keys;
        // the storage bytes follow and are never read here.
        let result = scan_pickles(&mut BufReader::new(file), 5, 3);
        ("legacy pickle".to_string(), result)
    } else if matches!(header.first(), Some(0x80 | b'(' | b'}' | b']' | b'c'))
        && !starts_like_safetensors(&header)
    {
        let result = scan_pickles(&mut BufReader::new(file), 1, 0);
        ("pickle".to_string(), result)
    } else {
        return Ok(());
    };
    result.map_err(|e| match e {
        ScanError::Unsafe { key, global } => JanusError::UnsafePickle {
            path: path.to_path_buf(),
            key,
            global,
        },
        ScanError::Malformed(message) => checkpoint_err(format!("{entry}: {message}")),
    })
}

/// The `data.pkl` entry burn-store reads: the one nearest the archive root.
fn data_pkl_name<R: Read + Seek>(
    archive: &zip::ZipArchive<R>,
) -> zip::result::ZipResult<Option<String>> {
    let names = archive
        .file_names()
        .collect::<zip::result::ZipResult<Vec<_>>>()?;
    Ok(names
        .into_iter()
        .filter(|name| {
            name.strip_suffix("data.pkl")
                .is_some_and(|root| root.is_empty() || root.ends_with('/'))
        })
        .min_by_key(|name| name.len())
        .map(|name| name.into_owned()))
}

/// Offset of the `ustar` magic within a TAR header.
const TAR_MAGIC_OFFSET: usize = 257;

/// 0x1950a86a20f9469cfc6c, the legacy magic number: as `LONG1` bytes (protocol 2+) and as
/// `LONG` text (protocols 0 and 1).
const LEGACY_MAGIC_BYTES: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_MAGIC_TEXT: &[u8] = b"119547037146038801333356";

fn starts_with_legacy_magic(header: &[u8]) -> bool {
    let window = &header[..header.len().min(64)];
    window
        .windows(LEGACY_MAGIC_BYTES.len())
        .any(|w| w == LEGACY_MAGIC_BYTES)
        || window
            .windows(LEGACY_MAGIC_TEXT.len())
            .any(|w| w == LEGACY_MAGIC_TEXT)
}

/// A little-endian `u64` JSON length then `{`: a safetensors file, not a pickle.
fn starts_like_safetensors(header: &[u8]) -> bool {
    header
        .first_chunk::<8>()
        .is_some_and(|b| u64::from_le_bytes(*b) <= 100_000_000 && header.get(8) == Some(&b'{'))
}

/// Why a pickle stream is refused.
#[derive(Debug, PartialEq)]
enum ScanError {
    /// It imports or calls a global outside the allowed table.
    Unsafe {
        /// Dotted state-dict key of the call; `None` at the root or outside any entry.
        key: Option<String>,
        /// `module.name`.
        global: String,
    },
    /// It is not a pickle this scanner can follow.
    Malformed(String),
}

/// Scans `count` consecutive pickles from `r`; keys are reported for pickle `keyed` only.
fn scan_pickles<R: BufRead>(r: &mut R, count: usize, keyed: usize) -> Result<(), ScanError> {
    let mut offset = 0;
    for i in 0..count {
        let mut scanner = Scanner::new(Input {
            inner: &mut *r,
            offset,
            budget: MAX_PICKLE_SIZE,
        });
        let result = scanner.run();
        offset = scanner.input.offset;
        match result {
            Err(ScanError::Unsafe { global, .. }) if i != keyed => {
                return Err(ScanError::Unsafe { key: None, global });
            }
            other => other?,
        }
    }
    Ok(())
}

/// What a pickle opcode is.
mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const FLOAT: u8 = b'F';
    pub const INT: u8 = b'I';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const LONG: u8 = b'L';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const PERSID: u8 = b'P';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const STRING: u8 = b'S';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const UNICODE: u8 = b'V';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const INST: u8 = b'i';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const OBJ: u8 = b'o';
    pub const PUT: u8 = b'p';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const EXT1: u8 = 0x82;
    pub const EXT2: u8 = 0x83;
    pub const EXT4: u8 = 0x84;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    pub const BYTEARRAY8: u8 = 0x96;
    pub const NEXT_BUFFER: u8 = 0x97;
    pub const READONLY_BUFFER: u8 = 0x98;
}

/// How a state dict may use an allowed global.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Use {
    /// A tensor-rebuild function or `OrderedDict`: may be called.
    Call,
    /// A storage class, tensor type or dtype: passed as an argument, never called.
    Reference,
}

/// The allowed table of the module doc.
fn allowed(module: &str, name: &str) -> Option<Use> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Use::Call),
        (
            "torch._utils",
            "_rebuild_tensor"
            | "_rebuild_tensor_v2"
            | "_rebuild_tensor_v3"
            | "_rebuild_parameter"
            | "_rebuild_parameter_with_state",
        )
        | ("torch._tensor", "_rebuild_from_type_v2") => Some(Use::Call),
        (
            "torch",
            "FloatStorage" | "DoubleStorage" | "HalfStorage" | "BFloat16Storage" | "LongStorage"
            | "IntStorage" | "ShortStorage" | "CharStorage" | "ByteStorage" | "BoolStorage"
            | "UntypedStorage" | "Tensor",
        )
        | ("torch.storage", "UntypedStorage")
        | ("torch.nn.parameter", "Parameter") => Some(Use::Reference),
        (
            "torch",
            "float32" | "float" | "float64" | "double" | "float16" | "half" | "bfloat16" | "int64"
            | "long" | "int32" | "int" | "int16" | "short" | "int8" | "uint8" | "uint16" | "uint32"
            | "uint64" | "bool",
        ) => Some(Use::Reference),
        _ => None,
    }
}

/// One step of a state-dict key, outermost first, shared between the values that hold it.
struct Step {
    key: Rc<str>,
    next: Option<Rc<Step>>,
}

/// A value holds (or is) a refused call; `path` leads from the value to the call.
#[derive(Clone)]
struct Taint {
    global: Rc<str>,
    path: Option<Rc<Step>>,
}

impl Taint {
    fn new(global: String) -> Self {
        Self {
            global: global.into(),
            path: None,
        }
    }

    /// The same call seen from a container that holds this value under `key`.
    fn under(&self, key: Rc<str>) -> Self {
        Self {
            global: self.global.clone(),
            path: Some(Rc::new(Step {
                key,
                next: self.path.clone(),
            })),
        }
    }

    /// The same call seen from the result of a call that took this value: tensor
    /// arguments are no state-dict keys.
    fn called(&self) -> Self {
        Self {
            global: self.global.clone(),
            path: None,
        }
    }

    fn key(&self) -> Option<String> {
        let mut parts = Vec::new();
        let mut step = self.path.as_deref();
        while let Some(s) = step {
            parts.push(&*s.key);
            step = s.next.as_deref();
        }
        (!parts.is_empty()).then(|| parts.join("."))
    }
}

/// What the scanner knows of a pickled value.
#[derive(Clone)]
enum Value {
    /// A string: a dict key, a `STACK_GLOBAL` part.
    Str(Rc<str>),
    /// An int: a dict key or list index.
    Int(i64),
    /// An allowed global.
    Global { name: Rc<str>, allowed: Use },
    /// A dict or list (sets too), mutable and shared through the memo: an index into
    /// `Scanner::containers`.
    Container(usize),
    /// Anything else (tuples, scalars, call results), with the refused call it holds.
    Other(Option<Taint>),
}

impl Value {
    fn clean() -> Self {
        Self::Other(None)
    }

    fn key(&self) -> Rc<str> {
        match self {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string().into(),
            _ => "?".into(),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Dict,
    List,
}

struct Container {
    kind: Kind,
    len: usize,
    taint: Option<Taint>,
}

/// The pickle bytes, with the offset reached and the bytes still allowed.
struct Input<R> {
    inner: R,
    offset: u64,
    budget: u64,
}

impl<R: BufRead> Input<R> {
    fn truncated(&self) -> ScanError {
        ScanError::Malformed(format!("the pickle ends early, at offset {}", self.offset))
    }

    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, ScanError> {
        if n > self.budget {
            return Err(ScanError::Malformed(format!(
                "an opcode before offset {} claims {n} bytes, more than a pickle may hold ({MAX_PICKLE_SIZE})",
                self.offset
            )));
        }
        let mut out = Vec::new();
        (&mut self.inner)
            .take(n)
            .read_to_end(&mut out)
            .map_err(|e| ScanError::Malformed(e.to_string()))?;
        self.offset += out.len() as u64;
        self.budget -= out.len() as u64;
        if (out.len() as u64) < n {
            return Err(self.truncated());
        }
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ScanError> {
        let bytes = self.bytes(N as u64)?;
        Ok(bytes.try_into().expect("bytes returns exactly N bytes"))
    }

    fn u8(&mut self) -> Result<u8, ScanError> {
        Ok(self.array::<1>()?[0])
    }

    /// A length field of `N` little-endian bytes.
    fn uint<const N: usize>(&mut self) -> Result<u64, ScanError> {
        let mut wide = [0u8; 8];
        wide[..N].copy_from_slice(&self.array::<N>()?);
        Ok(u64::from_le_bytes(wide))
    }

    /// A signed 4-byte length (`BINSTRING`, `LONG4`), refused if negative.
    fn signed_len(&mut self) -> Result<u64, ScanError> {
        let n = i32::from_le_bytes(self.array()?);
        u64::try_from(n).map_err(|_| {
            ScanError::Malformed(format!("negative length {n} before offset {}", self.offset))
        })
    }

    /// A text argument up to its newline (protocols 0 and 1, `GLOBAL`, `INST`).
    fn line(&mut self) -> Result<String, ScanError> {
        let mut out = Vec::new();
        (&mut self.inner)
            .take(self.budget)
            .read_until(b'\n', &mut out)
            .map_err(|e| ScanError::Malformed(e.to_string()))?;
        self.offset += out.len() as u64;
        self.budget -= out.len() as u64;
        if out.pop() != Some(b'\n') {
            return Err(self.truncated());
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

struct Scanner<R> {
    input: Input<R>,
    stack: Vec<Value>,
    /// Stack lengths at each open `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    containers: Vec<Container>,
    /// The first refused call, wherever it ended up.
    first: Option<Taint>,
}

impl<R: BufRead> Scanner<R> {
    fn new(input: Input<R>) -> Self {
        Self {
            input,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            containers: Vec::new(),
            first: None,
        }
    }

    /// Walks to `STOP`. A refused call outranks a later malformation, so a hostile pickle
    /// is reported as such even when it is also broken.
    fn run(&mut self) -> Result<(), ScanError> {
        let result = self.walk();
        match (result, &self.first) {
            (Err(ScanError::Malformed(_)), Some(first)) => Err(ScanError::Unsafe {
                key: None,
                global: first.global.to_string(),
            }),
            (result, _) => result,
        }
    }

    fn walk(&mut self) -> Result<(), ScanError> {
        loop {
            let at = self.input.offset;
            let code = self.input.u8()?;
            let malformed = |what: &str| {
                ScanError::Malformed(format!("{what} (opcode 0x{code:02x} at offset {at})"))
            };
            match code {
                op::PROTO => {
                    let version = self.input.u8()?;
                    if version > 5 {
                        return Err(malformed(&format!("pickle protocol {version} is unknown")));
                    }
                }
                op::FRAME => {
                    self.input.bytes(8)?;
                }
                op::STOP => {
                    let root = self.pop(at)?;
                    return match (self.taint(&root), &self.first) {
                        (Some(t), _) => Err(ScanError::Unsafe {
                            key: t.key(),
                            global: t.global.to_string(),
                        }),
                        (None, Some(first)) => Err(ScanError::Unsafe {
                            key: None,
                            global: first.global.to_string(),
                        }),
                        (None, None) => Ok(()),
                    };
                }
                op::MARK => self.marks.push(self.stack.len()),
                op::POP => {
                    if self.stack.len() > self.floor() {
                        self.stack.pop();
                    } else {
                        self.pop_mark(at)?;
                    }
                }
                op::POP_MARK => {
                    self.pop_mark(at)?;
                }
                op::DUP => {
                    let top = self.top(at)?.clone();
                    self.stack.push(top);
                }

                // Scalars.
                op::NONE | op::NEWTRUE | op::NEWFALSE | op::EMPTY_TUPLE => {
                    self.stack.push(Value::clean())
                }
                op::BININT => {
                    let v = i32::from_le_bytes(self.input.array()?);
                    self.stack.push(Value::Int(v.into()));
                }
                op::BININT1 => {
                    let v = self.input.u8()?;
                    self.stack.push(Value::Int(v.into()));
                }
                op::BININT2 => {
                    let v = u16::from_le_bytes(self.input.array()?);
                    self.stack.push(Value::Int(v.into()));
                }
                op::LONG1 => {
                    let n = self.input.uint::<1>()?;
                    let bytes = self.input.bytes(n)?;
                    self.stack.push(match bytes.len() {
                        1..=8 => {
                            // Two's complement, little-endian, sign-extended.
                            let fill = if bytes[bytes.len() - 1] & 0x80 != 0 {
                                0xff
                            } else {
                                0
                            };
                            let mut wide = [fill; 8];
                            wide[..bytes.len()].copy_from_slice(&bytes);
                            Value::Int(i64::from_le_bytes(wide))
                        }
                        0 => Value::Int(0),
                        _ => Value::clean(),
                    });
                }
                op::LONG4 => {
                    let n = self.input.signed_len()?;
                    self.input.bytes(n)?;
                    self.stack.push(Value::clean());
                }
                op::INT | op::LONG => {
                    let text = self.input.line()?;
                    let digits = text.trim_end_matches('L');
                    self.stack.push(match digits.parse::<i64>() {
                        // "00" and "01" are protocol 0's False and True.
                        Ok(v) if code == op::LONG || !matches!(digits, "00" | "01") => {
                            Value::Int(v)
                        }
                        _ => Value::clean(),
                    });
                }
                op::FLOAT => {
                    self.input.line()?;
                    self.stack.push(Value::clean());
                }
                op::BINFLOAT => {
                    self.input.bytes(8)?;
                    self.stack.push(Value::clean());
                }
                op::STRING => {
                    let text = self.input.line()?;
                    let unquoted = text
                        .strip_prefix(['\'', '"'])
                        .and_then(|t| t.strip_suffix(['\'', '"']))
                        .unwrap_or(&text);
                    self.stack.push(Value::Str(unquoted.into()));
                }
                op::UNICODE => {
                    let text = self.input.line()?;
                    self.stack.push(Value::Str(text.into()));
                }
                op::SHORT_BINSTRING | op::SHORT_BINUNICODE => {
                    let n = self.input.uint::<1>()?;
                    self.push_str(n)?;
                }
                op::BINSTRING => {
                    let n = self.input.signed_len()?;
                    self.push_str(n)?;
                }
                op::BINUNICODE => {
                    let n = self.input.uint::<4>()?;
                    self.push_str(n)?;
                }
                op::BINUNICODE8 => {
                    let n = self.input.uint::<8>()?;
                    self.push_str(n)?;
                }
                op::SHORT_BINBYTES | op::BINBYTES | op::BINBYTES8 | op::BYTEARRAY8 => {
                    let n = match code {
                        op::SHORT_BINBYTES => self.input.uint::<1>()?,
                        op::BINBYTES => self.input.uint::<4>()?,
                        _ => self.input.uint::<8>()?,
                    };
                    self.input.bytes(n)?;
                    self.stack.push(Value::clean());
                }

                // Containers.
                op::EMPTY_DICT => self.push_container(Kind::Dict),
                op::EMPTY_LIST | op::EMPTY_SET => self.push_container(Kind::List),
                op::DICT => {
                    let items = self.pop_mark(at)?;
                    if items.len() % 2 != 0 {
                        return Err(malformed("DICT has a key without a value"));
                    }
                    let id = self.new_container(Kind::Dict);
                    self.set_items(id, items);
                    self.stack.push(Value::Container(id));
                }
                op::LIST => {
                    let items = self.pop_mark(at)?;
                    let id = self.new_container(Kind::List);
                    self.append(id, items);
                    self.stack.push(Value::Container(id));
                }
                op::TUPLE | op::FROZENSET => {
                    let items = self.pop_mark(at)?;
                    let taint = self.first_taint(&items);
                    self.stack.push(Value::Other(taint));
                }
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = usize::from(code - op::TUPLE1 + 1);
                    if self.stack.len() < self.floor() + n {
                        return Err(malformed("tuple of more items than the stack holds"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    let taint = self.first_taint(&items);
                    self.stack.push(Value::Other(taint));
                }
                op::SETITEM | op::SETITEMS => {
                    let items = if code == op::SETITEM {
                        if self.stack.len() < self.floor() + 2 {
                            return Err(malformed("SETITEM without a key and value"));
                        }
                        self.stack.split_off(self.stack.len() - 2)
                    } else {
                        let items = self.pop_mark(at)?;
                        if items.len() % 2 != 0 {
                            return Err(malformed("SETITEMS has a key without a value"));
                        }
                        items
                    };
                    let id = self.target(at, Kind::Dict)?;
                    self.set_items(id, items);
                }
                op::APPEND | op::APPENDS | op::ADDITEMS => {
                    let items = if code == op::APPEND {
                        vec![self.pop(at)?]
                    } else {
                        self.pop_mark(at)?
                    };
                    let id = self.target(at, Kind::List)?;
                    self.append(id, items);
                }

                // Memo.
                op::PUT | op::BINPUT | op::LONG_BINPUT | op::MEMOIZE => {
                    let index = match code {
                        op::PUT => self.text_index(at)?,
                        op::BINPUT => self.input.uint::<1>()?,
                        op::LONG_BINPUT => self.input.uint::<4>()?,
                        _ => self.memo.len() as u64,
                    };
                    let top = self.top(at)?.clone();
                    self.memo.insert(index, top);
                }
                op::GET | op::BINGET | op::LONG_BINGET => {
                    let index = match code {
                        op::GET => self.text_index(at)?,
                        op::BINGET => self.input.uint::<1>()?,
                        _ => self.input.uint::<4>()?,
                    };
                    let value =
                        self.memo.get(&index).cloned().ok_or_else(|| {
                            malformed(&format!("memo entry {index} was never set"))
                        })?;
                    self.stack.push(value);
                }

                // Globals and calls.
                op::GLOBAL => {
                    let module = self.input.line()?;
                    let name = self.input.line()?;
                    let value = self.global(&module, &name);
                    self.stack.push(value);
                }
                op::STACK_GLOBAL => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(malformed(
                            "STACK_GLOBAL of a module or name that is not a string",
                        ));
                    };
                    let value = self.global(&module, &name);
                    self.stack.push(value);
                }
                op::EXT1 | op::EXT2 | op::EXT4 => {
                    let index = match code {
                        op::EXT1 => self.input.uint::<1>()?,
                        op::EXT2 => self.input.uint::<2>()?,
                        _ => self.input.uint::<4>()?,
                    };
                    // The extension registry names a global this scanner cannot see.
                    let value = self.refuse(format!("copyreg extension {index}"));
                    self.stack.push(value);
                }
                op::REDUCE | op::NEWOBJ => {
                    let args = self.pop(at)?;
                    let callable = self.pop(at)?;
                    let args = self.taint(&args);
                    let result = self.call(callable, args, at, code)?;
                    self.stack.push(result);
                }
                op::NEWOBJ_EX => {
                    let kwargs = self.pop(at)?;
                    let args = self.pop(at)?;
                    let callable = self.pop(at)?;
                    let args = self.taint(&args).or_else(|| self.taint(&kwargs));
                    let result = self.call(callable, args, at, code)?;
                    self.stack.push(result);
                }
                op::INST => {
                    let module = self.input.line()?;
                    let name = self.input.line()?;
                    let items = self.pop_mark(at)?;
                    let callable = self.global(&module, &name);
                    let args = self.first_taint(&items);
                    let result = self.call(callable, args, at, code)?;
                    self.stack.push(result);
                }
                op::OBJ => {
                    let mut items = self.pop_mark(at)?.into_iter();
                    let callable = items
                        .next()
                        .ok_or_else(|| malformed("OBJ without a class"))?;
                    let args = self.first_taint(&items.collect::<Vec<_>>());
                    let result = self.call(callable, args, at, code)?;
                    self.stack.push(result);
                }
                op::BUILD => {
                    let state = self.pop(at)?;
                    let state = self.taint(&state).map(|t| t.called());
                    match self.top(at)?.clone() {
                        // Setting attributes of a class or function changes code.
                        Value::Global { name, .. } => {
                            let value = self.refuse(format!("{name}.__setstate__"));
                            *self.stack.last_mut().expect("top exists") = value;
                        }
                        Value::Container(id) => {
                            let c = &mut self.containers[id];
                            if c.taint.is_none() {
                                c.taint = state;
                            }
                        }
                        Value::Other(None) | Value::Str(_) | Value::Int(_) => {
                            *self.stack.last_mut().expect("top exists") = Value::Other(state);
                        }
                        Value::Other(Some(_)) => {}
                    }
                }
                op::PERSID => {
                    self.input.line()?;
                    self.stack.push(Value::clean());
                }
                op::BINPERSID => {
                    let pid = self.pop(at)?;
                    let taint = self.taint(&pid).map(|t| t.called());
                    self.stack.push(Value::Other(taint));
                }
                op::NEXT_BUFFER | op::READONLY_BUFFER => {
                    return Err(malformed("out-of-band buffers are not used by torch.save"));
                }
                _ => return Err(malformed("unknown pickle opcode")),
            }
        }
    }

    /// Stack length below which the current `MARK` protects the values.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn stack_error(at: u64) -> ScanError {
        ScanError::Malformed(format!(
            "opcode at offset {at} needs a value the stack lacks"
        ))
    }

    fn pop(&mut self, at: u64) -> Result<Value, ScanError> {
        if self.stack.len() <= self.floor() {
            return Err(Self::stack_error(at));
        }
        Ok(self.stack.pop().expect("stack is above the mark"))
    }

    fn top(&self, at: u64) -> Result<&Value, ScanError> {
        if self.stack.len() <= self.floor() {
            return Err(Self::stack_error(at));
        }
        Ok(self.stack.last().expect("stack is above the mark"))
    }

    /// The values pushed since the last `MARK`, which is closed.
    fn pop_mark(&mut self, at: u64) -> Result<Vec<Value>, ScanError> {
        let mark = self.marks.pop().ok_or_else(|| {
            ScanError::Malformed(format!(
                "opcode at offset {at} needs a MARK that is not there"
            ))
        })?;
        Ok(self.stack.split_off(mark))
    }

    fn text_index(&mut self, at: u64) -> Result<u64, ScanError> {
        let text = self.input.line()?;
        text.trim().parse().map_err(|_| {
            ScanError::Malformed(format!(
                "memo index {text:?} at offset {at} is not a number"
            ))
        })
    }

    fn push_str(&mut self, n: u64) -> Result<(), ScanError> {
        let bytes = self.input.bytes(n)?;
        self.stack
            .push(Value::Str(String::from_utf8_lossy(&bytes).into()));
        Ok(())
    }

    fn new_container(&mut self, kind: Kind) -> usize {
        self.containers.push(Container {
            kind,
            len: 0,
            taint: None,
        });
        self.containers.len() - 1
    }

    fn push_container(&mut self, kind: Kind) {
        let id = self.new_container(kind);
        self.stack.push(Value::Container(id));
    }

    /// The container `SETITEM(S)` or `APPEND(S)` writes into. Any other target would have
    /// its own `__setitem__` or `extend` run.
    fn target(&self, at: u64, kind: Kind) -> Result<usize, ScanError> {
        match self.top(at)? {
            Value::Container(id) if self.containers[*id].kind == kind => Ok(*id),
            _ => Err(ScanError::Malformed(format!(
                "opcode at offset {at} adds items to something that is not a {}",
                if kind == Kind::Dict { "dict" } else { "list" }
            ))),
        }
    }

    fn set_items(&mut self, id: usize, items: Vec<Value>) {
        for pair in items.chunks_exact(2) {
            let taint = match (self.taint(&pair[0]), self.taint(&pair[1])) {
                (Some(key), _) => Some(key.called()),
                (None, Some(value)) => Some(value.under(pair[0].key())),
                (None, None) => None,
            };
            let c = &mut self.containers[id];
            c.len += 1;
            if c.taint.is_none() {
                c.taint = taint;
            }
        }
    }

    fn append(&mut self, id: usize, items: Vec<Value>) {
        for item in items {
            let index = self.containers[id].len;
            let taint = self.taint(&item).map(|t| t.under(index.to_string().into()));
            let c = &mut self.containers[id];
            c.len += 1;
            if c.taint.is_none() {
                c.taint = taint;
            }
        }
    }

    fn taint(&self, value: &Value) -> Option<Taint> {
        match value {
            Value::Other(t) => t.clone(),
            Value::Container(id) => self.containers[*id].taint.clone(),
            _ => None,
        }
    }

    /// The first tainted item of a tuple, under its index.
    fn first_taint(&self, items: &[Value]) -> Option<Taint> {
        items
            .iter()
            .enumerate()
            .find_map(|(i, item)| self.taint(item).map(|t| t.under(i.to_string().into())))
    }

    /// Records a refused global or call and returns the value standing for it.
    fn refuse(&mut self, global: String) -> Value {
        let taint = Taint::new(global);
        self.first.get_or_insert_with(|| taint.clone());
        Value::Other(Some(taint))
    }

    fn global(&mut self, module: &str, name: &str) -> Value {
        match allowed(module, name) {
            Some(allowed) => Value::Global {
                name: format!("{module}.{name}").into(),
                allowed,
            },
            None => self.refuse(format!("{module}.{name}")),
        }
    }

    /// `callable(*args)`, with `args` the refused call the arguments hold, if any.
    fn call(
        &mut self,
        callable: Value,
        args: Option<Taint>,
        at: u64,
        code: u8,
    ) -> Result<Value, ScanError> {
        let args = args.map(|t| t.called());
        Ok(match callable {
            Value::Global {
                name,
                allowed: Use::Call,
            } => {
                if &*name == "collections.OrderedDict" {
                    let id = self.new_container(Kind::Dict);
                    self.containers[id].taint = args;
                    Value::Container(id)
                } else {
                    Value::Other(args)
                }
            }
            Value::Global {
                name,
                allowed: Use::Reference,
            } => self.refuse(name.to_string()),
            Value::Other(Some(t)) => Value::Other(Some(t.called())),
            other => match self.taint(&other) {
                Some(t) => Value::Other(Some(t.called())),
                None => {
                    return Err(ScanError::Malformed(format!(
                        "opcode 0x{code:02x} at offset {at} calls a value that is not a global"
                    )));
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-written opcode streams.
    #[derive(Default)]
    struct P(Vec<u8>);

    impl P {
        fn proto(v: u8) -> Self {
            Self(vec![op::PROTO, v])
        }
        fn op(mut self, code: u8) -> Self {
            self.0.push(code);
            self
        }
        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
        fn global(self, module: &str, name: &str) -> Self {
            self.op(op::GLOBAL)
                .raw(format!("{module}\n{name}\n").as_bytes())
        }
        fn str(self, s: &str) -> Self {
            self.op(op::SHORT_BINUNICODE)
                .raw(&[s.len() as u8])
                .raw(s.as_bytes())
        }
        fn binunicode(self, s: &str) -> Self {
            self.op(op::BINUNICODE)
                .raw(&(s.len() as u32).to_le_bytes())
                .raw(s.as_bytes())
        }
        fn int(self, v: u8) -> Self {
            self.op(op::BININT1).raw(&[v])
        }
        fn put(self, i: u8) -> Self {
            self.op(op::BINPUT).raw(&[i])
        }
        fn get(self, i: u8) -> Self {
            self.op(op::BINGET).raw(&[i])
        }
        /// `_rebuild_tensor_v2(pid(('storage', <storage>, key, 'cpu', 4)), 0, (4,), (1,),
        /// False, OrderedDict())`, with the rebuild function pushed by `func`.
        fn tensor(self, func: impl FnOnce(Self) -> Self, key: &str) -> Self {
            func(self)
                .op(op::MARK)
                .op(op::MARK)
                .str("storage")
                .global("torch", "BFloat16Storage")
                .str(key)
                .str("cpu")
                .int(4)
                .op(op::TUPLE)
                .op(op::BINPERSID)
                .int(0)
                .int(4)
                .op(op::TUPLE1)
                .int(1)
                .op(op::TUPLE1)
                .op(op::NEWFALSE)
                .global("collections", "OrderedDict")
                .op(op::EMPTY_TUPLE)
                .op(op::REDUCE)
                .op(op::TUPLE)
                .op(op::REDUCE)
        }
        fn v2(self) -> Self {
            self.global("torch._utils", "_rebuild_tensor_v2")
        }
        /// `module.name("echo")`.
        fn call(self, module: &str, name: &str) -> Self {
            self.global(module, name)
                .str("echo")
                .op(op::TUPLE1)
                .op(op::REDUCE)
        }
        fn scan(self) -> Result<(), ScanError> {
            let bytes = self.op(op::STOP).0;
            scan_pickles(&mut bytes.as_slice(), 1, 0)
        }
    }

    fn unsafe_at(key: Option<&str>, global: &str) -> Result<(), ScanError> {
        Err(ScanError::Unsafe {
            key: key.map(str::to_string),
            global: global.to_string(),
        })
    }

    fn malformed(result: Result<(), ScanError>) -> String {
        match result {
            Err(ScanError::Malformed(m)) => m,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    /// A two-tensor state dict as `torch.save` writes it (protocol 2, memoised).
    fn state_dict() -> P {
        P::proto(2)
            .op(op::EMPTY_DICT)
            .put(0)
            .op(op::MARK)
            .binunicode("a.weight")
            .tensor(|p| p.v2().put(1), "0")
            .binunicode("b.weight")
            .tensor(|p| p.get(1), "1")
            .op(op::SETITEMS)
    }

    #[test]
    fn state_dict_passes() {
        assert_eq!(state_dict().scan(), Ok(()));
        // OrderedDict root with `_metadata` BUILD state and a parameter.
        let p = P::proto(2)
            .global("collections", "OrderedDict")
            .op(op::EMPTY_TUPLE)
            .op(op::REDUCE)
            .op(op::MARK)
            .str("w")
            .global("torch._utils", "_rebuild_parameter")
            .tensor(|p| p.v2(), "0")
            .op(op::NEWTRUE)
            .global("collections", "OrderedDict")
            .op(op::EMPTY_TUPLE)
            .op(op::REDUCE)
            .op(op::TUPLE3)
            .op(op::REDUCE)
            .op(op::SETITEMS)
            .op(op::EMPTY_DICT)
            .str("_metadata")
            .op(op::EMPTY_DICT)
            .op(op::SETITEM)
            .op(op::BUILD);
        assert_eq!(p.scan(), Ok(()));
    }

    #[test]
    fn call_nested_under_key_is_refused() {
        let p = state_dict()
            .op(op::MARK)
            .str("lm_head.weight")
            .call("posix", "system")
            .op(op::SETITEMS);
        assert_eq!(p.scan(), unsafe_at(Some("lm_head.weight"), "posix.system"));
    }

    #[test]
    fn call_at_root_is_refused() {
        let p = P::proto(2).call("os", "system");
        assert_eq!(p.scan(), unsafe_at(None, "os.system"));
    }

    #[test]
    fn nested_dicts_and_lists_give_dotted_keys() {
        let p = P::proto(2)
            .op(op::EMPTY_DICT)
            .str("model")
            .op(op::EMPTY_DICT)
            .str("layers")
            .op(op::EMPTY_LIST)
            .tensor(|p| p.v2(), "0")
            .op(op::APPEND)
            .op(op::MARK)
            .call("builtins", "eval")
            .op(op::APPENDS)
            .op(op::SETITEM)
            .op(op::SETITEM);
        assert_eq!(p.scan(), unsafe_at(Some("model.layers.1"), "builtins.eval"));
    }

    #[test]
    fn call_inside_tensor_arguments_names_the_tensor_key() {
        let p = P::proto(2)
            .op(op::EMPTY_DICT)
            .str("w")
            .v2()
            .call("posix", "system")
            .int(0)
            .op(op::TUPLE2)
            .op(op::REDUCE)
            .op(op::SETITEM);
        assert_eq!(p.scan(), unsafe_at(Some("w"), "posix.system"));
    }

    #[test]
    fn stack_global_with_memoised_names() {
        // Protocol 4: module and name strings memoised with MEMOIZE, fetched with BINGET.
        let ok = P::proto(4)
            .op(op::EMPTY_DICT)
            .op(op::MEMOIZE) // 0
            .str("w")
            .op(op::MEMOIZE) // 1
            .str("torch._utils")
            .op(op::MEMOIZE) // 2
            .str("_rebuild_tensor_v2")
            .op(op::MEMOIZE) // 3
            .op(op::STACK_GLOBAL)
            .op(op::MEMOIZE) // 4
            .op(op::EMPTY_TUPLE)
            .op(op::REDUCE)
            .op(op::SETITEM);
        assert_eq!(ok.scan(), Ok(()));

        // A module name memoised once, reused for a refused global under key `x`.
        let bad = P::proto(4)
            .op(op::EMPTY_DICT)
            .str("torch._utils")
            .op(op::MEMOIZE) // 0
            .str("_rebuild_tensor_v2")
            .op(op::STACK_GLOBAL)
            .op(op::POP)
            .str("x")
            .get(0)
            .str("_import_dotted_name")
            .op(op::STACK_GLOBAL)
            .str("os")
            .op(op::TUPLE1)
            .op(op::REDUCE)
            .op(op::SETITEM);
        assert_eq!(
            bad.scan(),
            unsafe_at(Some("x"), "torch._utils._import_dotted_name")
        );

        // BINPUT/BINGET of the refused global itself.
        let reused = P::proto(2)
            .op(op::EMPTY_DICT)
            .str("posix")
            .put(0)
            .str("system")
            .put(1)
            .op(op::STACK_GLOBAL)
            .op(op::POP)
            .str("y")
            .get(0)
            .get(1)
            .op(op::STACK_GLOBAL)
            .op(op::EMPTY_TUPLE)
            .op(op::REDUCE)
            .op(op::SETITEM);
        assert_eq!(reused.scan(), unsafe_at(Some("y"), "posix.system"));
    }

    #[test]
    fn calling_a_reference_only_global_is_refused() {
        let p = P::proto(2)
            .op(op::EMPTY_DICT)
            .str("s")
            .global("torch", "FloatStorage")
            .int(8)
            .op(op::TUPLE1)
            .op(op::REDUCE)
            .op(op::SETITEM);
        assert_eq!(p.scan(), unsafe_at(Some("s"), "torch.FloatStorage"));
    }

    #[test]
    fn newobj_inst_obj_and_build_are_checked() {
        let newobj = P::proto(2)
            .op(op::EMPTY_DICT)
            .str("k")
            .global("__main__", "Net")
            .op(op::EMPTY_TUPLE)
            .op(op::NEWOBJ)
            .op(op::SETITEM);
        assert_eq!(newobj.scan(), unsafe_at(Some("k"), "__main__.Net"));

        let inst = P::proto(2)
            .op(op::EMPTY_DICT)
            .str("k")
            .op(op::MARK)
            .str("ls")
            .op(op::INST)
            .raw(b"subprocess\ncheck_output\n")
            .op(op::SETITEM);
        assert_eq!(inst.scan(), unsafe_at(Some("k"), "subprocess.check_output"));

        let obj = P::proto(2)
            .op(op::MARK)
            .global("builtins", "exec")
            .str("print(1)")
            .op(op::OBJ);
        assert_eq!(obj.scan(), unsafe_at(None, "builtins.exec"));

        // BUILD on an allowed global would set attributes of the class itself.
        let build = P::proto(2)
            .op(op::EMPTY_DICT)
            .str("k")
            .global("torch", "Tensor")
            .op(op::EMPTY_DICT)
            .op(op::BUILD)
            .op(op::SETITEM);
        assert_eq!(
            build.scan(),
            unsafe_at(Some("k"), "torch.Tensor.__setstate__")
        );
    }

    #[test]
    fn refused_call_outside_the_root_has_no_key() {
        // The call's result is popped: it ran all the same.
        let p = P::proto(2)
            .call("posix", "system")
            .op(op::POP)
            .op(op::EMPTY_DICT);
        assert_eq!(p.scan(), unsafe_at(None, "posix.system"));
        // A refused call outranks a later malformation.
        let mut bytes = P::proto(2).call("posix", "system").0;
        bytes.push(0xff);
        assert_eq!(
            scan_pickles(&mut bytes.as_slice(), 1, 0),
            unsafe_at(None, "posix.system")
        );
    }

    #[test]
    fn unknown_opcode_names_its_offset() {
        let mut bytes = state_dict().0;
        let at = bytes.len();
        bytes.push(0xfe);
        let m = malformed(scan_pickles(&mut bytes.as_slice(), 1, 0));
        assert!(m.contains(&format!("at offset {at}")), "{m}");
        assert!(m.contains("0xfe"), "{m}");
    }

    #[test]
    fn truncated_and_unbalanced_streams_are_malformed() {
        let m = malformed(scan_pickles(&mut state_dict().0.as_slice(), 1, 0));
        assert!(m.contains("ends early"), "{m}");
        let m = malformed(P::proto(2).op(op::SETITEMS).scan());
        assert!(m.contains("MARK"), "{m}");
        let m = malformed(P::proto(2).get(7).scan());
        assert!(m.contains("memo entry 7"), "{m}");
        let m = malformed(
            P::proto(2)
                .op(op::EMPTY_LIST)
                .str("k")
                .int(1)
                .op(op::SETITEM)
                .scan(),
        );
        assert!(m.contains("not a dict"), "{m}");
        let huge = P::proto(4).op(op::BINUNICODE8).raw(&u64::MAX.to_le_bytes());
        let m = malformed(huge.scan());
        assert!(m.contains("more than a pickle may hold"), "{m}");
    }

    #[test]
    fn header_pickles_of_a_legacy_file_have_no_key() {
        // A refused call in the system-info dict (pickle 3 of 5) is reported without a key.
        let mut bytes = P::proto(2).int(1).op(op::STOP).0;
        bytes.extend(P::proto(2).int(1).op(op::STOP).0);
        bytes.extend(
            P::proto(2)
                .op(op::EMPTY_DICT)
                .str("little_endian")
                .call("posix", "system")
                .op(op::SETITEM)
                .op(op::STOP)
                .0,
        );
        bytes.extend(state_dict().op(op::STOP).0);
        bytes.extend(P::proto(2).op(op::EMPTY_LIST).op(op::STOP).0);
        assert_eq!(
            scan_pickles(&mut bytes.as_slice(), 5, 3),
            unsafe_at(None, "posix.system")
        );
    }
}
