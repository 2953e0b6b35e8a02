//! The NPZ reader (`data::npz::read_npz`: zip archive, `.npy` header, data) and the `.npy`
//! parser under it: never panics, never allocates more than a small multiple of what the
//! file holds (or what its compressed members can expand to), and a well-formed array
//! with a supported dtype is read with its values.

use orchestrate::data::npz::{NpyDtype, parse_npy, read_header, read_npz};
use proptest::prelude::*;

pub use crate::datafiles::{npy, npy_with_header, zip_of};
use crate::harness::{check_bounded, fuzz, peak_alloc, variant};
use crate::mutate::{Input, edgy, mutated};

fn npy_seeds() -> Vec<Vec<u8>> {
    let mut labels = Vec::new();
    for v in [3i64, 0, 9, -1] {
        labels.extend_from_slice(&v.to_le_bytes());
    }
    let mut v2 = npy("|u1", "(2,)", &[1, 2]);
    // Format version 2: a 4-byte header length.
    v2[6] = 2;
    let len = u16::from_le_bytes([v2[8], v2[9]]) as u32;
    v2.splice(8..10, (len - 2).to_le_bytes());
    v2.truncate(12 + (len - 2) as usize);
    v2.extend_from_slice(&[1, 2]);
    vec![
        npy("|u1", "(2, 3, 3)", &(0..18).collect::<Vec<u8>>()),
        npy("|u1", "(1, 28, 28)", &[5; 784]),
        npy("<i8", "(4,)", &labels),
        npy("<i2", "(3,)", &[1, 0, 0xff, 0xff, 7, 0]),
        npy("<u4", "(2,)", &[9, 0, 0, 0, 0, 0, 0, 0x80]),
        npy("|i1", "(3,)", &[0xff, 1, 2]),
        npy("|u1", "(0, 28, 28)", &[]),
        npy("|u1", "()", &[4]),
        v2,
    ]
}

/// The dtypes the reader supports (README: uint8 pixels, any NumPy integer for labels, either
/// byte order), with their element size.
const SUPPORTED: &[(&str, usize)] = &[
    ("|u1", 1),
    ("<u1", 1),
    ("|i1", 1),
    ("<i2", 2),
    ("<u2", 2),
    ("<i4", 4),
    ("<u4", 4),
    ("<i8", 8),
    ("<u8", 8),
    (">i2", 2),
    (">u2", 2),
    (">i4", 4),
    (">u4", 4),
    (">i8", 8),
    (">u8", 8),
];

const OTHER_DESCRS: &[&str] = &[
    "<f4",
    "<f8",
    "|b1",
    "<U3",
    "O",
    "",
    "<",
    "|u",
    "<i3",
    "<i16",
    "<i99999999999999999999",
    "|u1 ",
    "u1",
    "<c16",
    "<M8[ns]",
];

/// How the shape tuple is written.
fn shape_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::collection::vec(prop_oneof![3 => 0u64..6, 1 => edgy()], 0..4).prop_map(|d| {
            match d.as_slice() {
                [one] => format!("({one},)"),
                _ => format!("({})", d.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")),
            }
        }),
        1 => proptest::sample::select(&[
            "(3L,)", "(-1,)", "(1, -2)", "(,)", "((2, 3),)", "[2, 3]", "(2", "2)", "(99999999999999999999999,)",
            "(1e3,)", "(0x10,)", "( , , )", "", "None",
        ][..]).prop_map(String::from),
    ]
}

/// A header dict built from parts, the size numbers on edges: descr, order, shape, then a
/// body of the size it promises (when that is small) or of another size.
fn header() -> impl Strategy<Value = (Input, Option<(String, usize)>)> {
    let descr = prop_oneof![
        3 => proptest::sample::select(SUPPORTED).prop_map(|(d, s)| (d.to_string(), Some(s))),
        1 => proptest::sample::select(OTHER_DESCRS).prop_map(|d| (d.to_string(), None)),
    ];
    let order = proptest::sample::select(&["False", "False", "False", "True", "0", "false"][..]);
    (descr, order, shape_text(), any::<bool>(), 0usize..600, any::<bool>())
        .prop_map(|((descr, size), order, shape, exact, other_len, double_quotes)| {
            let q = if double_quotes { '"' } else { '\'' };
            let dict = format!(
                "{{{q}descr{q}: {q}{descr}{q}, {q}fortran_order{q}: {order}, {q}shape{q}: {shape}, }}"
            );
            let promised = size.and_then(|s| {
                let dims: Option<Vec<u64>> = shape
                    .strip_prefix('(')
                    .and_then(|s| s.strip_suffix(')'))
                    .and_then(|inner| {
                        inner
                            .split(',')
                            .map(str::trim)
                            .filter(|t| !t.is_empty())
                            .map(|t| t.parse().ok())
                            .collect()
                    });
                dims?.iter().try_fold(s as u64, |a, &d| a.checked_mul(d))
            });
            let body_len = match promised {
                Some(n) if exact && n <= 4096 => n as usize,
                _ => other_len,
            };
            let body: Vec<u8> = (0..body_len).map(|i| (i * 37 % 251) as u8).collect();
            // Whether this is a well-formed array of a supported dtype: it must be read.
            let valid = order == "False" && promised == Some(body_len as u64);
            let bytes = npy_with_header(&dict, &body);
            let input = Input { bytes, seed: usize::MAX - 1, edits: 0 };
            (input, valid.then(|| (descr, size.unwrap_or(1))))
        })
}

/// Element values of little-endian integer bytes, by an independent decoder (big-endian ones
/// are reversed first).
fn decode_le(raw: &[u8], size: usize, signed: bool) -> Vec<i64> {
    raw.chunks(size)
        .map(|c| {
            let mut v: u64 = 0;
            for (i, &b) in c.iter().enumerate() {
                v |= u64::from(b) << (8 * i);
            }
            let bits = 8 * size as u32;
            if signed && bits < 64 && v >> (bits - 1) & 1 == 1 {
                (v | (!0u64 << bits)) as i64
            } else {
                v as i64
            }
        })
        .collect()
}

/// Checks an accepted array against itself: as many bytes as its shape and dtype promise,
/// and every value readable.
fn consistent(a: &orchestrate::data::npz::NpyArray) -> Result<(), TestCaseError> {
    let count: usize = a.shape.iter().product();
    let size = match a.dtype {
        NpyDtype::U8 | NpyDtype::I8 => 1,
        NpyDtype::Int { bytes, .. } => bytes,
        #[allow(unreachable_patterns)]
        _ => a.raw.len() / count.max(1),
    };
    prop_assert_eq!(a.raw.len(), count * size);
    prop_assert_eq!(a.to_i64().len(), count);
    prop_assert_eq!(a.as_u8().is_some(), a.dtype == NpyDtype::U8);
    Ok(())
}

#[test]
fn fuzz_npy_parser() {
    let input = prop_oneof![
        3 => mutated(npy_seeds(), 128).prop_map(|i| (i, None)),
        2 => header(),
    ];
    fuzz("npy", 10000, input, |(input, valid), tally| {
        let (result, peak) = peak_alloc(|| parse_npy(&input.bytes));
        check_bounded("parse_npy", peak, input.bytes.len(), 4)?;
        match &result {
            Ok(a) => {
                tally.add("ok");
                consistent(a)?;
            }
            Err(e) => tally.add(variant(e)),
        }
        if let Some((descr, size)) = valid {
            let a = result
                .map_err(|e| TestCaseError::fail(format!("well-formed {descr} refused: {e}")))?;
            let signed = descr.contains('i');
            let mut body = input.bytes[input.bytes.len() - a.raw.len()..].to_vec();
            if descr.starts_with('>') {
                body.chunks_mut(size).for_each(<[u8]>::reverse);
            }
            prop_assert_eq!(a.to_i64(), decode_le(&body, size, signed));
        }
        Ok(())
    });
}

/// How the generated `.npy` is packed into the archive.
#[derive(Debug, Clone)]
enum Pack {
    /// One member of this name, deflated or stored.
    One(&'static str, bool),
    /// Two `.npy` members: the reader must choose `arr_0.npy` or refuse.
    Two(&'static str, &'static str),
}

fn pack() -> impl Strategy<Value = Pack> {
    prop_oneof![
        4 => (proptest::sample::select(&["arr_0.npy", "labels.npy", "dir/x.npy", "x.txt", ".npy"][..]), any::<bool>())
            .prop_map(|(n, d)| Pack::One(n, d)),
        1 => proptest::sample::select(&[("arr_0.npy", "arr_1.npy"), ("a.npy", "b.npy"), ("arr_0.npy", "arr_0.npy.txt")][..])
            .prop_map(|(a, b)| Pack::Two(a, b)),
    ]
}

#[test]
fn fuzz_npz_reader() {
    let dir = crate::harness::scratch();
    let path = dir.path().join("kmnist-train-imgs.npz");
    let zip_seeds: Vec<Vec<u8>> = npy_seeds()
        .iter()
        .enumerate()
        .map(|(i, n)| zip_of(&[("arr_0.npy", n)], i % 2 == 0))
        .collect();
    // Either a well-formed archive around a broken `.npy`, or a broken archive.
    let case = prop_oneof![
        2 => (mutated(npy_seeds(), 128), pack()).prop_map(|(i, p)| (i, Some(p))),
        1 => mutated(zip_seeds, 256).prop_map(|i| (i, None)),
    ];
    fuzz("npz", 6000, case, |(input, pack), tally| {
        let file = match &pack {
            Some(Pack::One(name, deflate)) => zip_of(&[(name, &input.bytes)], *deflate),
            Some(Pack::Two(a, b)) => zip_of(&[(a, &input.bytes), (b, &input.bytes)], true),
            None => input.bytes.clone(),
        };
        std::fs::write(&path, &file).unwrap();
        let (result, peak) = peak_alloc(|| read_npz(&path));
        match &pack {
            // What a built archive can expand to is its member.
            Some(_) => check_bounded("read_npz", peak, file.len() + input.bytes.len(), 8)?,
            // A broken archive's deflated member can expand up to deflate's 1032:1.
            None => check_bounded("read_npz", peak, file.len(), 1100)?,
        }
        // What validation reads before a run: the header alone, agreeing with the reader.
        let (header, header_peak) = peak_alloc(|| read_header(&path));
        check_bounded("npz::read_header", header_peak, file.len(), 1)?;
        match (&result, &header) {
            (Ok(a), Ok(h)) => {
                prop_assert_eq!(&a.shape, &h.shape);
                prop_assert_eq!(a.dtype, h.dtype);
            }
            (Ok(_), Err(e)) => {
                prop_assert!(false, "read_npz accepts what read_header refuses: {}", e)
            }
            _ => {}
        }
        match &result {
            Ok(a) => {
                tally.add("ok");
                consistent(a)?;
            }
            Err(e) => {
                tally.add(variant(e));
                prop_assert!(
                    e.to_string().contains("kmnist-train-imgs.npz"),
                    "error does not name the file: {e}"
                );
            }
        }
        // An archive whose one `.npy` member (or whose `arr_0.npy`) is these bytes reads as
        // those bytes parse.
        let member_is_input = match &pack {
            Some(Pack::One(name, _)) => name.ends_with(".npy"),
            Some(Pack::Two(a, b)) => *a == "arr_0.npy" || !b.ends_with(".npy"),
            None => false,
        };
        if member_is_input {
            let direct = parse_npy(&input.bytes);
            prop_assert_eq!(
                result.as_ref().ok(),
                direct.as_ref().ok(),
                "the archive's member parses differently from the same bytes"
            );
        }
        Ok(())
    });
}
