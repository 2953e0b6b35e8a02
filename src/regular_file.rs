//! The one rule for files the user names (spec and `extends` files, data files): only a
//! regular file is opened. A FIFO would block until a writer comes, `/dev/zero` never ends,
//! a directory cannot be read as text or data.

use std::fs::{File, FileType, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// A path that names something other than a regular file, or an I/O failure on it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A FIFO, device, socket, directory or symbolic link; `kind` says which.
    #[error("it is {kind}, not a regular file")]
    NotRegular { kind: &'static str },
    /// Looking at or opening the path failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What a file type is when it is not a regular file (`None` for a regular file).
pub fn irregular_kind(t: FileType) -> Option<&'static str> {
    Some(if t.is_file() {
        return None;
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a named pipe (FIFO)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    })
}

fn regular(t: FileType) -> Result<(), OpenError> {
    match irregular_kind(t) {
        None => Ok(()),
        Some(kind) => Err(OpenError::NotRegular { kind }),
    }
}

/// Opens `path` for reading if it is a regular file; returns the file and its length.
pub fn open(path: &Path) -> Result<(File, u64), OpenError> {
    // Checked before opening, since opening a FIFO blocks until a writer comes; the open is
    // non-blocking too, for a FIFO swapped in after the check (it has no effect on a regular
    // file), and what was opened is checked again.
    regular(std::fs::metadata(path)?.file_type())?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    regular(meta.file_type())?;
    Ok((file, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_open_and_the_others_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(open(&f).unwrap().1, 3);
        let kind = |p: &Path| match open(p) {
            Err(OpenError::NotRegular { kind }) => kind,
            other => panic!("{p:?}: {other:?}"),
        };
        assert_eq!(kind(dir.path()), "a directory");
        assert_eq!(kind(Path::new("/dev/zero")), "a character device");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(kind(&fifo), "a named pipe (FIFO)");
        assert!(matches!(
            open(&dir.path().join("nope")),
            Err(OpenError::Io(_))
        ));
    }
}
