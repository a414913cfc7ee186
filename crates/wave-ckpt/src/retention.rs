//! Which committed checkpoints to delete: a pure function of the steps, so the policy is tested
//! without a store and the store only carries out its answer.

use serde::{Deserialize, Serialize};

/// How many committed checkpoints to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep the newest `keep_last` committed steps (0: none besides the ones below).
    pub keep_last: usize,
    /// Also keep every step that is a multiple of `keep_every` (0: off), e.g. 10 000 for milestones.
    pub keep_every: u64,
}

/// The committed steps to delete (ascending): all but the newest `keep_last`, the multiples of
/// `keep_every` (when non-zero) and `latest` (the step the `latest` pointer names, which is never
/// deleted even when it is not the newest committed step).
pub fn retention(
    committed_steps: &[u64],
    keep_last: usize,
    keep_every: u64,
    latest: Option<u64>,
) -> Vec<u64> {
    let mut steps = committed_steps.to_vec();
    steps.sort_unstable();
    steps.dedup();
    let newest_kept = steps.len().saturating_sub(keep_last);
    steps
        .iter()
        .enumerate()
        .filter(|&(i, &s)| {
            i < newest_kept && Some(s) != latest && (keep_every == 0 || s % keep_every != 0)
        })
        .map(|(_, &s)| s)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_last_k_and_every_m() {
        let steps: Vec<u64> = (1..=10).map(|s| s * 100).collect();
        assert_eq!(
            retention(&steps, 3, 500, Some(1000)),
            vec![100, 200, 300, 400, 600, 700]
        );
        assert_eq!(
            retention(&steps, 3, 0, Some(1000)),
            vec![100, 200, 300, 400, 500, 600, 700]
        );
        assert_eq!(retention(&steps, 20, 0, Some(1000)), Vec::<u64>::new());
    }

    #[test]
    fn never_deletes_latest_even_when_newer_steps_exist() {
        // A save committed step 300 but crashed before moving `latest` off 100.
        assert_eq!(retention(&[300, 100, 200], 1, 0, Some(100)), vec![200]);
        assert_eq!(retention(&[100], 0, 0, Some(100)), Vec::<u64>::new());
        assert_eq!(retention(&[100, 200], 0, 0, None), vec![100, 200]);
    }

    #[test]
    fn unsorted_and_repeated_input_gives_sorted_unique_output() {
        assert_eq!(retention(&[5, 3, 3, 1, 4], 1, 0, Some(5)), vec![1, 3, 4]);
    }
}
