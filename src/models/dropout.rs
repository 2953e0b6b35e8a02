//! Dropout with masks drawn from our seeded generator.
//!
//! `candle_nn::Dropout` draws its mask with the device's unseeded generator; we draw the
//! keep/drop decisions on the host from a `ChaCha8Rng` and send the mask to the device, so
//! training is reproducible on any device.

use candle_core::{Result, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Zeroes each element with probability `p` and scales the rest by `1 / (1 - p)`.
///
/// With `rng` `None` (evaluation) or `p == 0` the input is returned unchanged.
pub fn dropout(xs: &Tensor, p: f64, rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
    let Some(rng) = rng else {
        return Ok(xs.clone());
    };
    if p <= 0.0 {
        return Ok(xs.clone());
    }
    if p >= 1.0 {
        return xs.zeros_like();
    }
    let scale = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = (0..xs.elem_count())
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { scale })
        .collect();
    let mask = Tensor::from_vec(mask, xs.shape(), &candle_core::Device::Cpu)?
        .to_dtype(xs.dtype())?
        .to_device(xs.device())?;
    xs.mul(&mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;

    #[test]
    fn drops_about_p_and_rescales_the_rest() {
        let xs = Tensor::ones((100, 100), candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let ys: Vec<f32> = dropout(&xs, 0.3, Some(&mut rng))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let zeros = ys.iter().filter(|&&v| v == 0.0).count();
        assert!((2700..3300).contains(&zeros), "{zeros}");
        assert!(ys.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
        let again: Vec<f32> = dropout(&xs, 0.3, Some(&mut ChaCha8Rng::seed_from_u64(0)))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(ys, again);
    }

    #[test]
    fn evaluation_is_the_identity() {
        let xs = Tensor::new(&[1f32, 2., 3.], &Device::Cpu).unwrap();
        let ys = dropout(&xs, 0.5, None).unwrap();
        assert_eq!(ys.to_vec1::<f32>().unwrap(), vec![1., 2., 3.]);
    }
}
