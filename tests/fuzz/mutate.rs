//! Inputs made by mutating valid seeds: pure random bytes rarely get past a magic number, so
//! most inputs start from a file the reader accepts and break it a few edits at a time.

use proptest::prelude::*;
use proptest::sample::Index;

/// Numbers that sit on the edges readers get wrong: zero, one, sizes of real data, powers of
/// two and their neighbours, the largest values of each width.
pub const EDGES: &[u64] = &[
    0,
    1,
    2,
    3,
    7,
    8,
    10,
    28,
    127,
    128,
    255,
    256,
    784,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    60000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
];

/// A number that is usually on an edge and sometimes anything.
pub fn edgy() -> impl Strategy<Value = u64> {
    prop_oneof![3 => proptest::sample::select(EDGES), 1 => any::<u64>()]
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Flip one bit.
    Flip(Index, u8),
    /// Overwrite one byte.
    Set(Index, u8),
    /// Keep only a prefix.
    Truncate(Index),
    /// Remove up to `n` bytes.
    Delete(Index, usize),
    /// Insert bytes.
    Insert(Index, Vec<u8>),
    /// Copy a piece of the input (or of the other seed) somewhere else: duplicated records,
    /// a second gzip member, a header in the middle.
    Splice {
        at: Index,
        from: Index,
        len: usize,
        other: bool,
    },
    /// Write a number, little- or big-endian, 1 to 8 bytes wide.
    Number {
        at: Index,
        value: u64,
        width: usize,
        big: bool,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        1 => any::<Index>().prop_map(Edit::Truncate),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => (any::<Index>(), any::<Index>(), 1usize..4096, any::<bool>())
            .prop_map(|(at, from, len, other)| Edit::Splice { at, from, len, other }),
        3 => (any::<Index>(), edgy(), proptest::sample::select(&[1usize, 2, 4, 8][..]), any::<bool>())
            .prop_map(|(at, value, width, big)| Edit::Number { at, value, width, big }),
    ]
}

/// Up to `max` edits.
pub fn edits(max: usize) -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(edit(), 0..=max)
}

fn pos(i: &Index, len: usize) -> usize {
    if len == 0 { 0 } else { i.index(len + 1) }
}

/// Applies `edits` to `bytes`; `other` is a second seed that splices may copy from.
pub fn apply(mut bytes: Vec<u8>, edits: &[Edit], other: &[u8]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len();
        match e {
            Edit::Flip(i, bit) if len > 0 => bytes[i.index(len)] ^= 1 << bit,
            Edit::Set(i, b) if len > 0 => bytes[i.index(len)] = *b,
            Edit::Truncate(i) => bytes.truncate(pos(i, len)),
            Edit::Delete(i, n) if len > 0 => {
                let at = i.index(len);
                bytes.drain(at..(at + n).min(len));
            }
            Edit::Insert(i, b) => {
                let at = pos(i, len);
                bytes.splice(at..at, b.iter().copied());
            }
            Edit::Splice {
                at,
                from,
                len: n,
                other: use_other,
            } => {
                let src: &[u8] = if *use_other { other } else { &bytes };
                if src.is_empty() {
                    continue;
                }
                let start = from.index(src.len());
                let piece = src[start..(start + n).min(src.len())].to_vec();
                let at = pos(at, len);
                bytes.splice(at..at, piece);
            }
            Edit::Number {
                at,
                value,
                width,
                big,
            } if len > 0 => {
                let raw = if *big {
                    value.to_be_bytes()
                } else {
                    value.to_le_bytes()
                };
                let field = if *big {
                    &raw[8 - width..]
                } else {
                    &raw[..*width]
                };
                let start = at.index(len);
                let end = (start + width).min(len);
                bytes[start..end].copy_from_slice(&field[..end - start]);
            }
            _ => {}
        }
    }
    bytes
}

/// Either a seed from `seeds` broken by a few edits (most of the time) or random bytes.
pub fn mutated(seeds: Vec<Vec<u8>>, max_random: usize) -> impl Strategy<Value = Input> {
    let n = seeds.len();
    let seeds = std::sync::Arc::new(seeds);
    let from_seed = {
        let seeds = seeds.clone();
        (0..n, 0..n, edits(6)).prop_map(move |(s, o, e)| Input {
            bytes: apply(seeds[s].clone(), &e, &seeds[o]),
            seed: s,
            edits: e.len(),
        })
    };
    let random = proptest::collection::vec(any::<u8>(), 0..max_random).prop_map(|bytes| Input {
        bytes,
        seed: usize::MAX,
        edits: 0,
    });
    prop_oneof![6 => from_seed, 1 => random]
}

/// A generated byte input and where it came from (for the failure report).
#[derive(Clone)]
pub struct Input {
    pub bytes: Vec<u8>,
    /// Index of the seed it was made from; `usize::MAX` for random bytes.
    pub seed: usize,
    /// How many edits made it.
    pub edits: usize,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Input {{ seed: {}, edits: {}, len: {}, bytes: b\"{}\" }}",
            self.seed as isize,
            self.edits,
            self.bytes.len(),
            self.bytes.escape_ascii()
        )
    }
}
