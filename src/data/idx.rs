//! Reader for the IDX files of the MNIST family (MNIST, Fashion-MNIST, KMNIST).
//!
//! Layout: two zero bytes, a type code (0x08 = unsigned byte, the only one these data sets
//! use), the number of dimensions, one big-endian `u32` per dimension, then the values in
//! row-major order. Files may be gzip-compressed, in one member or several (`cat a.gz b.gz`
//! is valid gzip); we look at the first two bytes (`1f 8b`) rather than trusting the name.
//!
//! The header is checked against what the file can hold before any value is read: a plain
//! file must be exactly header + values long, a gzip file cannot expand more than
//! [`MAX_DEFLATE_RATIO`] times. Validation reads only the header ([`read_header`]).

use super::{DataError, MAX_DEFLATE_RATIO, open_data_file, read_exactly};
use std::io::{BufRead, BufReader, Read};
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

/// Where the values of an opened IDX file come from.
struct Opened {
    dims: Vec<usize>,
    /// Number of values the header promises.
    values: u64,
    gzip: bool,
    body: Box<dyn Read>,
}

/// Reads an IDX file (gzip or not) that must have `ndim` dimensions.
pub fn read_idx(path: &Path, ndim: usize) -> Result<IdxArray, DataError> {
    let o = open(path, ndim)?;
    let dims = o.dims.clone();
    let data = read_exactly(
        o.body,
        o.values,
        |held| {
            format!(
                "header says {dims:?} = {} values, file holds {held}",
                o.values
            )
        },
        |e| gzip_or_io(path, o.gzip, e),
    )
    .map_err(|e| e.at(path))?;
    Ok(IdxArray { dims: o.dims, data })
}

/// The dimensions of an IDX file (gzip or not) with `ndim` dimensions, reading only its
/// header; the header is checked against the file's size as [`read_idx`] checks it.
pub fn read_header(path: &Path, ndim: usize) -> Result<Vec<usize>, DataError> {
    open(path, ndim).map(|o| o.dims)
}

fn gzip_or_io(path: &Path, gzip: bool, e: std::io::Error) -> DataError {
    if gzip {
        DataError::Gzip {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    } else {
        DataError::io(path, e)
    }
}

fn open(path: &Path, ndim: usize) -> Result<Opened, DataError> {
    let (file, len) = open_data_file(path).map_err(|e| DataError::io(path, e))?;
    let mut raw = BufReader::new(file);
    let gzip = raw
        .fill_buf()
        .map_err(|e| DataError::io(path, e))?
        .starts_with(&[0x1f, 0x8b]);
    let mut body: Box<dyn Read> = if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    let (dims, header) =
        read_dims(&mut body, ndim).map_err(|e| e.or_io(|e| gzip_or_io(path, gzip, e)).at(path))?;
    let values = count(&dims).map_err(|e| e.at(path))?;
    let total = values.checked_add(header);
    if gzip {
        let most = len.saturating_mul(MAX_DEFLATE_RATIO);
        if total.is_none_or(|t| t > most) {
            return Err(DataError::size(format!(
                "header says {dims:?} = {values} values, more than a gzip file of {len} bytes \
                 can hold ({most} bytes at most)"
            ))
            .at(path));
        }
    } else if total != Some(len) {
        return Err(DataError::size(format!(
            "header says {dims:?} = {values} values, file holds {}",
            len.saturating_sub(header)
        ))
        .at(path));
    }
    Ok(Opened {
        dims,
        values,
        gzip,
        body,
    })
}

/// A header problem, or the I/O error that stopped reading it.
enum HeaderError {
    Data(DataError),
    Io(std::io::Error),
}

impl HeaderError {
    fn or_io(self, f: impl FnOnce(std::io::Error) -> DataError) -> DataError {
        match self {
            HeaderError::Data(e) => e,
            HeaderError::Io(e) => f(e),
        }
    }
}

/// [`super::read_up_to`], with a read failure kept as I/O for the caller to name.
fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize, HeaderError> {
    super::read_up_to(r, buf).map_err(HeaderError::Io)
}

/// The magic number and dimensions; returns them with the header's length in bytes.
fn read_dims(r: &mut dyn Read, ndim: usize) -> Result<(Vec<usize>, u64), HeaderError> {
    let mut magic = [0u8; 4];
    let got = read_up_to(r, &mut magic)?;
    if got < 4 {
        return Err(HeaderError::Data(DataError::bad_magic(format!(
            "file has {got} bytes, too short for the 4-byte IDX magic number"
        ))));
    }
    if magic[0] != 0 || magic[1] != 0 || magic[2] != UBYTE || magic[3] as usize != ndim {
        return Err(HeaderError::Data(DataError::bad_magic(format!(
            "magic number {:#010x}, expected {:#010x} (unsigned bytes, {ndim} dimension{})",
            u32::from_be_bytes(magic),
            (u32::from(UBYTE) << 8) | ndim as u32,
            if ndim == 1 { "" } else { "s" }
        ))));
    }
    let header = 4 + 4 * ndim;
    let mut sizes = vec![0u8; 4 * ndim];
    let got = read_up_to(r, &mut sizes)?;
    if got < sizes.len() {
        return Err(HeaderError::Data(DataError::size(format!(
            "header needs {header} bytes, file has {}",
            4 + got
        ))));
    }
    let dims = sizes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    Ok((dims, header as u64))
}

/// The number of values `dims` hold, refusing a product that overflows.
fn count(dims: &[usize]) -> Result<u64, DataError> {
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| DataError::size(format!("dimensions {dims:?} overflow")))
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

    /// `bytes` written to a file and read back with [`read_idx`].
    fn read_bytes(bytes: &[u8], ndim: usize) -> Result<IdxArray, DataError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x-ubyte");
        std::fs::write(&p, bytes).unwrap();
        read_idx(&p, ndim)
    }

    #[test]
    fn parses_images_and_labels() {
        let img = read_bytes(
            &idx_bytes(&[2, 2, 3], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
            3,
        )
        .unwrap();
        assert_eq!(img.dims, vec![2, 2, 3]);
        assert_eq!(img.data[11], 11);
        let lab = read_bytes(&idx_bytes(&[3], &[7, 0, 9]), 1).unwrap();
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
    fn multi_member_gzip_is_read_whole() {
        // `cat a.gz b.gz` is one valid gzip stream of two members (`gzip -t` passes).
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx_bytes(&[3, 2, 2], &[7; 12]);
        let mut two = gzip(&bytes[..10]);
        two.extend(gzip(&bytes[10..]));
        let p = dir.path().join("cat.gz");
        std::fs::write(&p, &two).unwrap();
        assert_eq!(read_idx(&p, 3).unwrap(), read_bytes(&bytes, 3).unwrap());
        assert_eq!(read_header(&p, 3).unwrap(), vec![3, 2, 2]);
    }

    #[test]
    fn a_header_promising_more_than_the_file_holds_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big-idx3-ubyte");
        // 2^32-1 images of 2^32-1 x 2^32-1 pixels promised, four bytes given.
        let lie = idx_bytes(&[u32::MAX, u32::MAX, u32::MAX], &[0; 4]);
        std::fs::write(&p, &lie).unwrap();
        for e in [
            read_header(&p, 3).unwrap_err(),
            read_idx(&p, 3).unwrap_err(),
        ] {
            assert!(matches!(e, DataError::SizeMismatch { .. }), "{e}");
        }
        // Compressed, the promise is checked against what DEFLATE can expand to.
        let gz = dir.path().join("big.gz");
        std::fs::write(&gz, gzip(&idx_bytes(&[1_000_000, 1000, 1000], &[0; 4]))).unwrap();
        let e = read_header(&gz, 3).unwrap_err();
        assert!(matches!(e, DataError::SizeMismatch { .. }), "{e}");
        assert!(e.to_string().contains("gzip"), "{e}");
        assert!(read_idx(&gz, 3).is_err());
        // A gzip that holds more than its header says stops at the promise plus one byte.
        std::fs::write(&gz, gzip(&idx_bytes(&[2, 2, 2], &[0; 4096]))).unwrap();
        let e = read_idx(&gz, 3).unwrap_err();
        assert!(e.to_string().contains("holds more"), "{e}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let e = read_idx(Path::new("/nonexistent/train-images-idx3-ubyte.gz"), 3).unwrap_err();
        assert!(matches!(e, DataError::Missing { .. }), "{e}");
        assert!(e.to_string().contains("train-images-idx3-ubyte.gz"), "{e}");
    }
}
