//! Key metadata is linearizable: per key, the history must be explainable by a sequential
//! model of the key (state and primary version) in an order consistent with real time.
//!
//! A Wing–Gong search with memoisation (Lowe's refinement): configurations are (set of
//! operations already placed, model state); an operation may be placed next if no unplaced
//! required operation completed before it was invoked. Acknowledged operations are required.
//! Writes that failed or timed out may or may not have happened (Jepsen's `:info`): they are
//! optional, and may be placed only before their completion (never, for a timeout). Failed
//! reads constrain nothing and are left out, as are grants and policy changes (they change
//! who may use a key, which `revocation` checks).

use std::collections::HashSet;

use crate::{KeyStatus, Op, OpKind, Outcome, Value, Violation};

/// The sequential model of one key: `None` until created.
type State = Option<(KeyStatus, u32)>;

/// Search budget per key; beyond it the key is reported as unchecked rather than guessed.
const MAX_CONFIGURATIONS: usize = 2_000_000;

#[derive(Debug)]
struct Entry<'a> {
    op: &'a Op,
    required: bool,
    invoke: u64,
    /// `u64::MAX` when it may take effect at any time after its invocation.
    complete: u64,
}

/// Applies `op` to `state`; `None` when the op's observed result is impossible there.
fn step(state: State, op: &Op) -> Option<State> {
    let ok = op.ok();
    let expect_view = |s: KeyStatus, p: u32| match ok {
        Some(Value::Key(k)) => k.status == s && k.primary == p,
        _ => true,
    };
    match (&op.kind, state) {
        (OpKind::Create | OpKind::CreateByToken, None) => Some(Some((KeyStatus::Enabled, 1))),
        // A repeated create with the same token replays the first result and changes nothing.
        (OpKind::Create | OpKind::CreateByToken, s @ Some(_)) => Some(s),
        (_, None) => None,
        (OpKind::Rotate, Some((KeyStatus::Enabled, p))) => {
            expect_view(KeyStatus::Enabled, p + 1).then_some(Some((KeyStatus::Enabled, p + 1)))
        }
        (OpKind::Disable, Some((KeyStatus::Enabled | KeyStatus::Disabled, p))) => {
            expect_view(KeyStatus::Disabled, p).then_some(Some((KeyStatus::Disabled, p)))
        }
        (OpKind::Enable, Some((KeyStatus::Enabled | KeyStatus::Disabled, p))) => {
            expect_view(KeyStatus::Enabled, p).then_some(Some((KeyStatus::Enabled, p)))
        }
        (OpKind::ScheduleDeletion, Some((KeyStatus::Enabled | KeyStatus::Disabled, p))) => {
            expect_view(KeyStatus::PendingDeletion, p).then_some(Some((KeyStatus::PendingDeletion, p)))
        }
        (OpKind::CancelDeletion, Some((KeyStatus::PendingDeletion, p))) => {
            expect_view(KeyStatus::Disabled, p).then_some(Some((KeyStatus::Disabled, p)))
        }
        (OpKind::Describe { .. }, Some((s, p))) => expect_view(s, p).then_some(state),
        (OpKind::Encrypt { .. } | OpKind::DataKey, Some((s, p))) => match ok {
            Some(Value::Ciphertext { version, .. }) => (s == KeyStatus::Enabled && *version == p).then_some(state),
            _ => None,
        },
        (OpKind::Decrypt { .. }, Some((s, _))) => (s == KeyStatus::Enabled).then_some(state),
        _ => None,
    }
}

/// How a key's search ended when it found no violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Search {
    /// Configurations visited.
    pub configurations: usize,
    /// The budget ran out before a linearization was found: the key is unchecked (Jepsen's
    /// `:unknown`), neither valid nor invalid.
    pub exhausted: bool,
}

/// Checks one key's history. `Err` explains the first operation no order could place.
pub fn check_key(ops: &[&Op]) -> Result<Search, String> {
    let mut list: Vec<Entry<'_>> = Vec::new();
    for op in ops {
        // Grants and policies change who may use the key, not its state (`revocation`).
        if op.kind.is_access() {
            continue;
        }
        let (required, complete) = match &op.outcome {
            Some(Outcome::Ok(_)) => (true, op.complete.unwrap_or(u64::MAX)),
            Some(Outcome::Fail(..)) if op.kind.is_write() => (false, op.complete.unwrap_or(u64::MAX)),
            Some(Outcome::Unknown(_)) | None if op.kind.is_write() => (false, u64::MAX),
            _ => continue,
        };
        list.push(Entry { op, required, invoke: op.invoke, complete });
    }
    let n = list.len();
    if n == 0 {
        return Ok(Search { configurations: 0, exhausted: false });
    }
    let words = n.div_ceil(64);
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    // Depth-first over configurations; each frame remembers which candidate to try next.
    let mut placed = vec![0u64; words];
    let mut stack: Vec<(usize, State)> = Vec::new(); // (index placed, state before it)
    let mut state: State = None;
    let mut next_candidate = 0usize;
    let mut deepest = (0usize, String::new());
    let is_placed = |placed: &[u64], i: usize| placed[i / 64] & (1 << (i % 64)) != 0;
    loop {
        if list.iter().enumerate().all(|(i, e)| !e.required || is_placed(&placed, i)) {
            return Ok(Search { configurations: seen.len(), exhausted: false });
        }
        if seen.len() > MAX_CONFIGURATIONS {
            return Ok(Search { configurations: seen.len(), exhausted: true });
        }
        // The earliest completion among unplaced required ops bounds what may go next.
        let bound = list
            .iter()
            .enumerate()
            .filter(|(i, e)| e.required && !is_placed(&placed, *i))
            .map(|(_, e)| e.complete)
            .min()
            .unwrap_or(u64::MAX);
        let latest_invoke = (0..n).filter(|i| is_placed(&placed, *i)).map(|i| list[i].invoke).max().unwrap_or(0);
        let mut advanced = false;
        let mut i = next_candidate;
        while i < n {
            let e = &list[i];
            if !is_placed(&placed, i) && e.invoke < bound && e.complete > latest_invoke {
                if let Some(next) = step(state, e.op) {
                    let mut p = placed.clone();
                    p[i / 64] |= 1 << (i % 64);
                    if seen.insert((p.clone(), next)) {
                        stack.push((i, state));
                        placed = p;
                        state = next;
                        next_candidate = 0;
                        advanced = true;
                        if stack.len() > deepest.0 {
                            deepest = (stack.len(), String::new());
                        }
                        break;
                    }
                } else if stack.len() >= deepest.0 {
                    deepest = (
                        stack.len(),
                        format!(
                            "{} by {} (#{}, {}) cannot follow state {:?}",
                            e.op.kind.name(),
                            e.op.client,
                            e.op.invoke,
                            e.op.outcome.as_ref().map(crate::summary).unwrap_or_default(),
                            state
                        ),
                    );
                }
            }
            i += 1;
        }
        if advanced {
            continue;
        }
        // Backtrack.
        let Some((last, before)) = stack.pop() else {
            return Err(format!("no linearization: placed at most {} of {n} operations; {}", deepest.0, deepest.1));
        };
        placed[last / 64] &= !(1 << (last % 64));
        state = before;
        next_candidate = last + 1;
    }
}

/// The per-key results of a whole history.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub violations: Vec<Violation>,
    /// Keys checked.
    pub keys: usize,
    /// Keys whose search ran out of budget: neither valid nor invalid.
    pub unchecked: Vec<String>,
}

pub fn check_all(ops: &[Op]) -> Report {
    let mut report = Report::default();
    for (key, list) in super::per_key(ops) {
        report.keys += 1;
        match check_key(&list) {
            Err(why) => {
                report.violations.push(Violation { invariant: "linearizable", detail: format!("key {key}: {why}") })
            }
            Ok(search) if search.exhausted => report.unchecked.push(key.to_string()),
            Ok(_) => {}
        }
    }
    report
}

/// The violations alone (a key past the search budget counts as none).
pub fn check(ops: &[Op]) -> Vec<Violation> {
    check_all(ops).violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testing::{ciphertext, key, op};

    fn run(ops: &[Op]) -> Result<Search, String> {
        let refs: Vec<&Op> = ops.iter().collect();
        check_key(&refs)
    }

    #[test]
    fn sequential_history_passes() {
        let ops = vec![
            op(OpKind::Create, 1, 2, key(KeyStatus::Enabled, 1)),
            op(OpKind::Rotate, 3, 4, key(KeyStatus::Enabled, 2)),
            op(OpKind::Describe { node: None }, 5, 6, key(KeyStatus::Enabled, 2)),
            op(OpKind::Disable, 7, 8, key(KeyStatus::Disabled, 2)),
        ];
        assert!(run(&ops).is_ok());
    }

    #[test]
    fn stale_read_after_acknowledged_rotation_fails() {
        let ops = vec![
            op(OpKind::Create, 1, 2, key(KeyStatus::Enabled, 1)),
            op(OpKind::Rotate, 3, 4, key(KeyStatus::Enabled, 2)),
            op(OpKind::Describe { node: None }, 5, 6, key(KeyStatus::Enabled, 1)),
        ];
        assert!(run(&ops).is_err());
    }

    #[test]
    fn concurrent_read_may_see_either_side() {
        let ops = vec![
            op(OpKind::Create, 1, 2, key(KeyStatus::Enabled, 1)),
            op(OpKind::Rotate, 3, 6, key(KeyStatus::Enabled, 2)),
            op(OpKind::Describe { node: None }, 4, 5, key(KeyStatus::Enabled, 1)),
            op(OpKind::Describe { node: None }, 4, 7, key(KeyStatus::Enabled, 2)),
        ];
        assert!(run(&ops).is_ok());
    }

    #[test]
    fn unknown_write_may_or_may_not_happen() {
        let mut rotate = op(OpKind::Rotate, 3, 4, Outcome::Unknown("timeout".into()));
        rotate.complete = Some(4);
        let ops = vec![
            op(OpKind::Create, 1, 2, key(KeyStatus::Enabled, 1)),
            rotate,
            op(OpKind::Describe { node: None }, 5, 6, key(KeyStatus::Enabled, 1)),
            op(OpKind::Describe { node: None }, 7, 8, key(KeyStatus::Enabled, 2)),
        ];
        assert!(run(&ops).is_ok());
        // ...but it cannot un-happen.
        let ops2 = vec![
            ops[0].clone(),
            ops[1].clone(),
            op(OpKind::Describe { node: None }, 5, 6, key(KeyStatus::Enabled, 2)),
            op(OpKind::Describe { node: None }, 7, 8, key(KeyStatus::Enabled, 1)),
        ];
        assert!(run(&ops2).is_err());
    }

    #[test]
    fn encrypt_must_use_the_primary() {
        let ct = ciphertext;
        let ok = vec![
            op(OpKind::Create, 1, 2, key(KeyStatus::Enabled, 1)),
            op(OpKind::Rotate, 3, 4, key(KeyStatus::Enabled, 2)),
            op(OpKind::Encrypt { plaintext: vec![] }, 5, 6, ct(2)),
        ];
        assert!(run(&ok).is_ok());
        let bad = vec![ok[0].clone(), ok[1].clone(), op(OpKind::Encrypt { plaintext: vec![] }, 5, 6, ct(1))];
        assert!(run(&bad).is_err());
    }

    #[test]
    fn disabled_key_cannot_encrypt() {
        let ct = ciphertext(1);
        let ops = vec![
            op(OpKind::Create, 1, 2, key(KeyStatus::Enabled, 1)),
            op(OpKind::Disable, 3, 4, key(KeyStatus::Disabled, 1)),
            op(OpKind::Encrypt { plaintext: vec![] }, 5, 6, ct),
        ];
        assert!(run(&ops).is_err());
    }
}
