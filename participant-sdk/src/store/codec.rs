//! Binary encodings of the store's records. Decoding checks every length against the input and
//! returns `Error::Corrupt` instead of panicking, whatever the bytes.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// A transaction's staged writes: key → new value, `None` for a delete.
pub type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

const PREPARED_FORMAT: u8 = 1;
const OP_DELETE: u8 = 0;
const OP_PUT: u8 = 1;

fn corrupt(what: &str, why: impl Into<String>) -> Error {
    Error::Corrupt {
        what: what.to_owned(),
        why: why.into(),
    }
}

/// A prepared record: `format u8 | prepared_at u64 | count u32 | (klen u32, key, op u8,
/// [vlen u32, value])*`, big-endian.
pub fn encode_prepared(writes: &Writes, prepared_at_unix_ms: u64) -> Vec<u8> {
    let size: usize = writes
        .iter()
        .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, Vec::len))
        .sum();
    let mut out = Vec::with_capacity(13 + size);
    out.push(PREPARED_FORMAT);
    out.extend_from_slice(&prepared_at_unix_ms.to_be_bytes());
    out.extend_from_slice(&(writes.len() as u32).to_be_bytes());
    for (key, value) in writes {
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        match value {
            None => out.push(OP_DELETE),
            Some(v) => {
                out.push(OP_PUT);
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(corrupt(
                self.what,
                format!(
                    "truncated: wanted {n} more bytes, {} left",
                    self.bytes.len()
                ),
            ));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b: [u8; 4] = self.take(4)?.try_into().expect("took exactly 4 bytes");
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Result<u64> {
        let b: [u8; 8] = self.take(8)?.try_into().expect("took exactly 8 bytes");
        Ok(u64::from_be_bytes(b))
    }
}

/// Decode a prepared record into its writes and preparation time.
pub fn decode_prepared(bytes: &[u8]) -> Result<(Writes, u64)> {
    let mut r = Reader {
        bytes,
        what: "prepared record",
    };
    let format = r.u8()?;
    if format != PREPARED_FORMAT {
        return Err(corrupt(
            "prepared record",
            format!("unknown format {format}"),
        ));
    }
    let prepared_at = r.u64()?;
    let count = r.u32()? as usize;
    let mut writes = Writes::new();
    for _ in 0..count {
        let klen = r.u32()? as usize;
        let key = r.take(klen)?.to_vec();
        let value = match r.u8()? {
            OP_DELETE => None,
            OP_PUT => {
                let vlen = r.u32()? as usize;
                Some(r.take(vlen)?.to_vec())
            }
            op => return Err(corrupt("prepared record", format!("unknown op {op}"))),
        };
        writes.insert(key, value);
    }
    if !r.bytes.is_empty() {
        return Err(corrupt(
            "prepared record",
            format!("{} trailing bytes", r.bytes.len()),
        ));
    }
    Ok((writes, prepared_at))
}

/// A stored value: `version u64 | value`.
pub fn encode_value(version: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Decode a stored value into (version, value).
pub fn decode_value(bytes: &[u8]) -> Result<(u64, &[u8])> {
    if bytes.len() < 8 {
        return Err(corrupt("value", "shorter than its 8-byte version"));
    }
    let (v, rest) = bytes.split_at(8);
    Ok((u64::from_be_bytes(v.try_into().expect("split at 8")), rest))
}

/// What a participant recorded about a finished transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Committed here.
    Committed,
    /// Aborted here (a tombstone).
    Aborted,
    /// Voted READ_ONLY here: nothing to apply.
    ReadOnly,
}

/// An outcome record: `kind u8 | at u64`.
pub fn encode_outcome(recorded: Recorded, at_unix_ms: u64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = match recorded {
        Recorded::Committed => 1,
        Recorded::Aborted => 2,
        Recorded::ReadOnly => 3,
    };
    out[1..].copy_from_slice(&at_unix_ms.to_be_bytes());
    out
}

/// Decode an outcome record.
pub fn decode_outcome(bytes: &[u8]) -> Result<(Recorded, u64)> {
    if bytes.len() != 9 {
        return Err(corrupt(
            "outcome record",
            format!("{} bytes, expected 9", bytes.len()),
        ));
    }
    let recorded = match bytes[0] {
        1 => Recorded::Committed,
        2 => Recorded::Aborted,
        3 => Recorded::ReadOnly,
        k => return Err(corrupt("outcome record", format!("unknown kind {k}"))),
    };
    let at = u64::from_be_bytes(bytes[1..].try_into().expect("checked length"));
    Ok((recorded, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn prepared_records_round_trip(
            writes in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..20),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                0..20,
            ),
            at in any::<u64>(),
        ) {
            let bytes = encode_prepared(&writes, at);
            prop_assert_eq!(decode_prepared(&bytes).expect("decodes"), (writes, at));
        }

        /// Damaged records are reported, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_prepared(&bytes);
            let _ = decode_outcome(&bytes);
            let _ = decode_value(&bytes);
        }
    }

    #[test]
    fn truncated_record_is_corrupt() {
        let mut w = Writes::new();
        w.insert(b"k".to_vec(), Some(b"value".to_vec()));
        let bytes = encode_prepared(&w, 7);
        for cut in 0..bytes.len() {
            assert!(matches!(
                decode_prepared(&bytes[..cut]),
                Err(Error::Corrupt { .. })
            ));
        }
    }
}
