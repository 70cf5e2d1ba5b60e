//! Streaming JSONL: a line-by-line reader and a random-access dataset that keeps only line
//! offsets.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::{DataError, OnError, SourceLoc};

/// How many skipped-line errors a reader keeps for reporting (all are counted).
pub(crate) const MAX_REPORTED: usize = 100;

/// What a record parser needs besides the line: where relative image paths start and the
/// model's image placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseContext {
    /// The JSONL file's directory.
    pub base_dir: PathBuf,
    /// The model's image placeholder (`<image_placeholder>`), which `<image>` tags become.
    pub image_tag: String,
}

impl ParseContext {
    /// The context of a JSONL file.
    pub fn for_file(path: &Path, image_tag: &str) -> Self {
        Self {
            base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            image_tag: image_tag.to_owned(),
        }
    }
}

/// Why a line does not make a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// Missing field, wrong type, inconsistent content.
    Malformed(String),
    /// A named image file does not exist (the resolved path).
    MissingImage(PathBuf),
}

impl RecordError {
    fn at(self, loc: SourceLoc) -> DataError {
        match self {
            Self::Malformed(message) => DataError::Malformed { loc, message },
            Self::MissingImage(image) => DataError::MissingImage { loc, image },
        }
    }
}

/// A JSONL record format.
pub trait Record: Sized {
    /// Builds a record from one parsed line.
    fn parse(value: &Value, ctx: &ParseContext) -> Result<Self, RecordError>;
}

/// A record with the place it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<R> {
    /// `file:line`.
    pub loc: SourceLoc,
    /// Byte offset of the line in the file.
    pub offset: u64,
    /// The record.
    pub record: R,
}

/// Parses one line's text (without its newline) into a record.
fn parse_line<R: Record>(text: &str, ctx: &ParseContext) -> Result<R, RecordError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        RecordError::Malformed(format!("not valid JSON (column {}): {e}", e.column()))
    })?;
    R::parse(&value, ctx)
}

/// Reads the line at the reader's position; `Ok(None)` at the end of the file. Lines that are
/// not UTF-8 are returned as errors, not swallowed.
fn read_raw_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    buf.clear();
    let n = reader.read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(n))
}

/// Reads a JSONL file line by line (never the whole file), parsing each non-blank line into
/// an `R`.
///
/// With [`OnError::Skip`] malformed lines are counted ([`JsonlReader::skipped`]) and the first
/// 100 of their errors kept; with [`OnError::Fail`] the first one is yielded
/// as an error and the reader stops. Blank lines are ignored.
#[derive(Debug)]
pub struct JsonlReader<R> {
    path: PathBuf,
    reader: BufReader<File>,
    ctx: ParseContext,
    on_error: OnError,
    line: usize,
    offset: u64,
    buf: Vec<u8>,
    skipped: usize,
    errors: Vec<DataError>,
    done: bool,
    _record: PhantomData<R>,
}

impl<R: Record> JsonlReader<R> {
    /// Opens `path`; `image_tag` is the model's image placeholder.
    pub fn open(
        path: impl AsRef<Path>,
        image_tag: &str,
        on_error: OnError,
    ) -> Result<Self, DataError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| DataError::io(&path, e))?;
        Ok(Self {
            ctx: ParseContext::for_file(&path, image_tag),
            path,
            reader: BufReader::new(file),
            on_error,
            line: 0,
            offset: 0,
            buf: Vec::new(),
            skipped: 0,
            errors: Vec::new(),
            done: false,
            _record: PhantomData,
        })
    }

    /// Malformed lines skipped so far.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The errors of the first skipped lines (at most 100 are kept).
    pub fn skipped_errors(&self) -> &[DataError] {
        &self.errors
    }

    /// Takes the kept errors of skipped lines out of the reader.
    pub fn take_skipped_errors(&mut self) -> Vec<DataError> {
        std::mem::take(&mut self.errors)
    }

    fn next_line(&mut self) -> Option<Result<Located<R>, DataError>> {
        loop {
            let start = self.offset;
            let n = match read_raw_line(&mut self.reader, &mut self.buf) {
                Ok(Some(n)) => n,
                Ok(None) => return None,
                Err(e) => return Some(Err(DataError::io(&self.path, e))),
            };
            self.offset += n as u64;
            self.line += 1;
            let loc = SourceLoc {
                path: self.path.clone(),
                line: self.line,
            };
            let parsed = match std::str::from_utf8(&self.buf) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => parse_line::<R>(text, &self.ctx),
                Err(e) => Err(RecordError::Malformed(format!("not UTF-8: {e}"))),
            };
            match parsed {
                Ok(record) => {
                    return Some(Ok(Located {
                        loc,
                        offset: start,
                        record,
                    }));
                }
                Err(e) => {
                    let err = e.at(loc);
                    match self.on_error {
                        OnError::Fail => return Some(Err(err)),
                        OnError::Skip => {
                            self.skipped += 1;
                            if self.errors.len() < MAX_REPORTED {
                                self.errors.push(err);
                            }
                        }
                    }
                }
            }
        }
    }
}

impl<R: Record> Iterator for JsonlReader<R> {
    type Item = Result<Located<R>, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.next_line();
        if !matches!(item, Some(Ok(_))) {
            // An error in Fail mode, an I/O error or the end: nothing follows.
            self.done = true;
        }
        item
    }
}

/// Where one valid line lives.
#[derive(Debug, Clone, Copy)]
struct Entry {
    file: u32,
    line: u32,
    offset: u64,
}

/// Random access to the valid lines of one or more JSONL files.
///
/// Opening streams every file once with a [`JsonlReader`] (so malformed lines are reported
/// up front, with `file:line`) and keeps only the byte offset of each valid line; [`get`]
/// seeks and re-parses that line. The files must not change while the dataset is in use.
///
/// [`get`]: JsonlDataset::get
#[derive(Debug)]
pub struct JsonlDataset<R> {
    files: Vec<PathBuf>,
    contexts: Vec<ParseContext>,
    entries: Vec<Entry>,
    readers: Vec<Option<BufReader<File>>>,
    skipped: usize,
    skipped_errors: Vec<DataError>,
    buf: Vec<u8>,
    _record: PhantomData<R>,
}

impl<R: Record> JsonlDataset<R> {
    /// Indexes `files` (in order). Malformed lines are skipped and counted, or the first one
    /// is returned as the error, by `on_error`.
    pub fn open(files: &[PathBuf], image_tag: &str, on_error: OnError) -> Result<Self, DataError> {
        let mut entries = Vec::new();
        let mut skipped = 0;
        let mut skipped_errors = Vec::new();
        for (i, path) in files.iter().enumerate() {
            let mut reader = JsonlReader::<R>::open(path, image_tag, on_error)?;
            for item in reader.by_ref() {
                let located = item?;
                let line = u32::try_from(located.loc.line).map_err(|_| DataError::Malformed {
                    loc: located.loc.clone(),
                    message: "too many lines".into(),
                })?;
                entries.push(Entry {
                    file: i as u32,
                    line,
                    offset: located.offset,
                });
            }
            skipped += reader.skipped();
            let room = MAX_REPORTED.saturating_sub(skipped_errors.len());
            skipped_errors.extend(reader.take_skipped_errors().into_iter().take(room));
        }
        Ok(Self {
            contexts: files
                .iter()
                .map(|p| ParseContext::for_file(p, image_tag))
                .collect(),
            files: files.to_vec(),
            entries,
            readers: files.iter().map(|_| None).collect(),
            skipped,
            skipped_errors,
            buf: Vec::new(),
            _record: PhantomData,
        })
    }

    /// Number of valid lines.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no valid line.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The files, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Malformed lines skipped while indexing.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The errors of the first skipped lines.
    pub fn skipped_errors(&self) -> &[DataError] {
        &self.skipped_errors
    }

    /// `file:line` of valid line `index`.
    pub fn loc(&self, index: usize) -> Option<SourceLoc> {
        self.entries.get(index).map(|e| SourceLoc {
            path: self.files[e.file as usize].clone(),
            line: e.line as usize,
        })
    }

    /// Re-reads and parses valid line `index` (`0..len()`).
    ///
    /// Errors if the file changed since indexing (the line no longer parses, or an image was
    /// removed) or on an out-of-range index.
    pub fn get(&mut self, index: usize) -> Result<Located<R>, DataError> {
        let entry = *self.entries.get(index).ok_or_else(|| {
            DataError::Config(format!("record {index} out of range ({})", self.len()))
        })?;
        let fi = entry.file as usize;
        let path = &self.files[fi];
        let loc = SourceLoc {
            path: path.clone(),
            line: entry.line as usize,
        };
        if self.readers[fi].is_none() {
            let file = File::open(path).map_err(|e| DataError::io(path, e))?;
            self.readers[fi] = Some(BufReader::new(file));
        }
        let reader = self.readers[fi].as_mut().expect("opened above");
        reader
            .seek(SeekFrom::Start(entry.offset))
            .map_err(|e| DataError::io(path, e))?;
        let read = read_raw_line(reader, &mut self.buf).map_err(|e| DataError::io(path, e))?;
        let text = match read {
            Some(_) => std::str::from_utf8(&self.buf).map_err(|e| DataError::Malformed {
                loc: loc.clone(),
                message: format!("not UTF-8: {e}"),
            })?,
            None => {
                return Err(DataError::Malformed {
                    loc,
                    message: "the file is shorter than when it was indexed".into(),
                });
            }
        };
        let record = parse_line::<R>(text, &self.contexts[fi]).map_err(|e| e.at(loc.clone()))?;
        Ok(Located {
            loc,
            offset: entry.offset,
            record,
        })
    }
}
