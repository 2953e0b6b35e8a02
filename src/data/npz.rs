//! Reader for NumPy `.npz` archives (a zip of `.npy` files), as KMNIST is distributed
//! (`kmnist-train-imgs.npz`, `kmnist-train-labels.npz`, ...).
//!
//! We parse the `.npy` header ourselves: a magic string, a version, a header length and a
//! Python dict literal with `descr`, `fortran_order` and `shape`. Only what image data sets
//! use is accepted: C-order arrays of 8-bit unsigned integers, and for labels any integer
//! type up to 64 bits (NumPy writes `int64` labels on most platforms).

use super::DataError;
use std::io::Read;
use std::path::Path;

/// Element types we decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpyDtype {
    /// `|u1`, `<u1`.
    U8,
    /// `|i1`.
    I8,
    /// Little-endian integers of 2, 4 or 8 bytes, signed or not.
    Int { bytes: usize, signed: bool },
}

impl NpyDtype {
    fn parse(descr: &str) -> Option<NpyDtype> {
        let (order, rest) = descr.split_at(descr.len().min(1));
        let (kind, size) = rest.split_at(rest.len().min(1));
        let bytes: usize = size.parse().ok()?;
        match (order, kind, bytes) {
            ("|" | "<" | "=", "u", 1) => Some(NpyDtype::U8),
            ("|" | "<" | "=", "i", 1) => Some(NpyDtype::I8),
            ("<", "u" | "i", 2 | 4 | 8) => Some(NpyDtype::Int {
                bytes,
                signed: kind == "i",
            }),
            _ => None,
        }
    }

    fn size(self) -> usize {
        match self {
            NpyDtype::U8 | NpyDtype::I8 => 1,
            NpyDtype::Int { bytes, .. } => bytes,
        }
    }
}

/// A decoded `.npy` array.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub dtype: NpyDtype,
    pub shape: Vec<usize>,
    /// Raw little-endian element bytes, C order.
    pub raw: Vec<u8>,
}

impl NpyArray {
    /// The values as bytes; only for `U8` arrays (image pixels).
    pub fn as_u8(&self) -> Option<&[u8]> {
        (self.dtype == NpyDtype::U8).then_some(self.raw.as_slice())
    }

    /// Every value widened to `i64` (labels of any integer type).
    pub fn to_i64(&self) -> Vec<i64> {
        match self.dtype {
            NpyDtype::U8 => self.raw.iter().map(|&b| i64::from(b)).collect(),
            NpyDtype::I8 => self.raw.iter().map(|&b| i64::from(b as i8)).collect(),
            NpyDtype::Int { bytes, signed } => self
                .raw
                .chunks_exact(bytes)
                .map(|c| {
                    let mut buf = [0u8; 8];
                    buf[..bytes].copy_from_slice(c);
                    // Sign-extend signed values narrower than 8 bytes.
                    if signed && bytes < 8 && c[bytes - 1] & 0x80 != 0 {
                        buf[bytes..].fill(0xff);
                    }
                    // An unsigned 64-bit value above i64::MAX wraps negative; the label range
                    // check rejects it either way.
                    i64::from_le_bytes(buf)
                })
                .collect(),
        }
    }
}

/// Reads the array stored in an `.npz` archive: its only `.npy` member, or `arr_0.npy`.
pub fn read_npz(path: &Path) -> Result<NpyArray, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
        DataError::bad_magic(format!("not a readable npz (zip) archive: {e}")).at(path)
    })?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok())
        .map(|n| n.to_string())
        .filter(|n| n.ends_with(".npy"))
        .collect();
    let name = match names.as_slice() {
        [one] => one.clone(),
        _ if names.iter().any(|n| n == "arr_0.npy") => "arr_0.npy".to_string(),
        _ => {
            return Err(DataError::bad_magic(format!(
                "npz archive should hold one array (or arr_0.npy), found {names:?}"
            ))
            .at(path));
        }
    };
    let mut bytes = Vec::new();
    zip.by_name(&name)
        .and_then(|mut f| f.read_to_end(&mut bytes).map_err(Into::into))
        .map_err(|e| DataError::Gzip {
            path: path.to_path_buf(),
            message: format!("cannot decompress {name}: {e}"),
        })?;
    parse_npy(&bytes).map_err(|e| e.at(path))
}

/// Parses `.npy` bytes (format versions 1, 2 and 3).
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray, DataError> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if !bytes.starts_with(MAGIC) || bytes.len() < 10 {
        return Err(DataError::bad_magic(
            "member does not start with the .npy magic string \\x93NUMPY".into(),
        ));
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => {
            return Err(DataError::bad_magic(format!(
                "unsupported .npy format version {major}"
            )));
        }
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| DataError::size("truncated or non-text .npy header".into()))?;
    let descr = dict_value(header, "descr")
        .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
        .ok_or_else(|| DataError::bad_magic(format!(".npy header lacks 'descr': {header}")))?;
    let dtype = NpyDtype::parse(&descr).ok_or_else(|| {
        DataError::bad_magic(format!(
            "unsupported .npy dtype {descr:?} (want uint8 pixels or integer labels)"
        ))
    })?;
    match dict_value(header, "fortran_order") {
        Some("False") => {}
        Some("True") => {
            return Err(DataError::bad_magic(
                "Fortran-ordered .npy arrays are not supported; save with C order".into(),
            ));
        }
        _ => {
            return Err(DataError::bad_magic(format!(
                ".npy header lacks 'fortran_order': {header}"
            )));
        }
    }
    let shape = dict_value(header, "shape")
        .and_then(parse_shape)
        .ok_or_else(|| DataError::bad_magic(format!("bad 'shape' in .npy header: {header}")))?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| DataError::size(format!("shape {shape:?} overflows")))?;
    let body = &bytes[start + header_len..];
    if body.len() != count {
        return Err(DataError::size(format!(
            "header says shape {shape:?} of {descr} = {count} bytes, file holds {}",
            body.len()
        )));
    }
    Ok(NpyArray {
        dtype,
        shape,
        raw: body.to_vec(),
    })
}

/// The text of `'key': value` in a Python dict literal, up to the next top-level comma.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pos = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let after = &header[pos + key.len() + 2..];
    let after = after.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0i32;
    for (i, c) in after.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(after[..i].trim()),
            _ => {}
        }
    }
    None
}

/// `(60000, 28, 28)`, `(10,)`, `()` -> dimension sizes.
fn parse_shape(text: &str) -> Option<Vec<usize>> {
    let inner = text.strip_prefix('(')?.strip_suffix(')')?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse().ok())
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A hand-made `.npy` (version 1) with the given descr, shape text and body.
    pub(crate) fn npy_bytes(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        // NumPy pads the header with spaces and a newline to a multiple of 64 bytes.
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(body);
        b
    }

    /// Writes an `.npz` with one member, compressed like `np.savez_compressed`.
    pub(crate) fn write_npz(path: &Path, member: &str, npy: &[u8]) {
        let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        z.start_file(member, opts).unwrap();
        z.write_all(npy).unwrap();
        z.finish().unwrap();
    }

    #[test]
    fn parses_uint8_images() {
        let a = parse_npy(&npy_bytes("|u1", "(2, 1, 2)", &[1, 2, 3, 4])).unwrap();
        assert_eq!(a.shape, vec![2, 1, 2]);
        assert_eq!(a.as_u8(), Some(&[1u8, 2, 3, 4][..]));
    }

    #[test]
    fn parses_int64_and_narrow_labels() {
        let mut body = Vec::new();
        for v in [3i64, 0, 9, -1] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let a = parse_npy(&npy_bytes("<i8", "(4,)", &body)).unwrap();
        assert_eq!(a.to_i64(), vec![3, 0, 9, -1]);
        assert_eq!(a.as_u8(), None);
        let a = parse_npy(&npy_bytes("<i2", "(2,)", &[5, 0, 0xff, 0xff])).unwrap();
        assert_eq!(a.to_i64(), vec![5, -1]);
        let a = parse_npy(&npy_bytes("<u1", "(1,)", &[200])).unwrap();
        assert_eq!(a.to_i64(), vec![200]);
    }

    #[test]
    fn rejects_corrupt_headers() {
        let bad_magic = parse_npy(b"\x93NUMPX\x01\x00\x00\x00").unwrap_err();
        assert!(matches!(bad_magic, DataError::BadMagic { .. }));
        let float = parse_npy(&npy_bytes("<f4", "(1,)", &[0; 4])).unwrap_err();
        assert!(float.to_string().contains("<f4"), "{float}");
        let big_endian = parse_npy(&npy_bytes(">i8", "(1,)", &[0; 8])).unwrap_err();
        assert!(matches!(big_endian, DataError::BadMagic { .. }));
        let mut fortran = npy_bytes("|u1", "(1,)", &[0]);
        let at = fortran.windows(5).position(|w| w == b"False").unwrap();
        fortran[at..at + 5].copy_from_slice(b"True ");
        let e = parse_npy(&fortran).unwrap_err();
        assert!(e.to_string().contains("Fortran"), "{e}");
        let short = parse_npy(&npy_bytes("|u1", "(2, 2)", &[0; 3])).unwrap_err();
        assert!(matches!(short, DataError::SizeMismatch { .. }), "{short}");
        assert!(
            short.to_string().contains("4 bytes, file holds 3"),
            "{short}"
        );
    }

    #[test]
    fn reads_npz_archives_and_names_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kmnist-train-labels.npz");
        write_npz(&p, "arr_0.npy", &npy_bytes("|u1", "(3,)", &[1, 2, 3]));
        assert_eq!(read_npz(&p).unwrap().to_i64(), vec![1, 2, 3]);

        let junk = dir.path().join("kmnist-test-imgs.npz");
        std::fs::write(&junk, b"definitely not a zip file").unwrap();
        let e = read_npz(&junk).unwrap_err();
        assert!(matches!(e, DataError::BadMagic { .. }), "{e}");
        assert!(e.to_string().contains("kmnist-test-imgs.npz"), "{e}");

        let truncated = dir.path().join("truncated.npz");
        let full = std::fs::read(&p).unwrap();
        std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
        assert!(read_npz(&truncated).is_err());

        let missing = read_npz(&dir.path().join("nope.npz")).unwrap_err();
        assert!(matches!(missing, DataError::Missing { .. }), "{missing}");
    }
}
