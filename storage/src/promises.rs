//! What a log store promises openraft, asserted in both stores where the promise is kept: a
//! log has no holes and a vote never goes back. A store that broke either could lose
//! committed entries or let a node vote twice in a term; it stops the node instead (the
//! assertions panic with the numbers that disagree).

use openraft::{LogId, Vote};
use raft::NodeId;

/// Entries appended to a log whose last id (held or purged) is `last` leave no hole after it,
/// and follow each other in order. (They may start at or below it: openraft's own suite
/// appends below a purge point, and a leader's entries replace a follower's conflicting ones.)
pub(crate) fn assert_contiguous(last: Option<LogId<NodeId>>, mut indexes: impl Iterator<Item = u64>) {
    let Some(first) = indexes.next() else { return };
    if let Some(last) = last {
        assert!(
            first <= last.index + 1,
            "log store: appending index {first} after index {} (term {}) leaves a hole",
            last.index,
            last.leader_id.term
        );
    }
    let mut previous = first;
    for index in indexes {
        assert!(index == previous + 1, "log store: one append holds index {index} right after {previous}");
        previous = index;
    }
}

/// The vote `new` replaces `old` only going forward (a higher term, or the same vote becoming
/// committed).
pub(crate) fn assert_vote_advances(old: Option<&Vote<NodeId>>, new: &Vote<NodeId>) {
    if let Some(old) = old {
        assert!(new >= old, "log store: vote going back from {old} to {new}: a node could vote twice in one term");
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn appends_that_follow_the_log_pass() {
        assert_contiguous(None, [4, 5, 6].into_iter());
        assert_contiguous(Some(log_id(1, 3)), [4, 5].into_iter());
        assert_contiguous(Some(log_id(1, 3)), [2, 3, 4].into_iter());
    }

    #[test]
    #[should_panic(expected = "appending index 5 after index 3 (term 1) leaves a hole")]
    fn an_append_past_the_end_is_refused() {
        assert_contiguous(Some(log_id(1, 3)), [5].into_iter());
    }

    #[test]
    #[should_panic(expected = "one append holds index 7 right after 5")]
    fn an_append_with_a_gap_inside_is_refused() {
        assert_contiguous(None, [5, 7].into_iter());
    }

    #[test]
    fn a_vote_may_advance_or_be_committed() {
        assert_vote_advances(None, &Vote::new(1, 1));
        assert_vote_advances(Some(&Vote::new(1, 1)), &Vote::new_committed(1, 1));
        assert_vote_advances(Some(&Vote::new(1, 1)), &Vote::new(2, 3));
    }

    #[test]
    #[should_panic(expected = "vote going back")]
    fn a_vote_never_goes_back() {
        assert_vote_advances(Some(&Vote::new(3, 1)), &Vote::new(2, 2));
    }
}
