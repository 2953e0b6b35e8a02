//! TFRecord framing of event files: `u64` length, masked CRC32C of the length, data,
//! masked CRC32C of the data, all little-endian; and a reader that stops cleanly at a
//! record a killed writer left half-written.
//!
//! The CRC is ours rather than tensorboard-rs's so that framing, file I/O and error
//! handling are one piece of code we can test (see `../shared/notes/tensorboard.md`).

use std::path::Path;

use protobuf::Message;
use tensorboard_proto::event::Event;

use super::TbError;

/// CRC-32C (Castagnoli, reflected polynomial `0x82F63B78`), one table entry per byte value.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The masked CRC TFRecord stores: a CRC of data that itself holds CRCs is weak, so
/// TensorFlow rotates it and adds a constant.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// Frames `data` as one TFRecord.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// One complete record found in a file: its byte range and payload.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    /// Offset of the record's first byte (its length field).
    pub offset: u64,
    /// Offset just past the record's trailing CRC.
    pub end: u64,
    /// The payload (a serialized `Event`).
    pub data: Vec<u8>,
}

/// Every complete record of `bytes`, in order, and the offset where complete records end.
///
/// Bytes past that offset are a record a killed writer did not finish; TensorBoard stops
/// there too. A CRC mismatch on a complete record is corruption, not truncation.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<RawRecord>, u64), TbError> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    let corrupt = |offset: usize, reason: String| TbError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    while bytes.len() - pos >= 12 {
        let header = &bytes[pos..pos + 8];
        let len_crc = u32::from_le_bytes([
            bytes[pos + 8],
            bytes[pos + 9],
            bytes[pos + 10],
            bytes[pos + 11],
        ]);
        if masked_crc32c(header) != len_crc {
            return Err(corrupt(pos, "length CRC mismatch".into()));
        }
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(header);
        let len = u64::from_le_bytes(len8);
        let available = (bytes.len() - pos - 12) as u64;
        if len.saturating_add(4) > available {
            break; // half-written tail
        }
        let len = len as usize;
        let data = &bytes[pos + 12..pos + 12 + len];
        let crc_at = pos + 12 + len;
        let data_crc = u32::from_le_bytes([
            bytes[crc_at],
            bytes[crc_at + 1],
            bytes[crc_at + 2],
            bytes[crc_at + 3],
        ]);
        if masked_crc32c(data) != data_crc {
            return Err(corrupt(pos, "data CRC mismatch".into()));
        }
        records.push(RawRecord {
            offset: pos as u64,
            end: (crc_at + 4) as u64,
            data: data.to_vec(),
        });
        pos = crc_at + 4;
    }
    Ok((records, pos as u64))
}

/// Decodes the event in record `r` of the file at `path`.
///
/// protobuf 2 (which tensorboard-proto pins) reserves room for a packed repeated field from
/// the field's length before checking that length against the input, so a record claiming
/// 2^64 bytes of histogram buckets panicked a resume (found by the fuzz tests). Such a
/// record is refused here first; protobuf would refuse it anyway, only later.
pub fn event(path: &Path, r: &RawRecord) -> Result<Event, TbError> {
    if !lengths_fit(&r.data, Msg::Event) {
        return Err(TbError::Corrupt {
            path: path.to_path_buf(),
            offset: r.offset,
            reason: "an event field claims more bytes than its record holds".into(),
        });
    }
    Ok(Event::parse_from_bytes(&r.data)?)
}

/// The messages on the way from an `Event` to the packed repeated fields it can hold
/// (`HistogramProto` buckets, `TensorProto` values); no other message under `Event` has one.
#[derive(Clone, Copy)]
enum Msg {
    Event,
    Summary,
    Value,
    Histogram,
    Tensor,
}

impl Msg {
    /// The message that field `field` holds when it is length-delimited, if it is on the way.
    fn child(self, field: u64) -> Option<Msg> {
        match (self, field) {
            (Msg::Event, 5) => Some(Msg::Summary),
            (Msg::Summary, 1) => Some(Msg::Value),
            (Msg::Value, 5) => Some(Msg::Histogram),
            (Msg::Value, 8) => Some(Msg::Tensor),
            _ => None,
        }
    }
}

/// False when a length-delimited field of `bytes` (a `msg`), or of a message on the way to a
/// packed field, claims more bytes than are left. Anything else malformed is left to protobuf,
/// which stops at the same place.
fn lengths_fit(bytes: &[u8], msg: Msg) -> bool {
    let mut pos = 0;
    while pos < bytes.len() {
        let Some((key, n)) = varint(&bytes[pos..]) else {
            return true;
        };
        pos += n;
        match key & 7 {
            0 => match varint(&bytes[pos..]) {
                Some((_, n)) => pos += n,
                None => return true,
            },
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let Some((len, n)) = varint(&bytes[pos..]) else {
                    return true;
                };
                pos += n;
                let left = (bytes.len() - pos) as u64;
                if len > left {
                    return false;
                }
                let end = pos + len as usize;
                if let Some(child) = msg.child(key >> 3)
                    && !lengths_fit(&bytes[pos..end], child)
                {
                    return false;
                }
                pos = end;
            }
            _ => return true,
        }
    }
    true
}

/// A base-128 varint at the start of `bytes` and its length in bytes.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Reads and parses a whole event file.
pub fn read_file(path: &Path) -> Result<(Vec<RawRecord>, u64), TbError> {
    let bytes = std::fs::read(path).map_err(|e| TbError::io(path, e))?;
    parse(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_published_check_values() {
        // The standard check value, and the RFC 3720 (iSCSI) appendix B.4 vectors.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn masked_crc_matches_tensorboards_own_implementation() {
        // Values from tensorboard.compat.tensorflow_stub.pywrap_tensorflow.masked_crc32c.
        assert_eq!(masked_crc32c(b"123456789"), 0xc78a_b0e5);
        assert_eq!(masked_crc32c(&5u64.to_le_bytes()), 0x3e04_b2ea);
        assert_eq!(masked_crc32c(b"hello"), 0x191c_1fbb);
        // Masking an empty payload gives the bare constant, as in TensorFlow's crc32c.h.
        assert_eq!(masked_crc32c(b""), 0xa282_ead8);
    }

    #[test]
    fn frame_layout_is_length_crc_data_crc() {
        let rec = frame(b"hello");
        assert_eq!(rec.len(), 8 + 4 + 5 + 4);
        assert_eq!(&rec[..8], &5u64.to_le_bytes());
        assert_eq!(
            &rec[8..12],
            &masked_crc32c(&5u64.to_le_bytes()).to_le_bytes()
        );
        assert_eq!(&rec[12..17], b"hello");
        assert_eq!(&rec[17..], &masked_crc32c(b"hello").to_le_bytes());
    }

    #[test]
    fn parse_reads_records_and_stops_at_a_truncated_tail() {
        let mut bytes = frame(b"first");
        bytes.extend(frame(b"second record"));
        let complete = bytes.len() as u64;
        let third = frame(b"third, cut short");
        for cut in [1, 11, 12, 20, third.len() - 1] {
            let mut b = bytes.clone();
            b.extend_from_slice(&third[..cut]);
            let (recs, end) = parse(Path::new("x"), &b).unwrap();
            assert_eq!(recs.len(), 2, "cut at {cut}");
            assert_eq!(end, complete);
            assert_eq!(recs[1].data, b"second record");
            assert_eq!(recs[1].offset, frame(b"first").len() as u64);
        }
    }

    #[test]
    fn an_event_claiming_more_than_its_record_is_refused_before_decoding() {
        // Event { summary { value { histo { bucket_limit: packed, 2^64 - 1 bytes } } } }
        let histo = [&[0x32u8][..], &[0xff; 9], &[0x01]].concat();
        let wrap =
            |field: u8, inner: Vec<u8>| [vec![field << 3 | 2, inner.len() as u8], inner].concat();
        let data = wrap(5, wrap(1, wrap(5, histo)));
        let r = RawRecord {
            offset: 7,
            end: 0,
            data,
        };
        let err = event(Path::new("f"), &r).unwrap_err();
        assert!(
            err.to_string().contains("byte 7") && err.to_string().contains("claims"),
            "{err}"
        );

        // Buckets that are there decode.
        let mut h = tensorboard_proto::summary::HistogramProto::new();
        h.set_bucket_limit(vec![1.0, 2.0]);
        let mut v = tensorboard_proto::summary::Summary_Value::new();
        v.set_tag("w".into());
        v.set_histo(h);
        let ev = super::super::summaries::summary_event(3, super::super::summaries::one_value(v));
        let r = RawRecord {
            offset: 0,
            end: 0,
            data: ev.write_to_bytes().unwrap(),
        };
        let back = event(Path::new("f"), &r).unwrap();
        assert_eq!(
            back.get_summary().get_value()[0]
                .get_histo()
                .get_bucket_limit(),
            [1.0, 2.0]
        );
    }

    #[test]
    fn parse_rejects_a_flipped_bit() {
        let mut bytes = frame(b"payload");
        bytes[14] ^= 0x04;
        let err = parse(Path::new("f"), &bytes).unwrap_err();
        assert!(err.to_string().contains("data CRC mismatch"), "{err}");
        let mut bytes = frame(b"payload");
        bytes[0] ^= 0x01;
        let err = parse(Path::new("f"), &bytes).unwrap_err();
        assert!(err.to_string().contains("length CRC"), "{err}");
    }
}
