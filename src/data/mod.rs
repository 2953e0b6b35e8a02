//! Data sets: MNIST-family images from IDX or NPZ files, splits and seeded shuffling;
//! parallel text (TSV pairs) and character vocabularies for translation.
//!
//! Readers return host-side arrays; the training loop moves them to its device once.
//! Every error names the file it concerns so a user can fix it without a debugger.

pub mod idx;
pub mod images;
pub mod npz;
pub mod pairs;
pub mod vocab;

pub use images::{ImageSet, ImageSplits, load_image_splits, permutation};

use std::io::Read;
use std::path::{Path, PathBuf};

/// Most bytes DEFLATE can expand one compressed byte into (its maximum ratio is 1032:1):
/// a header that promises more than this times the compressed size is lying.
pub const MAX_DEFLATE_RATIO: u64 = 1032;

/// Every file a run with this data section reads, by its role in the data set (the key that
/// names it): the four image and label files of IDX/NPZ data (dev is cut out of train), the
/// train, dev and test files of TSV pairs. Roles, not paths, are what a fingerprint records, so
/// the same files in another directory fingerprint the same.
pub fn data_files(spec: &crate::spec::DataSpec) -> Vec<(&'static str, PathBuf)> {
    use crate::spec::DataFormat;
    let dir = Path::new(&spec.dir);
    let roles: Vec<(&'static str, &String)> = match spec.format {
        DataFormat::Idx | DataFormat::Npz => vec![
            ("train", &spec.train),
            ("train_labels", &spec.train_labels),
            ("test", &spec.test),
            ("test_labels", &spec.test_labels),
        ],
        DataFormat::TsvPairs => vec![
            ("train", &spec.train),
            ("dev", &spec.dev),
            ("test", &spec.test),
        ],
    };
    roles
        .into_iter()
        .map(|(role, file)| (role, dir.join(file)))
        .collect()
}

/// Opens a data file for reading, refusing anything but a regular file
/// ([`crate::regular_file`]). Returns the file and its size.
pub fn open_data_file(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    crate::regular_file::open(path).map_err(|e| match e {
        crate::regular_file::OpenError::Io(e) => e,
        not_regular => std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{not_regular}; data files must be regular files"),
        ),
    })
}

/// Reads as many bytes as `buf` holds or up to the end; returns how many it got (a header
/// read that must not ask for more than the header, unlike `read_exact`, says how short it is).
pub(crate) fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads exactly `expected` bytes from `reader`, never holding more than `expected + 1`:
/// a stream that ends early or goes on is a size error (path filled in by
/// [`DataError::at`]) whatever its header claimed, and the buffer grows with what actually
/// arrives, so a lying header allocates nothing up front. `on_io` names a read failure.
pub(crate) fn read_exactly(
    reader: impl Read,
    expected: u64,
    what: impl Fn(&str) -> String,
    on_io: impl Fn(std::io::Error) -> DataError,
) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::with_capacity(expected.min(1 << 20) as usize);
    reader
        .take(expected.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(on_io)?;
    let got = out.len() as u64;
    if got != expected {
        let held = if got > expected {
            "more".to_string()
        } else {
            got.to_string()
        };
        return Err(DataError::size(what(&held)));
    }
    Ok(out)
}

/// A missing or corrupt data file, or data that contradicts itself.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file does not exist.
    #[error("{}: data file not found", path.display())]
    Missing { path: PathBuf },
    /// Any other I/O failure reading the file.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not of the expected format (IDX magic number, npy magic, dtype ...).
    #[error("{}: bad magic number or format: {message}", path.display())]
    BadMagic { path: PathBuf, message: String },
    /// The header's element count disagrees with the bytes present.
    #[error("{}: header count disagrees with file size: {message}", path.display())]
    SizeMismatch { path: PathBuf, message: String },
    /// Compressed data ends early or is corrupt.
    #[error("{}: truncated or corrupt compressed data: {message}", path.display())]
    Gzip { path: PathBuf, message: String },
    /// A label is negative or not below the number of classes.
    #[error("{}: label {label} at index {index} is out of range 0..{classes}", path.display())]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: i64,
        classes: usize,
    },
    /// Image and label files hold different numbers of examples.
    #[error(
        "{} holds {images} images but {} holds {labels} labels",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        images_path: PathBuf,
        labels_path: PathBuf,
        images: usize,
        labels: usize,
    },
    /// The array has the wrong number of dimensions or image size.
    #[error("{}: {message}", path.display())]
    Shape { path: PathBuf, message: String },
    /// The split asked for cannot be made (e.g. a dev fraction that leaves no example).
    #[error("{message}")]
    Split { message: String },
}

impl DataError {
    /// An I/O error on `path`; "not found" becomes [`DataError::Missing`].
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    /// A format error whose path is filled in later by [`DataError::at`].
    pub(crate) fn bad_magic(message: String) -> Self {
        DataError::BadMagic {
            path: PathBuf::new(),
            message,
        }
    }

    /// A size error whose path is filled in later by [`DataError::at`].
    pub(crate) fn size(message: String) -> Self {
        DataError::SizeMismatch {
            path: PathBuf::new(),
            message,
        }
    }

    /// Names the file of an error made while parsing bytes.
    pub fn at(mut self, file: &Path) -> Self {
        match &mut self {
            DataError::BadMagic { path, .. }
            | DataError::SizeMismatch { path, .. }
            | DataError::Gzip { path, .. }
            | DataError::Shape { path, .. }
            | DataError::LabelOutOfRange { path, .. }
                if path.as_os_str().is_empty() =>
            {
                *path = file.to_path_buf();
            }
            _ => {}
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for (p, what) in [
            (fifo.as_path(), "(FIFO)"),
            (dir.path(), "a directory"),
            (Path::new("/dev/zero"), "a character device"),
        ] {
            // Returns at once instead of blocking on the FIFO or reading forever.
            let e = open_data_file(p).unwrap_err();
            assert!(e.to_string().contains(what), "{}: {e}", p.display());
            let e = DataError::io(p, e);
            assert!(matches!(e, DataError::Io { .. }), "{e}");
        }
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(open_data_file(&f).unwrap().1, 3);
    }
}
