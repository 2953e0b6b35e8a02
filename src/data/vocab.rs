//! Character vocabularies with the homework's special indices (PAD=0, SOS=1, EOS=2, UNK=3).
//!
//! Built on the training split only, so dev and test characters never seen in training map
//! to UNK, as they would for a deployed model.

use std::collections::{BTreeSet, HashMap};

/// Padding index; masked out of the loss and of attention.
pub const PAD: u32 = 0;
/// Start-of-sequence index; the decoder's first input.
pub const SOS: u32 = 1;
/// End-of-sequence index; decoding stops when it is produced.
pub const EOS: u32 = 2;
/// Index of any character not seen in training.
pub const UNK: u32 = 3;
/// Number of special indices before the first character.
pub const N_SPECIAL: usize = 4;

const SPECIAL_NAMES: [&str; N_SPECIAL] = ["<pad>", "<sos>", "<eos>", "<unk>"];

/// A character vocabulary: specials first, then the characters in code-point order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocab {
    chars: Vec<char>,
    index: HashMap<char, u32>,
}

impl Vocab {
    /// Builds the vocabulary of every character in `texts`; sorted so it never depends on
    /// the order of the lines.
    pub fn build<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let set: BTreeSet<char> = texts.into_iter().flat_map(str::chars).collect();
        Self::from_chars(set.into_iter().collect())
    }

    /// A vocabulary of exactly these characters, in this order, after the specials.
    pub fn from_chars(chars: Vec<char>) -> Self {
        let index = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, (i + N_SPECIAL) as u32))
            .collect();
        Vocab { chars, index }
    }

    /// Number of indices, specials included.
    pub fn len(&self) -> usize {
        self.chars.len() + N_SPECIAL
    }

    /// True when no character (only the specials) is known.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The characters after the specials, in index order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// Index of one character; UNK when unseen.
    pub fn id(&self, c: char) -> u32 {
        self.index.get(&c).copied().unwrap_or(UNK)
    }

    /// Indices of the characters of `s`, without SOS or EOS.
    pub fn encode(&self, s: &str) -> Vec<u32> {
        s.chars().map(|c| self.id(c)).collect()
    }

    /// The text of `ids`: stops at the first EOS, skips PAD and SOS, and writes UNK as the
    /// Unicode replacement character so it never collides with a real character.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        for &id in ids {
            match id {
                EOS => break,
                PAD | SOS => {}
                UNK => out.push(char::REPLACEMENT_CHARACTER),
                _ => {
                    if let Some(&c) = self.chars.get(id as usize - N_SPECIAL) {
                        out.push(c);
                    }
                }
            }
        }
        out
    }

    /// A printable label of one index (heatmap axes, sample tables).
    pub fn label(&self, id: u32) -> String {
        match SPECIAL_NAMES.get(id as usize) {
            Some(name) => (*name).to_string(),
            None => self
                .chars
                .get(id as usize - N_SPECIAL)
                .map(|c| c.to_string())
                .unwrap_or_else(|| "<?>".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specials_come_first_and_chars_are_sorted() {
        let v = Vocab::build(["ba", "ca !"]);
        assert_eq!(v.chars(), &[' ', '!', 'a', 'b', 'c']);
        assert_eq!(v.len(), 9);
        assert_eq!(v.id(' '), 4);
        assert_eq!(v.id('c'), 8);
        assert_eq!(v.label(PAD), "<pad>");
        assert_eq!(v.label(8), "c");
    }

    #[test]
    fn unseen_chars_map_to_unk_and_decode_stops_at_eos() {
        let v = Vocab::build(["abc"]);
        assert_eq!(v.encode("axb"), vec![4, UNK, 5]);
        assert_eq!(v.decode(&[SOS, 4, 5, EOS, 6]), "ab");
        assert_eq!(v.decode(&[4, UNK, PAD]), "a\u{FFFD}");
    }
}
