//! Where one event of a request stands with its claim, as the request sees it: what it may give
//! back when it fails or runs out of time. Ownership is the state; whether the event met other
//! content under its key is a flag beside it, never a state that hides ownership.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClaimState {
    /// Not claimed yet.
    Waiting,
    /// The conditional write is out: it may have landed, so it is among what to give back.
    Claiming,
    /// Ours: taken new, or over from a lapsed lease.
    Ours,
    /// Another delivery holds a live lease on it (answered 503 unless the processor has it).
    InFlight,
    /// Not ours: done before, or found on the queue (a duplicate).
    Duplicate,
    /// On the queue, sent by us or found there after a takeover: not to be given back.
    Sent,
    /// Given back or marked: nothing left to do.
    Done,
}

impl ClaimState {
    /// Every legal transition, in one place.
    pub(super) fn may_become(self, next: ClaimState) -> bool {
        use ClaimState::*;
        matches!(
            (self, next),
            (Waiting, Claiming)
                // The write answered (a failed write stays Claiming: it may have landed).
                | (Claiming, Ours | InFlight | Duplicate)
                // Given back after a failed write, or after a failure of ours.
                | (Claiming | Ours, Done)
                // Sent by us, or found on the queue after a takeover.
                | (Ours, Sent)
                // The live holder's event is on the queue.
                | (InFlight, Duplicate)
                // A takeover's mark.
                | (Sent, Done)
        )
    }

    /// Claims that may be ours and are not on the queue: what a failed request gives back.
    pub(super) fn maybe_ours(self) -> bool {
        matches!(self, ClaimState::Claiming | ClaimState::Ours)
    }
}

/// One event's claim state and its conflict flag.
#[derive(Debug)]
pub(super) struct ClaimCell {
    state: Mutex<ClaimState>,
    /// The same key came with other content (logged and counted as a conflict).
    conflict: AtomicBool,
}

impl Default for ClaimCell {
    fn default() -> Self {
        ClaimCell {
            state: Mutex::new(ClaimState::Waiting),
            conflict: AtomicBool::new(false),
        }
    }
}

impl ClaimCell {
    pub(super) fn get(&self) -> ClaimState {
        *self.state.lock().expect("claim state")
    }

    /// Moves to `next`; an illegal transition is a bug (debug builds panic, the simulation and
    /// the tests run them).
    pub(super) fn become_(&self, next: ClaimState) {
        let mut state = self.state.lock().expect("claim state");
        debug_assert!(
            state.may_become(next),
            "illegal claim transition {:?} -> {next:?}",
            *state
        );
        *state = next;
    }

    pub(super) fn flag_conflict(&self) {
        self.conflict.store(true, Ordering::SeqCst);
    }

    pub(super) fn conflict(&self) -> bool {
        self.conflict.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::ClaimState::*;

    #[test]
    fn only_the_listed_transitions_are_legal() {
        assert!(Waiting.may_become(Claiming));
        assert!(Claiming.may_become(Ours) && Claiming.may_become(Done));
        assert!(Ours.may_become(Sent) && InFlight.may_become(Duplicate));
        // What is on the queue is never given back; a duplicate never becomes ours.
        assert!(!Sent.may_become(Ours) && !Duplicate.may_become(Ours));
        assert!(!Waiting.may_become(Ours) && !Done.may_become(Claiming));
        assert!(Claiming.maybe_ours() && Ours.maybe_ours() && !Sent.maybe_ours());
    }
}
