//! The IDX reader (`data::idx::read_idx`), plain and gzip: never panics, never allocates more
//! than a small multiple of what the file holds whatever its header claims, and accepts
//! exactly the well-formed files, with their data.

use std::io::Read;
use std::path::Path;

use orchestrate::data::idx::{read_header, read_idx};
use proptest::prelude::*;

pub use crate::datafiles::{gzip, idx_bytes};
use crate::harness::{check_bounded, fuzz, peak_alloc, variant};
use crate::mutate::{Input, edgy, mutated};

/// What a well-formed IDX file of unsigned bytes with `ndim` dimensions holds, by the
/// format's definition; `None` when it is not one.
fn reference(bytes: &[u8], ndim: usize) -> Option<(Vec<usize>, Vec<u8>)> {
    let header = 4 + 4 * ndim;
    if bytes.len() < header || bytes[..3] != [0, 0, 0x08] || usize::from(bytes[3]) != ndim {
        return None;
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    (bytes.len() - header == count).then(|| (dims, bytes[header..].to_vec()))
}

/// Bytes a gzip stream decompresses to, by an independent decoder (every member; what is
/// decoded before an error counts), capped at 64 MiB.
fn decompressed_len(bytes: &[u8]) -> usize {
    let mut dec = flate2::read::MultiGzDecoder::new(bytes).take(64 << 20);
    let mut buf = [0u8; 8192];
    let mut n = 0;
    while let Ok(k) = dec.read(&mut buf) {
        if k == 0 {
            break;
        }
        n += k;
    }
    n
}

/// How the generated content is stored in the file.
#[derive(Debug, Clone, Copy)]
enum Wrap {
    /// As is.
    Plain,
    /// As one gzip member (the content itself intact, so the IDX parser sees it).
    Gzip,
    /// Cut in two at a fraction of its length, each part its own gzip member (`cat a.gz b.gz`).
    TwoMembers(u8),
}

fn wrap() -> impl Strategy<Value = Wrap> {
    prop_oneof![
        4 => Just(Wrap::Plain),
        2 => Just(Wrap::Gzip),
        1 => any::<u8>().prop_map(Wrap::TwoMembers),
    ]
}

/// Seeds: small image and label files, plain and gzip (the reader must see through the
/// gzip layer too), and the shipped test labels.
fn seeds() -> Vec<Vec<u8>> {
    let images = idx_bytes(0x08, &[2, 3, 3], &(0..18).collect::<Vec<u8>>());
    let one = idx_bytes(0x08, &[1, 28, 28], &[7; 784]);
    let labels = idx_bytes(0x08, &[5], &[0, 1, 2, 9, 3]);
    let empty = idx_bytes(0x08, &[0, 28, 28], &[]);
    let shipped = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data/fashion-mnist-mini/t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    let mut out = vec![
        images.clone(),
        one,
        labels.clone(),
        empty,
        gzip(&images),
        gzip(&labels),
    ];
    out.push(shipped);
    out
}

/// A header built from edge numbers rather than mutated: type code, dimension count and
/// sizes, then a body of some length.
fn header() -> impl Strategy<Value = Input> {
    (
        prop_oneof![3 => Just(0x08u8), 1 => any::<u8>()],
        proptest::collection::vec(edgy(), 0..5),
        0usize..2048,
    )
        .prop_map(|(t, dims, body)| {
            let dims: Vec<u32> = dims.iter().map(|&d| d as u32).collect();
            Input {
                bytes: idx_bytes(t, &dims, &vec![1; body]),
                seed: usize::MAX - 1,
                edits: 0,
            }
        })
}

#[test]
fn fuzz_idx_reader() {
    let dir = crate::harness::scratch();
    let path = dir.path().join("train-images-idx3-ubyte");
    let input = prop_oneof![4 => mutated(seeds(), 256), 1 => header()];
    fuzz(
        "idx",
        8000,
        (
            input,
            wrap(),
            prop_oneof![3 => Just(None), 1 => Just(Some(1usize)), 1 => Just(Some(3))],
        ),
        |(input, wrap, ndim), tally| {
            let content = &input.bytes;
            // Mostly the dimension count the header claims, so that a label file is read as
            // labels and images as images; sometimes the other one.
            let ndim = ndim.unwrap_or(match content.get(3) {
                Some(1) => 1,
                _ => 3,
            });
            let file = match wrap {
                Wrap::Plain => content.clone(),
                Wrap::Gzip => gzip(content),
                Wrap::TwoMembers(f) => {
                    let cut = content.len() * usize::from(f) / 255;
                    let mut b = gzip(&content[..cut]);
                    b.extend(gzip(&content[cut..]));
                    b
                }
            };
            std::fs::write(&path, &file).unwrap();
            let (result, peak) = peak_alloc(|| read_idx(&path, ndim));
            let gz = file.starts_with(&[0x1f, 0x8b]);
            let unpacked = if gz { decompressed_len(&file) } else { 0 };
            check_bounded("read_idx", peak, file.len().max(unpacked), 8)?;
            // What validation reads before a run: the header alone, with little memory, and
            // never accepting a file the reader refuses or disagreeing with it.
            let (header, header_peak) = peak_alloc(|| read_header(&path, ndim));
            check_bounded("idx::read_header", header_peak, file.len(), 1)?;
            match (&result, &header) {
                (Ok(a), Ok(dims)) => prop_assert_eq!(&a.dims, dims),
                (Ok(_), Err(e)) => {
                    prop_assert!(false, "read_idx accepts what read_header refuses: {}", e)
                }
                _ => {}
            }
            match &result {
                Ok(a) => {
                    tally.add("ok");
                    prop_assert_eq!(a.dims.len(), ndim);
                    prop_assert_eq!(a.dims.iter().product::<usize>(), a.data.len());
                }
                Err(e) => {
                    tally.add(variant(e));
                    prop_assert!(
                        e.to_string().contains("train-images-idx3-ubyte"),
                        "error does not name the file: {e}"
                    );
                }
            }
            // The file's content by the format's definition, where it is known exactly: a
            // plain file, or intact gzip members (as many as `cat a.gz b.gz` makes).
            let known = match wrap {
                Wrap::Plain if gz => None,
                _ => Some(content.as_slice()),
            };
            if let Some(content) = known {
                let expected = reference(content, ndim);
                let got = result.ok().map(|a| (a.dims, a.data));
                prop_assert_eq!(
                    got.is_some(),
                    expected.is_some(),
                    "accepts exactly the well-formed files"
                );
                prop_assert_eq!(got, expected);
            }
            Ok(())
        },
    );
}
