//! Data files written byte by byte for tests (no NumPy needed): IDX, gzip members, `.npy`
//! arrays and `.npz` archives, as the formats define them.

#![allow(dead_code)]

use std::io::{Cursor, Write};

/// An IDX file with this type code (0x08: unsigned bytes), dimensions and data.
pub fn idx_bytes(type_code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, type_code, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// An IDX file of unsigned bytes.
pub fn idx(dims: &[u32], values: &[u8]) -> Vec<u8> {
    idx_bytes(0x08, dims, values)
}

/// `bytes` as one gzip member.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A version-1 `.npy` with this header dict text and body, padded as NumPy pads it.
pub fn npy_with_header(dict: &str, body: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(body);
    b
}

/// A version-1 `.npy` of C-order data, as NumPy writes it.
pub fn npy(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
    npy_with_header(
        &format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"),
        body,
    )
}

/// An archive holding `members` (name, bytes), deflated like `np.savez_compressed` or stored
/// like `np.savez`.
pub fn zip_of(members: &[(&str, &[u8])], deflate: bool) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in members {
        z.start_file(*name, opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap().into_inner()
}

/// An `.npz` archive with `npy` as `arr_0.npy`, compressed like `np.savez_compressed`.
pub fn npz(npy: &[u8]) -> Vec<u8> {
    zip_of(&[("arr_0.npy", npy)], true)
}
