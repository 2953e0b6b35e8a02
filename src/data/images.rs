//! MNIST-family image sets: loading train/test from IDX or NPZ, the dev split, limits.
//!
//! Pixels are kept on the host as one `f32` buffer scaled to [0, 1]; the training loop turns
//! each split into a single device tensor once and slices batches from it.

use super::DataError;
use super::idx::{self, read_idx};
use super::npz::{self, NpyDtype, read_npz};
use crate::spec::{DataFormat, DataSpec};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// Number of classes of the MNIST family (digits, garments, the ten KMNIST characters).
pub const MNIST_CLASSES: usize = 10;

/// Grey images with integer labels, row-major `[n, rows, cols]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// `n * rows * cols` pixels in [0, 1].
    pub pixels: Vec<f32>,
    /// One label per image, each below `classes`.
    pub labels: Vec<u32>,
    pub rows: usize,
    pub cols: usize,
    pub classes: usize,
}

/// The three splits a run trains and evaluates on.
#[derive(Debug, Clone)]
pub struct ImageSplits {
    pub train: ImageSet,
    pub dev: ImageSet,
    pub test: ImageSet,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of one image.
    pub fn pixels_of(&self, index: usize) -> &[f32] {
        let size = self.rows * self.cols;
        &self.pixels[index * size..(index + 1) * size]
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[u32]) -> ImageSet {
        let size = self.rows * self.cols;
        let mut pixels = Vec::with_capacity(indices.len() * size);
        for &i in indices {
            pixels.extend_from_slice(self.pixels_of(i as usize));
        }
        ImageSet {
            pixels,
            labels: indices.iter().map(|&i| self.labels[i as usize]).collect(),
            rows: self.rows,
            cols: self.cols,
            classes: self.classes,
        }
    }

    /// The first `limit` images (all when `limit` is 0 or larger than the set).
    pub fn truncate(mut self, limit: usize) -> ImageSet {
        if limit > 0 && limit < self.len() {
            self.labels.truncate(limit);
            self.pixels.truncate(limit * self.rows * self.cols);
        }
        self
    }

    /// Builds a set from raw bytes, checking labels against `classes`.
    fn from_bytes(
        images_path: &Path,
        labels_path: &Path,
        dims: &[usize],
        pixels: &[u8],
        labels: Vec<i64>,
        classes: usize,
    ) -> Result<ImageSet, DataError> {
        let [n, rows, cols] = dims else {
            return Err(images_not_3d(images_path, dims));
        };
        if *n != labels.len() {
            return Err(DataError::CountMismatch {
                images_path: images_path.to_path_buf(),
                labels_path: labels_path.to_path_buf(),
                images: *n,
                labels: labels.len(),
            });
        }
        let labels = labels
            .into_iter()
            .enumerate()
            .map(|(index, label)| {
                u32::try_from(label)
                    .ok()
                    .filter(|&l| (l as usize) < classes)
                    .ok_or_else(|| DataError::LabelOutOfRange {
                        path: labels_path.to_path_buf(),
                        index,
                        label,
                        classes,
                    })
            })
            .collect::<Result<Vec<u32>, _>>()?;
        Ok(ImageSet {
            pixels: pixels.iter().map(|&p| f32::from(p) / 255.0).collect(),
            labels,
            rows: *rows,
            cols: *cols,
            classes,
        })
    }
}

/// Reads one image file and its label file in `format`, keeping the first `limit` (0 = all).
pub fn read_image_set(
    format: DataFormat,
    images: &Path,
    labels: &Path,
    classes: usize,
    limit: usize,
) -> Result<ImageSet, DataError> {
    let set = match format {
        DataFormat::Idx => {
            let img = read_idx(images, 3)?;
            let lab = read_idx(labels, 1)?;
            let lab = lab.data.iter().map(|&b| i64::from(b)).collect();
            ImageSet::from_bytes(images, labels, &img.dims, &img.data, lab, classes)?
        }
        DataFormat::Npz => {
            let img = read_npz(images)?;
            let pixels = img.as_u8().ok_or_else(|| not_u8(images, img.dtype))?;
            let lab = read_npz(labels)?;
            if lab.shape.len() != 1 {
                return Err(labels_not_1d(labels, &lab.shape));
            }
            ImageSet::from_bytes(images, labels, &img.shape, pixels, lab.to_i64(), classes)?
        }
        DataFormat::TsvPairs => return Err(not_images()),
    };
    Ok(set.truncate(limit))
}

/// Unlabelled images to classify: an IDX (`.gz` or not) or `.npz` array `[n, rows, cols]`
/// of uint8, or one 8-bit greyscale PNG; pixels scaled to [0, 1] as training scales them.
/// The format follows the file name's extension (`.npz`, `.png`, anything else is IDX).
pub fn read_unlabelled_images(path: &Path) -> Result<ImageSet, DataError> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let (dims, bytes) = if name.ends_with(".npz") {
        let img = read_npz(path)?;
        let pixels = img.as_u8().ok_or_else(|| not_u8(path, img.dtype))?.to_vec();
        (img.shape, pixels)
    } else if name.ends_with(".png") {
        let (rows, cols, pixels) = read_grey_png(path)?;
        (vec![1, rows, cols], pixels)
    } else {
        let img = read_idx(path, 3)?;
        (img.dims, img.data)
    };
    let [n, rows, cols] = dims[..] else {
        return Err(images_not_3d(path, &dims));
    };
    Ok(ImageSet {
        pixels: bytes.iter().map(|&p| f32::from(p) / 255.0).collect(),
        labels: vec![0; n],
        rows,
        cols,
        classes: MNIST_CLASSES,
    })
}

/// An 8-bit greyscale PNG's size and pixels; other colour types are refused rather than
/// converted, since the models were trained on grey values only.
fn read_grey_png(path: &Path) -> Result<(usize, usize, Vec<u8>), DataError> {
    let (file, _) = super::open_data_file(path).map_err(|e| DataError::io(path, e))?;
    let bad = |message: String| DataError::BadMagic {
        path: path.to_path_buf(),
        message,
    };
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .map_err(|e| bad(format!("not a PNG image: {e}")))?;
    let info = reader.info();
    if info.color_type != png::ColorType::Grayscale || info.bit_depth != png::BitDepth::Eight {
        return Err(bad(format!(
            "PNG must be 8-bit greyscale, found {:?} at {:?} bits",
            info.color_type, info.bit_depth
        )));
    }
    let (rows, cols) = (info.height as usize, info.width as usize);
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(rows * cols)];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(format!("corrupt PNG data: {e}")))?;
    buf.truncate(frame.buffer_size());
    Ok((rows, cols, buf))
}

/// What the headers of a spec's four image files say, read without their pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeaders {
    pub rows: usize,
    pub cols: usize,
    /// Training images (before `data.train_limit`).
    pub train: usize,
    /// Test images (before `data.test_limit`).
    pub test: usize,
}

/// Reads only the headers of the image and label files `spec` names and checks what
/// [`load_image_splits`] would check of them: each file present, a regular file, of its
/// format, its header agreeing with its size; images `[n, rows, cols]` of 8-bit pixels with
/// `n` labels; test images as large as training ones; a dev split that leaves both parts
/// non-empty. Labels themselves are read only when training.
pub fn read_image_headers(spec: &DataSpec) -> Result<ImageHeaders, DataError> {
    let dir = PathBuf::from(&spec.dir);
    let one = |images: &Path, labels: &Path| -> Result<[usize; 3], DataError> {
        let (dims, n_labels) = match spec.format {
            DataFormat::Idx => (
                idx::read_header(images, 3)?,
                idx::read_header(labels, 1)?[0],
            ),
            DataFormat::Npz => {
                let img = npz::read_header(images)?;
                if img.dtype != NpyDtype::U8 {
                    return Err(not_u8(images, img.dtype));
                }
                let lab = npz::read_header(labels)?;
                let [n] = lab.shape[..] else {
                    return Err(labels_not_1d(labels, &lab.shape));
                };
                (img.shape, n)
            }
            DataFormat::TsvPairs => return Err(not_images()),
        };
        let [n, rows, cols] = dims[..] else {
            return Err(images_not_3d(images, &dims));
        };
        if n != n_labels {
            return Err(DataError::CountMismatch {
                images_path: images.to_path_buf(),
                labels_path: labels.to_path_buf(),
                images: n,
                labels: n_labels,
            });
        }
        Ok([n, rows, cols])
    };
    let [train, rows, cols] = one(&dir.join(&spec.train), &dir.join(&spec.train_labels))?;
    let test_path = dir.join(&spec.test);
    let [test, trows, tcols] = one(&test_path, &dir.join(&spec.test_labels))?;
    check_same_size(&test_path, (trows, tcols), (rows, cols))?;
    let kept = if spec.train_limit > 0 {
        train.min(spec.train_limit)
    } else {
        train
    };
    dev_size(kept, spec.dev_fraction)?;
    Ok(ImageHeaders {
        rows,
        cols,
        train,
        test,
    })
}

fn not_u8(images: &Path, dtype: NpyDtype) -> DataError {
    DataError::BadMagic {
        path: images.to_path_buf(),
        message: format!("images must be uint8 (|u1), found {dtype:?}"),
    }
}

fn labels_not_1d(labels: &Path, shape: &[usize]) -> DataError {
    DataError::Shape {
        path: labels.to_path_buf(),
        message: format!("labels must have 1 dimension, found {shape:?}"),
    }
}

fn images_not_3d(images: &Path, dims: &[usize]) -> DataError {
    DataError::Shape {
        path: images.to_path_buf(),
        message: format!("images must have 3 dimensions [n, rows, cols], found {dims:?}"),
    }
}

fn not_images() -> DataError {
    DataError::Split {
        message: "data.format = \"tsv-pairs\" holds sentence pairs, not images; \
                  use \"idx\" or \"npz\" for the cnn and mlp models"
            .into(),
    }
}

fn check_same_size(
    test_path: &Path,
    test: (usize, usize),
    train: (usize, usize),
) -> Result<(), DataError> {
    if test != train {
        return Err(DataError::Shape {
            path: test_path.to_path_buf(),
            message: format!(
                "test images are {}x{} but training images are {}x{}",
                test.0, test.1, train.0, train.1
            ),
        });
    }
    Ok(())
}

/// Images `round(n * fraction)` holds out as dev; both parts must keep at least one.
fn dev_size(n: usize, fraction: f64) -> Result<usize, DataError> {
    let n_dev = (n as f64 * fraction).round() as usize;
    if !(fraction > 0.0 && fraction < 1.0) || n_dev == 0 || n_dev >= n {
        return Err(DataError::Split {
            message: format!(
                "data.dev_fraction = {fraction} of {n} training images leaves {n_dev} for dev \
                 and {} for training; both need at least one",
                n.saturating_sub(n_dev)
            ),
        });
    }
    Ok(n_dev)
}

/// A uniformly random permutation of `0..n` (Fisher-Yates) drawn from `rng`.
pub fn permutation(n: usize, rng: &mut ChaCha8Rng) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        p.swap(i, j);
    }
    p
}

/// Holds out `round(n * fraction)` images of `set` as dev, chosen by a permutation from
/// `rng`; both parts keep the file order. Returns `(train, dev)`.
pub fn split_dev(
    set: &ImageSet,
    fraction: f64,
    rng: &mut ChaCha8Rng,
) -> Result<(ImageSet, ImageSet), DataError> {
    let n = set.len();
    let n_dev = dev_size(n, fraction)?;
    let perm = permutation(n, rng);
    let mut dev: Vec<u32> = perm[..n_dev].to_vec();
    let mut train: Vec<u32> = perm[n_dev..].to_vec();
    dev.sort_unstable();
    train.sort_unstable();
    Ok((set.subset(&train), set.subset(&dev)))
}

/// Loads train, dev (held out of train with `split_rng`) and test as `spec` says.
pub fn load_image_splits(
    spec: &DataSpec,
    split_rng: &mut ChaCha8Rng,
) -> Result<ImageSplits, DataError> {
    let dir = PathBuf::from(&spec.dir);
    let full = read_image_set(
        spec.format,
        &dir.join(&spec.train),
        &dir.join(&spec.train_labels),
        MNIST_CLASSES,
        spec.train_limit,
    )?;
    let test_path = dir.join(&spec.test);
    let test = read_image_set(
        spec.format,
        &test_path,
        &dir.join(&spec.test_labels),
        MNIST_CLASSES,
        spec.test_limit,
    )?;
    check_same_size(&test_path, (test.rows, test.cols), (full.rows, full.cols))?;
    let (train, dev) = split_dev(&full, spec.dev_fraction, split_rng)?;
    Ok(ImageSplits { train, dev, test })
}

/// Converts a data set loaded by `candle-datasets` (e.g. `vision::mnist::load_dir`, or its hub
/// loaders for users who are online) into our `(train, test)` sets.
#[cfg(feature = "candle-datasets")]
pub fn from_candle_dataset(
    ds: &candle_datasets::vision::Dataset,
    rows: usize,
    cols: usize,
) -> candle_core::Result<(ImageSet, ImageSet)> {
    let convert = |images: &candle_core::Tensor, labels: &candle_core::Tensor| {
        let pixels = images
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let labels = labels
            .to_dtype(candle_core::DType::U32)?
            .flatten_all()?
            .to_vec1::<u32>()?;
        if pixels.len() != labels.len() * rows * cols {
            candle_core::bail!(
                "{} pixels do not make {} images of {rows}x{cols}",
                pixels.len(),
                labels.len()
            );
        }
        Ok(ImageSet {
            pixels,
            labels,
            rows,
            cols,
            classes: ds.labels,
        })
    };
    Ok((
        convert(&ds.train_images, &ds.train_labels)?,
        convert(&ds.test_images, &ds.test_labels)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::npz::tests::{npy_bytes, write_npz};
    use rand::SeedableRng;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    fn toy(n: usize) -> ImageSet {
        ImageSet {
            pixels: (0..n * 4).map(|i| i as f32).collect(),
            labels: (0..n as u32).map(|i| i % 10).collect(),
            rows: 2,
            cols: 2,
            classes: 10,
        }
    }

    #[test]
    fn idx_pixels_are_scaled_and_limited() {
        let dir = tempfile::tempdir().unwrap();
        let (i, l) = (dir.path().join("i"), dir.path().join("l"));
        std::fs::write(&i, idx(&[3, 1, 2], &[0, 255, 51, 0, 0, 0])).unwrap();
        std::fs::write(&l, idx(&[3], &[9, 0, 1])).unwrap();
        let s = read_image_set(DataFormat::Idx, &i, &l, 10, 0).unwrap();
        assert_eq!(s.pixels[..3], [0.0, 1.0, 0.2]);
        assert_eq!((s.rows, s.cols, s.len()), (1, 2, 3));
        let s = read_image_set(DataFormat::Idx, &i, &l, 10, 2).unwrap();
        assert_eq!(
            (s.len(), s.pixels.len(), s.labels.clone()),
            (2, 4, vec![9, 0])
        );
    }

    #[test]
    fn labels_out_of_range_and_count_mismatch_name_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let (i, l) = (dir.path().join("imgs"), dir.path().join("labs"));
        std::fs::write(&i, idx(&[2, 1, 1], &[0, 0])).unwrap();
        std::fs::write(&l, idx(&[2], &[3, 10])).unwrap();
        let e = read_image_set(DataFormat::Idx, &i, &l, 10, 0).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::LabelOutOfRange {
                    index: 1,
                    label: 10,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("labs"), "{e}");
        // Fewer classes configured: label 3 is already out of range.
        let e = read_image_set(DataFormat::Idx, &i, &l, 3, 0).unwrap_err();
        assert!(
            matches!(e, DataError::LabelOutOfRange { index: 0, .. }),
            "{e}"
        );

        std::fs::write(&l, idx(&[3], &[1, 2, 3])).unwrap();
        let e = read_image_set(DataFormat::Idx, &i, &l, 10, 0).unwrap_err();
        assert!(matches!(
            e,
            DataError::CountMismatch {
                images: 2,
                labels: 3,
                ..
            }
        ));
        assert!(e.to_string().contains("imgs") && e.to_string().contains("labs"));
    }

    #[test]
    fn unlabelled_images_from_idx_npz_and_png() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("images-idx3-ubyte");
        std::fs::write(&p, idx(&[2, 1, 2], &[0, 255, 51, 0])).unwrap();
        let s = read_unlabelled_images(&p).unwrap();
        assert_eq!((s.len(), s.rows, s.cols), (2, 1, 2));
        assert_eq!(s.pixels, vec![0.0, 1.0, 0.2, 0.0]);

        let n = dir.path().join("x.npz");
        write_npz(&n, "arr_0.npy", &npy_bytes("|u1", "(1, 2, 1)", &[255, 0]));
        let s = read_unlabelled_images(&n).unwrap();
        assert_eq!(
            (s.len(), s.rows, s.cols, s.pixels),
            (1, 2, 1, vec![1.0, 0.0])
        );

        let g = dir.path().join("one.png");
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, 3, 2);
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[0, 255, 0, 51, 0, 0]).unwrap();
        }
        std::fs::write(&g, bytes).unwrap();
        let s = read_unlabelled_images(&g).unwrap();
        assert_eq!((s.len(), s.rows, s.cols), (1, 2, 3));
        assert_eq!(s.pixels, vec![0.0, 1.0, 0.0, 0.2, 0.0, 0.0]);

        // A label file is 1-d: named as not images, with the file.
        std::fs::write(&p, idx(&[2], &[1, 2])).unwrap();
        let e = read_unlabelled_images(&p).unwrap_err();
        assert!(e.to_string().contains("images-idx3-ubyte"), "{e}");
        std::fs::write(&g, b"not a png").unwrap();
        let e = read_unlabelled_images(&g).unwrap_err();
        assert!(
            e.to_string()
                .contains("one.png: bad magic number or format: not a PNG"),
            "{e}"
        );
    }

    #[test]
    fn npz_images_with_int64_labels() {
        let dir = tempfile::tempdir().unwrap();
        let i = dir.path().join("kmnist-train-imgs.npz");
        let l = dir.path().join("kmnist-train-labels.npz");
        write_npz(
            &i,
            "arr_0.npy",
            &npy_bytes("|u1", "(2, 1, 2)", &[0, 255, 255, 0]),
        );
        let mut body = Vec::new();
        for v in [4i64, 7] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        write_npz(&l, "arr_0.npy", &npy_bytes("<i8", "(2,)", &body));
        let s = read_image_set(DataFormat::Npz, &i, &l, 10, 0).unwrap();
        assert_eq!(s.labels, vec![4, 7]);
        assert_eq!(s.pixels, vec![0.0, 1.0, 1.0, 0.0]);

        body.clear();
        for v in [4i64, -1] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        write_npz(&l, "arr_0.npy", &npy_bytes("<i8", "(2,)", &body));
        let e = read_image_set(DataFormat::Npz, &i, &l, 10, 0).unwrap_err();
        assert!(
            matches!(e, DataError::LabelOutOfRange { label: -1, .. }),
            "{e}"
        );
        write_npz(&i, "arr_0.npy", &npy_bytes("|u1", "(4,)", &[0; 4]));
        let e = read_image_set(DataFormat::Npz, &i, &l, 10, 0).unwrap_err();
        assert!(matches!(e, DataError::Shape { .. }), "{e}");
    }

    #[test]
    fn dev_split_is_disjoint_seeded_and_sized() {
        let set = toy(100);
        let split = |seed| split_dev(&set, 0.1, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
        let (train, dev) = split(1);
        assert_eq!((train.len(), dev.len()), (90, 10));
        // Images are identified by their first pixel (4 * original index).
        let ids =
            |s: &ImageSet| -> Vec<u32> { s.pixels.chunks(4).map(|c| c[0] as u32 / 4).collect() };
        let mut all: Vec<u32> = ids(&train).into_iter().chain(ids(&dev)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        // Labels travel with their images.
        for (k, id) in ids(&dev).into_iter().enumerate() {
            assert_eq!(dev.labels[k], id % 10);
        }
        assert_eq!(ids(&split(1).1), ids(&dev));
        assert_ne!(ids(&split(2).1), ids(&dev));
    }

    #[test]
    fn dev_split_refuses_empty_parts() {
        let set = toy(5);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(matches!(
            split_dev(&set, 0.0, &mut rng),
            Err(DataError::Split { .. })
        ));
        assert!(matches!(
            split_dev(&set, 0.05, &mut rng),
            Err(DataError::Split { .. })
        ));
        assert!(matches!(
            split_dev(&set, 1.0, &mut rng),
            Err(DataError::Split { .. })
        ));
        assert!(split_dev(&set, 0.2, &mut rng).is_ok());
    }

    #[test]
    fn permutation_covers_every_index() {
        let mut p = permutation(50, &mut ChaCha8Rng::seed_from_u64(3));
        assert_ne!(p, (0..50).collect::<Vec<_>>());
        p.sort_unstable();
        assert_eq!(p, (0..50).collect::<Vec<_>>());
    }
}
