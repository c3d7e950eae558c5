//! Foreign keys (`x-references`) checked over one batch: a referencing column's values looked
//! up in the referenced dataset's key set.
//!
//! A [`KeySet`] is the referenced column of every live row of the referenced dataset's current
//! state, sorted and deduplicated: integer keys as `i64` (8 bytes a key, 10M keys in 80 MB),
//! string keys as 128-bit fingerprints (dedup's keyed SipHash, 16 bytes a key). A fingerprint
//! collision could only let one orphan pass as a key it is not; at 10M keys and 10M lookups the
//! chance is about 2^-80. The set is built by the job (`stage1::references`, the only I/O);
//! here it is only searched, with a binary search per non-null value.
//!
//! A null value references nothing and passes (a contract says `required` when it must not be
//! null); deletes are not checked, like every rule but the dedup columns'.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::buffer::BooleanBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};

use crate::stage1::dedup::key_fingerprint;
use crate::{Error, Result};

/// The keys of a referenced dataset, sorted and deduplicated once sealed.
#[derive(Debug)]
pub enum KeySet {
    Int(Vec<i64>),
    /// String keys as fingerprints.
    Text(Vec<u128>),
}

/// How a key column's values are held: integers, or strings as fingerprints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Int,
    Text,
}

impl KeyKind {
    /// The kind of a key column of type `dt`; `None` when keys of that type are not supported.
    pub fn of(dt: &DataType) -> Option<KeyKind> {
        match dt {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => Some(KeyKind::Int),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(KeyKind::Text),
            _ => None,
        }
    }
}

/// `array` as `Int64` (kind Int) or `Utf8` (kind Text), for reading values.
fn normalised(array: &ArrayRef, kind: KeyKind) -> Result<ArrayRef> {
    let to = match kind {
        KeyKind::Int => DataType::Int64,
        KeyKind::Text => DataType::Utf8,
    };
    if array.data_type() == &to {
        return Ok(array.clone());
    }
    Ok(cast(array, &to)?)
}

impl KeySet {
    pub fn new(kind: KeyKind) -> KeySet {
        match kind {
            KeyKind::Int => KeySet::Int(Vec::new()),
            KeyKind::Text => KeySet::Text(Vec::new()),
        }
    }

    /// Adds the non-null values of `array` (a column of this set's kind).
    pub fn extend(&mut self, array: &ArrayRef) -> Result<()> {
        let array = normalised(array, self.kind())?;
        match self {
            KeySet::Int(keys) => keys.extend(array.as_primitive::<Int64Type>().iter().flatten()),
            KeySet::Text(keys) => keys.extend(
                array
                    .as_string::<i32>()
                    .iter()
                    .flatten()
                    .map(|s| key_fingerprint(s.as_bytes())),
            ),
        }
        Ok(())
    }

    /// Bytes the keys take (the budget's measure), duplicates included until [`KeySet::seal`].
    pub fn bytes(&self) -> usize {
        match self {
            KeySet::Int(keys) => keys.capacity() * std::mem::size_of::<i64>(),
            KeySet::Text(keys) => keys.capacity() * std::mem::size_of::<u128>(),
        }
    }

    /// Sorts and deduplicates the keys, releasing spare capacity; the set is then searched.
    pub fn seal(mut self) -> KeySet {
        fn seal<T: Ord>(keys: &mut Vec<T>) {
            keys.sort_unstable();
            keys.dedup();
            keys.shrink_to_fit();
        }
        match &mut self {
            KeySet::Int(keys) => seal(keys),
            KeySet::Text(keys) => seal(keys),
        }
        self
    }

    pub fn kind(&self) -> KeyKind {
        match self {
            KeySet::Int(_) => KeyKind::Int,
            KeySet::Text(_) => KeyKind::Text,
        }
    }

    /// Distinct keys.
    pub fn len(&self) -> usize {
        match self {
            KeySet::Int(keys) => keys.len(),
            KeySet::Text(keys) => keys.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True where `array` (of this set's kind) holds a value that is not a key; null is not
    /// an orphan.
    fn orphans(&self, array: &ArrayRef) -> Result<BooleanBuffer> {
        let array = normalised(array, self.kind())?;
        Ok(match self {
            KeySet::Int(keys) => {
                let a = array.as_primitive::<Int64Type>();
                BooleanBuffer::collect_bool(a.len(), |i| {
                    a.is_valid(i) && keys.binary_search(&a.value(i)).is_err()
                })
            }
            KeySet::Text(keys) => {
                let a = array.as_string::<i32>();
                BooleanBuffer::collect_bool(a.len(), |i| {
                    a.is_valid(i)
                        && keys
                            .binary_search(&key_fingerprint(a.value(i).as_bytes()))
                            .is_err()
                })
            }
        })
    }
}

/// A foreign key the job checks: the referencing column, what it references and the keys.
#[derive(Debug)]
pub struct ForeignKey {
    pub column: Arc<str>,
    /// `dataset.column`.
    pub target: Arc<str>,
    /// Orphans are published and counted instead of quarantined.
    pub keep_orphans: bool,
    pub keys: KeySet,
}

/// A foreign key resolved against a schema.
#[derive(Debug)]
pub(super) struct ForeignKeyCheck {
    index: usize,
    message: Arc<str>,
    pub(super) key: Arc<ForeignKey>,
}

impl ForeignKeyCheck {
    /// Resolves `key` against `schema` (of `object`); `None` when the column is absent (an
    /// optional column: every value null). A column whose type cannot hold the keys is a
    /// file-level error.
    pub(super) fn new(
        key: &Arc<ForeignKey>,
        schema: &arrow::datatypes::Schema,
        object: &str,
    ) -> Result<Option<Self>> {
        let Ok(index) = schema.index_of(&key.column) else {
            return Ok(None);
        };
        let dt = schema.field(index).data_type();
        if KeyKind::of(dt) != Some(key.keys.kind()) {
            return Err(Error::bad_input(
                object,
                format!(
                    "column `{}` has type {dt}, which cannot hold the keys of {} it references \
                     ({})",
                    key.column,
                    key.target,
                    match key.keys.kind() {
                        KeyKind::Int => "integers",
                        KeyKind::Text => "strings",
                    }
                ),
            ));
        }
        Ok(Some(ForeignKeyCheck {
            index,
            message: format!("no {} has this value in its current state", key.target).into(),
            key: key.clone(),
        }))
    }

    /// The message of an orphan: it names the reference, never the value.
    pub(super) fn message(&self) -> &Arc<str> {
        &self.message
    }

    /// True where the row's value is an orphan, deletes (`exempt`) left out.
    pub(super) fn orphans(
        &self,
        batch: &arrow::array::RecordBatch,
        exempt: Option<&BooleanBuffer>,
    ) -> Result<BooleanBuffer> {
        let orphans = self.key.keys.orphans(batch.column(self.index))?;
        Ok(match exempt {
            Some(deletes) => &orphans & &!deletes,
            None => orphans,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, StringArray};

    #[test]
    fn orphans_are_the_values_not_in_the_set_and_null_is_none() {
        let mut set = KeySet::new(KeyKind::Int);
        let keys: ArrayRef = Arc::new(Int32Array::from(vec![Some(5), None, Some(1), Some(5)]));
        set.extend(&keys).unwrap();
        let set = set.seal();
        assert_eq!(set.len(), 2);
        let values: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), Some(2), None, Some(5)]));
        let orphans: Vec<bool> = set.orphans(&values).unwrap().iter().collect();
        assert_eq!(orphans, vec![false, true, false, false]);

        let mut set = KeySet::new(KeyKind::Text);
        let keys: ArrayRef = Arc::new(StringArray::from(vec!["a", "bb"]));
        set.extend(&keys).unwrap();
        let set = set.seal();
        let values: ArrayRef = Arc::new(StringArray::from(vec![Some("bb"), Some("b"), None]));
        let orphans: Vec<bool> = set.orphans(&values).unwrap().iter().collect();
        assert_eq!(orphans, vec![false, true, false]);
    }
}
