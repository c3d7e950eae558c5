//! What the text formats ([`super::csv`], [`super::json`]) share: an object's bytes read in
//! ranged GETs on a blocking thread and decompressed when gzipped ([`Source`]), work units as
//! byte ranges of consecutive records ([`Unit`]) streamed to the consumer ([`stream`]), and the
//! masked text of a line for a quarantine message ([`shown`]).

use std::io::{BufRead, BufReader, Read as _};
use std::sync::Arc;

use arrow::buffer::BooleanBuffer;
use arrow::error::ArrowError;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use super::{Decoder, InputObject, Read, RowGroup};
use crate::protect::mask_card_numbers;
use crate::store::store_error;
use crate::{Error, Result};

/// Records per work unit at most.
pub const UNIT_ROWS: usize = 1 << 16;
/// Bytes per work unit at most (a unit is held whole while it is decoded).
pub const UNIT_BYTES: u64 = 16 << 20;

/// Characters of a line or value shown in a quarantine message.
pub(super) const SHOWN_CHARS: usize = 400;

/// A run of consecutive records decoded as one piece.
#[derive(Debug, Clone, Copy)]
pub(super) struct Unit {
    pub first_row: u64,
    pub rows: usize,
    /// Byte range in the (decompressed) object.
    pub start: u64,
    pub end: u64,
    /// Line number (from 1) of the unit's first byte.
    pub first_line: u64,
}

/// Bytes per ranged GET of [`ObjectBytes`].
const FETCH_BYTES: u64 = 8 << 20;

/// An object's bytes as a blocking reader: ranged GETs of [`FETCH_BYTES`] in order, the next one
/// in flight while the current one is read, each waited for on the runtime (so it runs on a
/// blocking thread). A GET stream's chunks are small (8 KiB from a local file), and a wait per
/// chunk cost more than decoding them.
struct ObjectBytes {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    /// Where the next range starts.
    offset: u64,
    next: Option<tokio::task::JoinHandle<object_store::Result<Bytes>>>,
    chunk: Bytes,
    handle: Handle,
}

impl ObjectBytes {
    fn new(object: &InputObject) -> ObjectBytes {
        let mut bytes = ObjectBytes {
            store: object.location.store.clone(),
            path: object.location.path.clone(),
            size: object.size,
            offset: 0,
            next: None,
            chunk: Bytes::new(),
            handle: Handle::current(),
        };
        bytes.fetch_next();
        bytes
    }

    /// Starts the GET of the next range, if any is left.
    fn fetch_next(&mut self) {
        if self.offset >= self.size {
            return;
        }
        let end = (self.offset + FETCH_BYTES).min(self.size);
        let (store, path, range) = (self.store.clone(), self.path.clone(), self.offset..end);
        self.next = Some(
            self.handle
                .spawn(async move { store.get_range(&path, range).await }),
        );
        self.offset = end;
    }
}

impl std::io::Read for ObjectBytes {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            let Some(next) = self.next.take() else {
                return Ok(0);
            };
            self.chunk = self
                .handle
                .block_on(next)
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
            self.fetch_next();
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// An object's bytes from its first, decompressed when its name ends in `.gz`.
pub(super) struct Source {
    raw: BufReader<ObjectBytes>,
    gzip: bool,
}

impl Source {
    /// Starts reading `object` (its first range is fetched at once).
    pub(super) fn start(object: &InputObject) -> Source {
        Source {
            raw: BufReader::with_capacity(1 << 20, ObjectBytes::new(object)),
            gzip: object.location.url.ends_with(".gz"),
        }
    }

    /// The bytes as a blocking reader; call on a blocking thread (the gzip header is read
    /// here).
    pub(super) fn reader(self) -> Box<dyn BufRead + Send> {
        if self.gzip {
            Box::new(BufReader::with_capacity(
                1 << 20,
                flate2::bufread::MultiGzDecoder::new(self.raw),
            ))
        } else {
            Box::new(self.raw)
        }
    }
}

/// A read failure of `url`: the store's error when storage failed underneath, else bad input
/// (a truncated or corrupt gzip stream).
pub(super) fn io_error(url: &str, e: std::io::Error) -> Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<object_store::Error>())
    {
        Some(_) => match e.into_inner().map(|b| b.downcast::<object_store::Error>()) {
            Some(Ok(store)) => store_error(url, *store),
            _ => Error::bad_input(url, "read failed"),
        },
        None => Error::bad_input(url, format!("cannot read the data: {e}")),
    }
}

/// Text of `bytes` fit for a quarantine message: at most [`SHOWN_CHARS`] characters, card
/// numbers masked.
pub(super) fn shown(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(SHOWN_CHARS * 4)];
    let text = String::from_utf8_lossy(head);
    let text = text.trim_matches(['\n', '\r']);
    let masked = mask_card_numbers(text).unwrap_or_else(|| text.to_string());
    let mut out: String = masked.chars().take(SHOWN_CHARS).collect();
    if out.len() < masked.len() || head.len() < bytes.len() {
        out.push('…');
    }
    out
}

/// Streams the units of `input` (`units`, of `columns` columns) that hold a row `read` keeps,
/// in order, read on a blocking thread: `prepare` gets the projected column indices (every
/// column when `read` names none) and returns what makes each unit's decoder from the unit,
/// its bytes and its slice of the selection.
pub(super) fn stream<P, D>(
    input: &InputObject,
    units: Arc<Vec<Unit>>,
    columns: usize,
    read: Read,
    prepare: P,
) -> mpsc::Receiver<Result<RowGroup>>
where
    P: FnOnce(Vec<usize>) -> std::result::Result<D, ArrowError> + Send + 'static,
    D: FnMut(Unit, Vec<u8>, Option<BooleanBuffer>) -> Decoder,
{
    let (tx, rx) = mpsc::channel(read.read_ahead.max(1));
    let src = Source::start(input);
    let url = input.location.url.clone();
    tokio::task::spawn_blocking(move || {
        let projection = read
            .columns
            .clone()
            .unwrap_or_else(|| (0..columns).collect());
        match prepare(projection) {
            Ok(decoder) => feed(&url, src.reader(), &units, &read, &tx, decoder),
            Err(e) => {
                let _ = tx.blocking_send(Err(e.into()));
            }
        }
    });
    rx
}

/// Reads the object's units in order and sends those holding rows `read` keeps, each with the
/// decoder `decoder` makes from the unit, its bytes and its slice of the selection.
fn feed(
    url: &str,
    mut src: Box<dyn BufRead + Send>,
    units: &[Unit],
    read: &Read,
    tx: &mpsc::Sender<Result<RowGroup>>,
    mut decoder: impl FnMut(Unit, Vec<u8>, Option<BooleanBuffer>) -> Decoder,
) {
    let mut at = 0u64;
    for unit in units {
        let keep = match &read.keep {
            Some(bits) if unit.first_row as usize + unit.rows > bits.len() => {
                let _ = tx.blocking_send(Err(Error::Internal(
                    "selection shorter than the file".into(),
                )));
                return;
            }
            Some(bits) => Some(bits.slice(unit.first_row as usize, unit.rows)),
            None => None,
        };
        let mut bytes = vec![0u8; (unit.end - unit.start) as usize];
        let got = std::io::copy(&mut (&mut src).take(unit.start - at), &mut std::io::sink())
            .and_then(|_| src.read_exact(&mut bytes));
        if let Err(e) = got {
            let _ = tx.blocking_send(Err(io_error(url, e)));
            return;
        }
        at = unit.end;
        if keep.as_ref().is_some_and(|k| k.count_set_bits() == 0) {
            continue;
        }
        let group = RowGroup::decoded(unit.first_row, unit.rows, decoder(*unit, bytes, keep));
        if tx.blocking_send(Ok(group)).is_err() {
            return;
        }
    }
}
