//! Reader for the IDX files of the MNIST family (MNIST, Fashion-MNIST, KMNIST).
//!
//! Layout: two zero bytes, a type code (0x08 = unsigned byte, the only one these data sets
//! use), the number of dimensions, one big-endian `u32` per dimension, then the values in
//! row-major order. Files may be gzip-compressed; we look at the first two bytes (`1f 8b`)
//! rather than trusting the file name.

use super::DataError;
use std::io::Read;
use std::path::Path;

/// Type code of unsigned bytes, the only element type MNIST-family files use.
const UBYTE: u8 = 0x08;

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Dimension sizes, outermost first (`[n, rows, cols]` for images, `[n]` for labels).
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// Reads a file whole, decompressing it when it starts with the gzip magic number.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DataError::Gzip {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Reads an IDX file (gzip or not) that must have `ndim` dimensions.
pub fn read_idx(path: &Path, ndim: usize) -> Result<IdxArray, DataError> {
    let bytes = read_maybe_gzip(path)?;
    parse_idx(&bytes, ndim).map_err(|e| e.at(path))
}

/// Parses IDX bytes; errors carry no path yet (the caller adds it with [`DataError::at`]).
pub fn parse_idx(bytes: &[u8], ndim: usize) -> Result<IdxArray, DataError> {
    if bytes.len() < 4 {
        return Err(DataError::bad_magic(format!(
            "file has {} bytes, too short for the 4-byte IDX magic number",
            bytes.len()
        )));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != UBYTE || bytes[3] as usize != ndim {
        return Err(DataError::bad_magic(format!(
            "magic number {magic:#010x}, expected {:#010x} (unsigned bytes, {ndim} dimension{})",
            (u32::from(UBYTE) << 8) | ndim as u32,
            if ndim == 1 { "" } else { "s" }
        )));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(DataError::size(format!(
            "header needs {header} bytes, file has {}",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::size(format!("dimensions {dims:?} overflow")))?;
    let body = &bytes[header..];
    if body.len() != expected {
        return Err(DataError::size(format!(
            "header says {dims:?} = {expected} values, file holds {}",
            body.len()
        )));
    }
    Ok(IdxArray {
        dims,
        data: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A hand-made IDX file: `ndim` dims then the data bytes.
    pub(crate) fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, UBYTE, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn parses_images_and_labels() {
        let img = parse_idx(
            &idx_bytes(&[2, 2, 3], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
            3,
        )
        .unwrap();
        assert_eq!(img.dims, vec![2, 2, 3]);
        assert_eq!(img.data[11], 11);
        let lab = parse_idx(&idx_bytes(&[3], &[7, 0, 9]), 1).unwrap();
        assert_eq!(lab.dims, vec![3]);
        assert_eq!(lab.data, vec![7, 0, 9]);
    }

    #[test]
    fn reads_plain_and_gzip_files_alike() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx_bytes(&[2], &[4, 2]);
        let plain = dir.path().join("labels-idx1-ubyte");
        let gz = dir.path().join("labels.gz-but-named-oddly");
        std::fs::write(&plain, &bytes).unwrap();
        std::fs::write(&gz, gzip(&bytes)).unwrap();
        assert_eq!(read_idx(&plain, 1).unwrap(), read_idx(&gz, 1).unwrap());
    }

    #[test]
    fn bad_magic_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x-idx3-ubyte");
        // A label file (1 dimension) where images (3) are expected.
        std::fs::write(&p, idx_bytes(&[2], &[1, 2])).unwrap();
        let e = read_idx(&p, 3).unwrap_err();
        assert!(matches!(e, DataError::BadMagic { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("x-idx3-ubyte") && msg.contains("0x00000801"),
            "{msg}"
        );
        // Not an IDX file at all.
        std::fs::write(&p, b"PK\x03\x04 something else").unwrap();
        assert!(matches!(read_idx(&p, 3), Err(DataError::BadMagic { .. })));
        std::fs::write(&p, b"\0\0").unwrap();
        assert!(matches!(read_idx(&p, 3), Err(DataError::BadMagic { .. })));
    }

    #[test]
    fn count_disagreeing_with_size_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("short");
        std::fs::write(&p, idx_bytes(&[3, 2, 2], &[0; 11])).unwrap();
        let e = read_idx(&p, 3).unwrap_err();
        assert!(matches!(e, DataError::SizeMismatch { .. }), "{e}");
        assert!(e.to_string().contains("12 values, file holds 11"), "{e}");
        std::fs::write(&p, idx_bytes(&[3, 2, 2], &[0; 13])).unwrap();
        assert!(matches!(
            read_idx(&p, 3),
            Err(DataError::SizeMismatch { .. })
        ));
        // Header itself cut short.
        std::fs::write(&p, &idx_bytes(&[3, 2, 2], &[])[..9]).unwrap();
        assert!(matches!(
            read_idx(&p, 3),
            Err(DataError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.gz");
        let gz = gzip(&idx_bytes(&[4, 2, 2], &[9; 16]));
        std::fs::write(&p, &gz[..gz.len() - 10]).unwrap();
        let e = read_idx(&p, 3).unwrap_err();
        assert!(matches!(e, DataError::Gzip { .. }), "{e}");
        assert!(e.to_string().contains("t.gz"), "{e}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let e = read_idx(Path::new("/nonexistent/train-images-idx3-ubyte.gz"), 3).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }), "{e}");
        assert!(e.to_string().contains("train-images-idx3-ubyte.gz"), "{e}");
    }
}
