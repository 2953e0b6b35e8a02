//! Packed sequences: a batch's rows sorted by length, longest first, and their positions
//! laid out time-major, so that the rows still running at any time step are a prefix.
//!
//! This is PyTorch's `pack_padded_sequence`: an LSTM step then multiplies exactly the rows
//! that have a character there, in one contiguous block, and no work is spent on padding.
//! On the homework's pairs (batches padded to 19-20 characters, sentences of 15-16 on
//! average) that is a fifth of the recurrent work.

/// The packed layout of one batch's sequences.
#[derive(Debug, Clone, Default)]
pub struct Packing {
    /// Batch row of each sorted position (longest first; ties in row order).
    pub order: Vec<usize>,
    /// Length of each sorted position's sequence.
    pub lens: Vec<usize>,
    /// Rows still running at each time step: `active[t]` = how many lengths exceed `t`.
    pub active: Vec<usize>,
    /// First packed row of each time step's block; `offset[steps]` is the total.
    pub offset: Vec<usize>,
}

impl Packing {
    /// The layout of sequences of lengths `lens` (by batch row).
    pub fn new(lens: &[usize]) -> Packing {
        let mut order: Vec<usize> = (0..lens.len()).collect();
        order.sort_by(|&a, &b| lens[b].cmp(&lens[a]).then(a.cmp(&b)));
        let sorted: Vec<usize> = order.iter().map(|&r| lens[r]).collect();
        let steps = sorted.first().copied().unwrap_or(0);
        let active: Vec<usize> = (0..steps)
            .map(|t| sorted.iter().take_while(|&&l| l > t).count())
            .collect();
        let mut offset = Vec::with_capacity(steps + 1);
        let mut total = 0;
        offset.push(0);
        for &n in &active {
            total += n;
            offset.push(total);
        }
        Packing {
            order,
            lens: sorted,
            active,
            offset,
        }
    }

    /// Time steps: the longest length.
    pub fn steps(&self) -> usize {
        self.active.len()
    }

    /// Packed positions in all: the sum of the lengths.
    pub fn total(&self) -> usize {
        self.offset.last().copied().unwrap_or(0)
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.order.len()
    }

    /// Rows running at step `t` (0 past the end).
    pub fn active_at(&self, t: usize) -> usize {
        self.active.get(t).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_running_at_each_step_are_a_prefix() {
        let p = Packing::new(&[2, 4, 1, 4, 0]);
        assert_eq!(p.order, vec![1, 3, 0, 2, 4]);
        assert_eq!(p.lens, vec![4, 4, 2, 1, 0]);
        assert_eq!(p.active, vec![4, 3, 2, 2]);
        assert_eq!(p.offset, vec![0, 4, 7, 9, 11]);
        assert_eq!(p.total(), 11);
        assert_eq!(p.steps(), 4);
        assert_eq!(p.active_at(4), 0);
        assert_eq!(Packing::new(&[]).total(), 0);
    }
}
