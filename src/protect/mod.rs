//! PCI DSS and PII protection, applied to every value the program writes (curated and quarantine
//! alike), whatever its Arrow type.
//!
//! This folder owns the protection rules and their application to Arrow data: [`Protector`] and
//! the public API in this file, card-number detection and masking (`card`: Luhn, brand IINs and lengths,
//! the free-text scan), the Unicode digit table (`digits`), the checks that refuse a number
//! holding a card (`numeric`), the PII transforms and keyed hash (`pii`) and one function per
//! Arrow type (`arrays`). It is a pure transform of batches: it never writes, never logs, never
//! puts a value in an error (messages name the object, column, type and row), reads no settings
//! and no environment (the switches and the key are handed to [`Protector::new`]), and knows no
//! stage.
//!
//! Card data is looked for in every physical form a column can take, so that protection holds
//! by construction and not by the types a file happens to use:
//!
//! - strings: `Utf8`, `LargeUtf8`, `Utf8View`;
//! - bytes: `Binary`, `LargeBinary`, `BinaryView`, `FixedSizeBinary`, scanned as text (below);
//! - dictionaries: their values are protected, their keys kept;
//! - nested values: the children of `List`, `LargeList`, `FixedSizeList`, `ListView`,
//!   `LargeListView`, `Struct`, `Map`, `Union` and the values of `RunEndEncoded`, the parent
//!   rebuilt around the protected children with its offsets, sizes, type ids, run ends and nulls;
//! - numbers wide enough for 13 digits: `Int64`, `UInt64`, `Decimal64`/`128`/`256` (by the digits
//!   of the integer part) and `Float64` (integral values only).
//!
//! Rules:
//!
//! - `x-pci: "pan"` columns: every decimal digit but the last four becomes `*`, separators kept.
//!   Digits of every script count (Unicode category Nd: full-width `４`, Arabic-Indic `٤`, …).
//! - Every other column (unless `x-pci: "none"`) is scanned for card numbers in free text. A *run*
//!   is digits with single spaces or dashes allowed between digit groups. Every digit of a run is
//!   a possible start, tried left to right, the longest span first (19 digits down to 13): a span
//!   with the IIN of a card brand and one of that brand's lengths (Visa, Mastercard, Amex,
//!   Discover, JCB, Diners, UnionPay, Maestro, RuPay, Mir, UATP: the table at `brand_lengths` in
//!   `card`) that passes Luhn is masked to its last four digits, separators kept, and the scan
//!   goes on after it. So a card glued to other digits (`004111…`, `ref12` + card) is found. The
//!   scan repeats on its own output until nothing changes, so no candidate survives anywhere. A
//!   value holding non-ASCII digits is scanned on its characters, each digit read as its ASCII
//!   value, and the matching characters are masked.
//! - A number cannot be partly masked: one whose integer digits, as a whole, are a card number
//!   (13 to 19 digits, brand prefix, Luhn; a card glued inside a longer number is not looked for,
//!   see [`digits_hold_card`](card::digits_hold_card)) refuses the whole file
//!   ([`Error::BadInput`]), with a message that names the column, its type and the row but never
//!   the value, and says how to fix the contract. A value below 10^12 in magnitude has at most 12
//!   digits and costs one comparison.
//! - Types that cannot hold text or 13 significant digits pass through untouched: `Null`,
//!   `Boolean`, integers of up to 32 bits, `Float16`, `Float32` (a 24-bit mantissa), `Decimal32`
//!   (at most 10 digits) and the temporal types (dates, times, timestamps, durations, intervals:
//!   an `i64` timestamp could equal a card number numerically, but it is written and read as an
//!   instant, never as that number).
//! - `x-pii` on a `Utf8` column: `hash` (keyed HMAC-SHA-256 of the trimmed value, lowercased for
//!   `format: email`, as 64 lowercase hex digits), `mask` (by format: `j***@example.com`,
//!   `+44********89`, else every letter and digit but the last four becomes `*`; see `pii`),
//!   `redact` (`REDACTED`). What `mask` keeps is scanned for card numbers (an e-mail domain
//!   can hold one); a `hash` column is not scanned: its values are replaced whole (a hex token
//!   can hold a run of digits that passes Luhn by chance; it is a hash, not a card). A PII
//!   column of another type gets the card protection instead.
//!
//! Masking only replaces characters by `*`. An ASCII value keeps its length, so an ASCII string
//! array is masked in one copy of its values buffer with its offsets and nulls shared; a string
//! with non-ASCII digits gets shorter (one `*` per character) and its array new offsets. Byte
//! values always keep their length: every byte of a masked character becomes `*`, so valid UTF-8
//! stays valid UTF-8.
//!
//! An array in which no value may hold a card ([`may_hold_pan`] on each value, plus a look for
//! non-ASCII digits in a non-ASCII value) is returned untouched (zero copy), and so is a nested
//! array none of whose children changed: the scan stays cheap on names, dates and enums.

mod arrays;
mod card;
mod digits;
mod numeric;
mod pii;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Schema};

use crate::contract::{Contract, Format, Pci, Pii};
use crate::report::Transform;
use crate::{Error, Result};

use arrays::{hash_column, map_column, protect_array};
pub use card::{brand_fits, luhn_valid, mask_card_numbers, mask_pan, may_hold_pan};
pub use digits::decimal_digit;
pub use pii::{hash_pii, key_id, mask_pii, KeyedHash};

/// How the strings and bytes of one column are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `x-pci: "pan"`: every digit but the last four masked.
    Pan,
    /// The free-text scan.
    Scan,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Card(Mode),
    /// A PII transform, with the column's format (e-mail normalisation of `hash`, the forms of
    /// `mask`).
    Pii {
        pii: Pii,
        format: Option<Format>,
    },
}

/// Where a protected array sits, for the message that refuses a number holding a card.
#[derive(Debug, Clone, Copy)]
struct Place<'a> {
    object: &'a str,
    column: &'a str,
    /// The type of the whole column.
    column_type: &'a DataType,
    /// True for the column's own array, whose indices are the rows of the batch; false for a
    /// child (list items, struct fields, dictionary values), whose indices are not.
    top: bool,
}

impl Place<'_> {
    fn child(self) -> Self {
        Place { top: false, ..self }
    }

    /// The error refusing the file because of the number at `index` (never the value itself).
    fn refusal(self, index: usize) -> Error {
        let which = if self.top {
            format!("row {index} of a batch")
        } else {
            "a value".to_string()
        };
        Error::bad_input(
            self.object,
            format!(
                "column `{}` ({}): {which} is a number whose digits form a card number (13 to 19 \
                 digits, a card brand's prefix, Luhn-valid), and a number cannot be masked to its \
                 last four digits, so the file is refused. If the column does not hold card data, \
                 declare it with `x-pci: \"none\"` in the contract (adding it to `properties` if \
                 it is not there); if it does, store card numbers as strings, declared \
                 `type: string` with `x-pci: \"pan\"`",
                self.column, self.column_type
            ),
        )
    }
}

/// An array's protection: the new array, or `None` when nothing changed (the input is kept, zero
/// copy), and the number of values changed.
type Changed = (Option<ArrayRef>, usize);

/// Protection compiled against one schema.
#[derive(Debug, Clone)]
pub struct Protector {
    columns: Vec<(usize, Arc<str>, Action)>,
    mac: KeyedHash,
}

/// Values changed in one batch, per column name.
pub type MaskCounts = Vec<(Arc<str>, usize)>;

impl Protector {
    /// Plans protection of the columns of `schema`, of every type (see the module docs). With
    /// `pci` false, card masking and scanning are off (PII transforms still apply). `pii_key`
    /// keys `x-pii: hash`.
    pub fn new(contract: &Contract, schema: &Schema, pci: bool, pii_key: &[u8]) -> Self {
        let mut columns = Vec::new();
        for (index, field) in schema.fields().iter().enumerate() {
            let spec = contract.column(field.name());
            let action = match spec {
                Some(s) if s.pii.is_some() && field.data_type() == &DataType::Utf8 => {
                    s.pii.map(|pii| Action::Pii {
                        pii,
                        format: s.format,
                    })
                }
                Some(s) if s.pci == Pci::None => None,
                Some(s) if s.pci == Pci::Pan => pci.then_some(Action::Card(Mode::Pan)),
                _ => pci.then_some(Action::Card(Mode::Scan)),
            };
            if let Some(a) = action {
                columns.push((index, field.name().as_str().into(), a));
            }
        }
        Protector {
            columns,
            mac: KeyedHash::new(pii_key),
        }
    }

    /// Each protected column and its transform, in schema order, for the audit.
    pub fn transforms(&self) -> impl Iterator<Item = (&str, Transform)> {
        self.columns.iter().map(|(_, name, action)| {
            let transform = match action {
                Action::Card(Mode::Pan) => Transform::PanMask,
                Action::Card(Mode::Scan) => Transform::CardScan,
                Action::Pii { pii: Pii::Hash, .. } => Transform::Hash,
                Action::Pii { pii: Pii::Mask, .. } => Transform::Mask,
                Action::Pii {
                    pii: Pii::Redact, ..
                } => Transform::Redact,
            };
            (&**name, transform)
        })
    }

    /// Protects one batch of `object` (named in errors), returning it and the number of values
    /// changed per column (for a nested column, the strings changed inside it). A number holding
    /// a card number is an [`Error::BadInput`]. With `parallel`, columns are transformed on the
    /// rayon pool (see `map_columns` in the crate root).
    pub fn protect(
        &self,
        batch: &RecordBatch,
        object: &str,
        parallel: bool,
    ) -> Result<(RecordBatch, MaskCounts)> {
        let transform = |(index, name, action): &(usize, Arc<str>, Action)| {
            let column = batch.columns().get(*index).ok_or_else(|| {
                Error::Internal(format!(
                    "protection planned a column `{name}` the batch lacks"
                ))
            })?;
            let (new, n) = match action {
                Action::Card(mode) => {
                    let place = Place {
                        object,
                        column: name,
                        column_type: column.data_type(),
                        top: true,
                    };
                    protect_array(column, *mode, place)?
                }
                Action::Pii { pii, format } => {
                    let a = column.as_string_opt::<i32>().ok_or_else(|| {
                        Error::Internal(format!("PII column `{name}` is not Utf8 as planned"))
                    })?;
                    match pii {
                        Pii::Hash => hash_column(a, &self.mac, *format == Some(Format::Email))?,
                        Pii::Mask => map_column(a, |s| {
                            let masked = mask_pii(s, *format);
                            Some(mask_card_numbers(&masked).unwrap_or(masked))
                        }),
                        Pii::Redact => map_column(a, |_| Some("REDACTED".to_string())),
                    }
                }
            };
            Ok((*index, new, name.clone(), n))
        };
        let changed: Vec<(usize, Option<ArrayRef>, Arc<str>, usize)> =
            crate::map_columns(&self.columns, parallel, transform)
                .into_iter()
                .collect::<Result<_>>()?;
        let mut arrays: Vec<ArrayRef> = batch.columns().to_vec();
        let mut counts = Vec::new();
        for (index, new, name, n) in changed {
            if let Some(new) = new {
                arrays[index] = new;
            }
            if n > 0 {
                counts.push((name, n));
            }
        }
        Ok((RecordBatch::try_new(batch.schema(), arrays)?, counts))
    }
}

#[cfg(test)]
mod tests;
