//! What a run reads of an image data set (`data::images::read_image_set`: the image file and
//! its label file, IDX or NPZ, then the dev split): never panics, never holds more than a
//! small multiple of what the files decompress to, names the file at fault, and an accepted
//! set has one label below the class count per image and every image whole.

use orchestrate::data::images::{permutation, read_image_set, split_dev};
use orchestrate::spec::DataFormat;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::harness::{check_bounded, fuzz, peak_alloc, scratch, variant};
use crate::idx::{gzip, idx_bytes};
use crate::mutate::{Edit, apply, edits};
use crate::npz::{npy, zip_of};

/// A matching image and label file: `n` images of `rows` x `cols`, labels below 12.
fn pair(n: u32, rows: u32, cols: u32) -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..n * rows * cols).map(|i| (i * 7 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i * 5 % 12) as u8).collect();
    (pixels, labels)
}

#[derive(Debug, Clone)]
struct Case {
    npz: bool,
    gzip: bool,
    shape: (u32, u32, u32),
    image_edits: Vec<Edit>,
    label_edits: Vec<Edit>,
    classes: usize,
    limit: usize,
    dev_fraction: f64,
}

#[test]
fn fuzz_image_sets() {
    let dir = scratch();
    let images = dir.path().join("train-images-idx3-ubyte");
    let labels = dir.path().join("train-labels-idx1-ubyte");
    let case = (
        any::<bool>(),
        any::<bool>(),
        (0u32..6, 0u32..5, 1u32..5),
        prop_oneof![2 => Just(vec![]), 1 => edits(3)],
        prop_oneof![2 => Just(vec![]), 1 => edits(3)],
        prop_oneof![3 => Just(10usize), 1 => 0usize..14],
        prop_oneof![3 => Just(0usize), 1 => 0usize..8],
        prop_oneof![Just(0.1), Just(0.5), Just(0.0), Just(1.0), 0.0f64..1.0],
    )
        .prop_map(
            |(npz, gzip, shape, image_edits, label_edits, classes, limit, dev_fraction)| Case {
                npz,
                gzip,
                shape,
                image_edits,
                label_edits,
                classes,
                limit,
                dev_fraction,
            },
        );
    fuzz("images", 4000, case, |c, tally| {
        let (n, rows, cols) = c.shape;
        let (pixels, labs) = pair(n, rows, cols);
        let (img_file, lab_file) = if c.npz {
            let img = npy("|u1", &format!("({n}, {rows}, {cols})"), &pixels);
            let lab = npy("|u1", &format!("({n},)"), &labs);
            (
                zip_of(
                    &[("arr_0.npy", &apply(img.clone(), &c.image_edits, &img))],
                    c.gzip,
                ),
                zip_of(
                    &[("arr_0.npy", &apply(lab.clone(), &c.label_edits, &lab))],
                    c.gzip,
                ),
            )
        } else {
            let img = idx_bytes(0x08, &[n, rows, cols], &pixels);
            let lab = idx_bytes(0x08, &[n], &labs);
            let (img, lab) = (
                apply(img.clone(), &c.image_edits, &img),
                apply(lab.clone(), &c.label_edits, &lab),
            );
            if c.gzip {
                (gzip(&img), gzip(&lab))
            } else {
                (img, lab)
            }
        };
        std::fs::write(&images, &img_file).unwrap();
        std::fs::write(&labels, &lab_file).unwrap();
        let format = if c.npz {
            DataFormat::Npz
        } else {
            DataFormat::Idx
        };
        let (result, peak) =
            peak_alloc(|| read_image_set(format, &images, &labels, c.classes, c.limit));
        // Pixels become f32: four bytes each, beside the bytes they came from.
        let unpacked = img_file.len() + lab_file.len() + pixels.len() + labs.len() + 64;
        check_bounded("read_image_set", peak, unpacked, 16)?;
        match result {
            Ok(set) => {
                tally.add("ok");
                prop_assert_eq!(set.pixels.len(), set.len() * set.rows * set.cols);
                prop_assert!(set.labels.iter().all(|&l| (l as usize) < c.classes));
                prop_assert!(set.pixels.iter().all(|p| (0.0..=1.0).contains(p)));
                if c.limit > 0 {
                    prop_assert!(set.len() <= c.limit);
                }
                let mut rng = ChaCha8Rng::seed_from_u64(7);
                prop_assert_eq!(permutation(set.len(), &mut rng).len(), set.len());
                match split_dev(&set, c.dev_fraction, &mut rng) {
                    Ok((train, dev)) => {
                        prop_assert_eq!(train.len() + dev.len(), set.len());
                        prop_assert!(!train.is_empty() && !dev.is_empty());
                        for i in 0..dev.len() {
                            prop_assert_eq!(dev.pixels_of(i).len(), set.rows * set.cols);
                        }
                    }
                    Err(e) => {
                        prop_assert!(e.to_string().contains("data.dev_fraction"), "{}", e);
                    }
                }
            }
            Err(e) => {
                tally.add(variant(&e));
                let msg = e.to_string();
                prop_assert!(
                    msg.contains("train-images-idx3-ubyte")
                        || msg.contains("train-labels-idx1-ubyte"),
                    "error names neither file: {}",
                    msg
                );
            }
        }
        Ok(())
    });
}
