//! Reader for NumPy `.npz` archives (a zip of `.npy` files), as KMNIST is distributed
//! (`kmnist-train-imgs.npz`, `kmnist-train-labels.npz`, ...).
//!
//! We parse the `.npy` header ourselves: a magic string, a version, a header length and a
//! Python dict literal with `descr`, `fortran_order` and `shape`. Only what image data sets
//! use is accepted: C-order arrays of integers, in either byte order (`|u1`, `<i8`, `>i4`,
//! ...): 8-bit unsigned for pixels, any width up to 64 bits for labels (NumPy writes `int64`
//! labels on most platforms).
//!
//! The header is checked against the member's size before its values are read, and values
//! are read up to what the header promises and no further: a header or a zip entry that
//! lies allocates nothing. Validation reads only the header ([`read_header`]).

use super::{DataError, MAX_DEFLATE_RATIO, open_data_file, read_exactly};
use std::io::Read;
use std::path::Path;

/// Longest `.npy` header we read; NumPy itself refuses headers over 10,000 bytes by default.
const MAX_HEADER: usize = 1 << 20;

/// Element types we decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpyDtype {
    /// `|u1`, `<u1`, `>u1`.
    U8,
    /// `|i1`, `<i1`, `>i1`.
    I8,
    /// Integers of 2, 4 or 8 bytes, signed or not, little- (`<`) or big-endian (`>`).
    Int {
        bytes: usize,
        signed: bool,
        big_endian: bool,
    },
}

impl NpyDtype {
    fn parse(descr: &str) -> Option<NpyDtype> {
        // Every dtype is ASCII; `split_at` below would panic inside a wider character (a
        // corrupt header the fuzz tests found).
        if !descr.is_ascii() {
            return None;
        }
        let (order, rest) = descr.split_at(descr.len().min(1));
        let (kind, size) = rest.split_at(rest.len().min(1));
        let bytes: usize = size.parse().ok()?;
        match (order, kind, bytes) {
            ("|" | "<" | ">" | "=", "u", 1) => Some(NpyDtype::U8),
            ("|" | "<" | ">" | "=", "i", 1) => Some(NpyDtype::I8),
            ("<" | ">", "u" | "i", 2 | 4 | 8) => Some(NpyDtype::Int {
                bytes,
                signed: kind == "i",
                big_endian: order == ">",
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

/// What an `.npy` header says.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyHeader {
    pub dtype: NpyDtype,
    pub shape: Vec<usize>,
}

/// A decoded `.npy` array.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub dtype: NpyDtype,
    pub shape: Vec<usize>,
    /// Raw element bytes in the file's byte order, C order.
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
            NpyDtype::Int {
                bytes,
                signed,
                big_endian,
            } => self
                .raw
                .chunks_exact(bytes)
                .map(|c| {
                    let mut buf = [0u8; 8];
                    buf[..bytes].copy_from_slice(c);
                    if big_endian {
                        buf[..bytes].reverse();
                    }
                    // Sign-extend signed values narrower than 8 bytes.
                    if signed && bytes < 8 && buf[bytes - 1] & 0x80 != 0 {
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
    with_member(path, |name, member| {
        let (header, start) = read_npy_header(&mut *member)?;
        let body = body_bytes(&header)?;
        check_member_size(&header, start, body, member.size())?;
        let raw = read_exactly(
            member,
            body,
            |held| {
                format!(
                    "header says shape {:?} = {body} bytes, {name} holds {held}",
                    header.shape
                )
            },
            |e| DataError::Gzip {
                path: path.to_path_buf(),
                message: format!("cannot decompress {name}: {e}"),
            },
        )?;
        Ok(NpyArray {
            dtype: header.dtype,
            shape: header.shape,
            raw,
        })
    })
}

/// The dtype and shape of the array in an `.npz` archive, reading only its header, which is
/// checked against the member's size as [`read_npz`] checks it.
pub fn read_header(path: &Path) -> Result<NpyHeader, DataError> {
    with_member(path, |_, member| {
        let (header, start) = read_npy_header(&mut *member)?;
        check_member_size(&header, start, body_bytes(&header)?, member.size())?;
        Ok(header)
    })
}

/// Opens the archive and hands its array member to `f`; errors get the path.
fn with_member<T>(
    path: &Path,
    f: impl FnOnce(
        &str,
        &mut zip::read::ZipFile<'_, std::io::BufReader<std::fs::File>>,
    ) -> Result<T, DataError>,
) -> Result<T, DataError> {
    let (file, _) = open_data_file(path).map_err(|e| DataError::io(path, e))?;
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
    let mut member = zip.by_name(&name).map_err(|e| DataError::Gzip {
        path: path.to_path_buf(),
        message: format!("cannot open {name}: {e}"),
    })?;
    // A zip entry says how large it is; DEFLATE cannot expand more than its maximum ratio,
    // and a stored entry not at all.
    let most = member
        .compressed_size()
        .saturating_mul(MAX_DEFLATE_RATIO)
        .saturating_add(1024);
    if member.size() > most {
        return Err(DataError::size(format!(
            "{name} claims {} bytes, more than its {} compressed bytes can hold",
            member.size(),
            member.compressed_size()
        ))
        .at(path));
    }
    f(&name, &mut member).map_err(|e| e.at(path))
}

/// Bytes the values of `header` take, refusing a product that overflows.
fn body_bytes(header: &NpyHeader) -> Result<u64, DataError> {
    header
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
        .and_then(|n| n.checked_mul(header.dtype.size() as u64))
        .ok_or_else(|| DataError::size(format!("shape {:?} overflows", header.shape)))
}

/// The zip entry's size must be the header plus exactly the values it promises.
fn check_member_size(
    header: &NpyHeader,
    start: u64,
    body: u64,
    member_size: u64,
) -> Result<(), DataError> {
    let held = member_size.saturating_sub(start);
    if held != body {
        return Err(DataError::size(format!(
            "header says shape {:?} = {body} bytes, file holds {held}",
            header.shape
        )));
    }
    Ok(())
}

/// [`super::read_up_to`], a read failure being a decompression error of the `.npy` header.
fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize, DataError> {
    super::read_up_to(r, buf).map_err(|e| DataError::Gzip {
        path: Default::default(),
        message: format!("cannot decompress the .npy header: {e}"),
    })
}

/// Reads and parses an `.npy` header (format versions 1, 2 and 3); returns it with the
/// offset of the first value.
fn read_npy_header(r: &mut dyn Read) -> Result<(NpyHeader, u64), DataError> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    let mut pre = [0u8; 12];
    let got = read_up_to(r, &mut pre[..10])?;
    if got < 10 || !pre.starts_with(MAGIC) {
        return Err(DataError::bad_magic(
            "member does not start with the .npy magic string \\x93NUMPY".into(),
        ));
    }
    let major = pre[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([pre[8], pre[9]]) as usize, 10),
        2 | 3 => {
            if read_up_to(r, &mut pre[10..12])? < 2 {
                return Err(DataError::size("truncated .npy header".into()));
            }
            (
                u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]) as usize,
                12,
            )
        }
        _ => {
            return Err(DataError::bad_magic(format!(
                "unsupported .npy format version {major}"
            )));
        }
    };
    if header_len > MAX_HEADER {
        return Err(DataError::bad_magic(format!(
            ".npy header of {header_len} bytes; at most {MAX_HEADER} are read"
        )));
    }
    let mut text = vec![0u8; header_len];
    if read_up_to(r, &mut text)? < header_len {
        return Err(DataError::size("truncated or non-text .npy header".into()));
    }
    let header = std::str::from_utf8(&text)
        .map_err(|_| DataError::size("truncated or non-text .npy header".into()))?;
    let descr = dict_value(header, "descr")
        .map(|v| v.trim_matches(|c| c == '\'' || c == '"').to_string())
        .ok_or_else(|| DataError::bad_magic(format!(".npy header lacks 'descr': {header}")))?;
    let dtype = NpyDtype::parse(&descr).ok_or_else(|| {
        DataError::bad_magic(format!(
            "unsupported .npy dtype {descr:?} (want uint8 pixels or integer labels: \
             |u1 |i1 <u2 >u2 <i2 >i2 <u4 >u4 <i4 >i4 <u8 >u8 <i8 >i8)"
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
    Ok((NpyHeader { dtype, shape }, (start + header_len) as u64))
}

/// Parses `.npy` bytes (format versions 1, 2 and 3).
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray, DataError> {
    let mut r = bytes;
    let (header, start) = read_npy_header(&mut r)?;
    let count = body_bytes(&header)?;
    let body = &bytes[start as usize..];
    if body.len() as u64 != count {
        let descr = format!("{:?}", header.dtype);
        return Err(DataError::size(format!(
            "header says shape {:?} of {descr} = {count} bytes, file holds {}",
            header.shape,
            body.len()
        )));
    }
    Ok(NpyArray {
        dtype: header.dtype,
        shape: header.shape,
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

    /// `value` as `bytes` bytes in the byte order `order` names.
    fn encode(value: i64, bytes: usize, order: char) -> Vec<u8> {
        let le = value.to_le_bytes()[..bytes].to_vec();
        if order == '>' {
            le.into_iter().rev().collect()
        } else {
            le
        }
    }

    #[test]
    fn every_numpy_integer_dtype_in_either_byte_order() {
        let descrs = [
            "|u1", "|i1", "<u2", ">u2", "<i2", ">i2", "<u4", ">u4", "<i4", ">i4", "<u8", ">u8",
            "<i8", ">i8",
        ];
        let dir = tempfile::tempdir().unwrap();
        for descr in descrs {
            let order = descr.chars().next().unwrap();
            let bytes: usize = descr[2..].parse().unwrap();
            let signed = descr.as_bytes()[1] == b'i';
            let values: Vec<i64> = if signed {
                vec![9, 0, -1, 3]
            } else {
                vec![9, 0, 200, 3]
            };
            let body: Vec<u8> = values
                .iter()
                .flat_map(|&v| encode(v, bytes, order))
                .collect();
            let a = parse_npy(&npy_bytes(descr, "(4,)", &body)).unwrap();
            assert_eq!(a.to_i64(), values, "{descr}");
            // And through an archive, as a label file is read.
            let p = dir.path().join("labels.npz");
            write_npz(&p, "arr_0.npy", &npy_bytes(descr, "(4,)", &body));
            assert_eq!(read_npz(&p).unwrap().to_i64(), values, "{descr}");
            assert_eq!(read_header(&p).unwrap().shape, vec![4], "{descr}");
        }
        // 256 as a big-endian u2 is 01 00, not 00 01.
        let a = parse_npy(&npy_bytes(">u2", "(1,)", &[1, 0])).unwrap();
        assert_eq!(a.to_i64(), vec![256]);
        // Pixels written as `>u1` are still bytes.
        let a = parse_npy(&npy_bytes(">u1", "(2,)", &[1, 2])).unwrap();
        assert_eq!(a.as_u8(), Some(&[1u8, 2][..]));
    }

    #[test]
    fn a_header_promising_more_than_the_member_holds_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.npz");
        // 10^12 images of 28x28 promised, three bytes given.
        write_npz(
            &p,
            "arr_0.npy",
            &npy_bytes("|u1", "(1000000000000, 28, 28)", &[1, 2, 3]),
        );
        for e in [read_header(&p).unwrap_err(), read_npz(&p).unwrap_err()] {
            assert!(matches!(e, DataError::SizeMismatch { .. }), "{e}");
            assert!(e.to_string().contains("huge.npz"), "{e}");
        }
        // A shape whose byte count overflows 64 bits.
        write_npz(
            &p,
            "arr_0.npy",
            &npy_bytes("<i8", "(4294967296, 4294967296)", &[]),
        );
        let e = read_npz(&p).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
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
