//! Seeded random streams of a run.
//!
//! Every random draw of a run comes from a `ChaCha8Rng` keyed by the run's seed; each use
//! (weights, dev split, per-epoch shuffling, per-epoch dropout) gets its own ChaCha stream
//! number, and per-epoch uses include the epoch in it. Because an epoch's generators depend
//! only on (seed, use, epoch), a run resumed at an epoch boundary draws exactly what an
//! uninterrupted run draws, with no generator position to save.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Name of this scheme, recorded in checkpoints; a checkpoint of another scheme is not
/// resumed ([`super::checkpoint::resume_point`]).
pub const SCHEME: &str = "chacha8-stream-per-epoch";

/// What a random stream is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// Weight initialisation.
    Init = 1,
    /// Holding dev out of train.
    Split = 2,
    /// Order of training examples in an epoch.
    Shuffle = 3,
    /// Dropout masks in an epoch.
    Dropout = 4,
    /// Anything a model family needs beyond these (e.g. sampling); index it yourself.
    Other = 5,
    /// `diff --paired`'s resampling of test items (not part of any run; a fixed seed).
    Bootstrap = 6,
}

/// The generator for `stream` (and `index`, e.g. the epoch) of a run seeded with `seed`.
pub fn stream_rng(seed: u64, stream: Stream, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Stream ids: the use in the top 16 bits, the index below; the 64-bit ChaCha stream
    // number keeps them apart without touching the key.
    rng.set_stream(((stream as u64) << 48) | (index & ((1 << 48) - 1)));
    rng
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_distinct_and_reproducible() {
        let draw = |s, st, i| stream_rng(s, st, i).random::<u64>();
        assert_eq!(draw(1, Stream::Shuffle, 3), draw(1, Stream::Shuffle, 3));
        assert_ne!(draw(1, Stream::Shuffle, 3), draw(1, Stream::Shuffle, 4));
        assert_ne!(draw(1, Stream::Shuffle, 3), draw(1, Stream::Dropout, 3));
        assert_ne!(draw(1, Stream::Shuffle, 3), draw(2, Stream::Shuffle, 3));
    }
}
