//! Raft safety, checked as events happen: at most one leader per term, and every node applies
//! the same entry at every index (so committed entries never change and all nodes apply the
//! same commands in the same order). Nodes report through `history::Recorder`.

use std::collections::BTreeMap;

/// The record both checks keep.
#[derive(Debug, Default)]
pub struct RaftRecord {
    /// term -> the node that led it.
    leaders: BTreeMap<u64, u64>,
    /// log index -> (term, digest) of the entry first applied there by any node.
    applied: BTreeMap<u64, (u64, [u8; 32])>,
}

impl RaftRecord {
    /// `node` became leader of `term`; an error names the other leader of that term.
    pub fn leader(&mut self, term: u64, node: u64) -> Result<(), String> {
        let first = *self.leaders.entry(term).or_insert(node);
        if first != node {
            return Err(format!("two leaders in term {term}: n{first} and n{node}"));
        }
        Ok(())
    }

    /// `node` applied the entry `(term, digest)` at `index`.
    pub fn applied(&mut self, node: u64, index: u64, term: u64, digest: [u8; 32]) -> Result<(), String> {
        let first = *self.applied.entry(index).or_insert((term, digest));
        if first != (term, digest) {
            return Err(format!(
                "n{node} applied a different entry at index {index} (term {term}) than the one first applied there (term {})",
                first.0
            ));
        }
        Ok(())
    }

    pub fn terms_led(&self) -> usize {
        self.leaders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_leaders_in_a_term_are_caught() {
        let mut r = RaftRecord::default();
        assert!(r.leader(3, 1).is_ok());
        assert!(r.leader(3, 1).is_ok());
        assert!(r.leader(4, 2).is_ok());
        assert!(r.leader(3, 2).is_err());
    }

    #[test]
    fn a_changed_entry_is_caught() {
        let mut r = RaftRecord::default();
        assert!(r.applied(1, 5, 2, [1; 32]).is_ok());
        assert!(r.applied(2, 5, 2, [1; 32]).is_ok());
        assert!(r.applied(3, 5, 3, [1; 32]).is_err());
        assert!(r.applied(3, 5, 2, [2; 32]).is_err());
    }
}
