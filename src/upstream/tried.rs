//! A small set of server indices: which servers one client connection has already tried.
//!
//! Retries ask the scheduler again with the failed servers excluded. Almost every upstream has at
//! most 128 servers, so the set is a `u128` bitmap on the stack; larger indices spill into a `Vec`
//! that is only allocated when used.

/// A set of server indices, allocation-free up to index 127.
#[derive(Debug, Default, Clone)]
pub struct Tried {
    low: u128,
    high: Vec<usize>,
}

impl Tried {
    /// An empty set.
    pub fn new() -> Tried {
        Tried::default()
    }

    /// Adds `index`.
    pub fn insert(&mut self, index: usize) {
        if index < 128 {
            self.low |= 1u128 << index;
        } else if !self.high.contains(&index) {
            self.high.push(index);
        }
    }

    /// Whether `index` is in the set.
    pub fn contains(&self, index: usize) -> bool {
        if index < 128 {
            self.low & (1u128 << index) != 0
        } else {
            self.high.contains(&index)
        }
    }

    /// How many indices are in the set.
    pub fn len(&self) -> usize {
        self.low.count_ones() as usize + self.high.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::Tried;

    #[test]
    fn tried_holds_small_and_large_indices() {
        let mut t = Tried::new();
        assert!(t.is_empty());
        for i in [0, 5, 127, 128, 1000, 5] {
            t.insert(i);
        }
        assert_eq!(t.len(), 5);
        for i in [0, 5, 127, 128, 1000] {
            assert!(t.contains(i), "{i}");
        }
        for i in [1, 126, 129, 999] {
            assert!(!t.contains(i), "{i}");
        }
    }
}
