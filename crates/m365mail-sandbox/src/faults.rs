//! Fault injection, per service: each service keeps a [`FaultQueue`] of its own fault type (the token
//! endpoint's is [`crate::admin::TokenFault`]; the mail services add theirs), filled through the admin API
//! and taken by the service when a request comes in.

use std::sync::Mutex;

use crate::sync::lock;

/// One injected fault and how many requests it still answers.
#[derive(Debug)]
pub(crate) struct FaultQueue<F> {
    pending: Mutex<Option<(F, u32)>>,
}

impl<F> Default for FaultQueue<F> {
    fn default() -> Self {
        Self {
            pending: Mutex::new(None),
        }
    }
}

impl<F: Clone> FaultQueue<F> {
    /// Answers the next `count` requests it applies to with `fault` (replacing any pending fault).
    pub(crate) fn inject(&self, fault: F, count: u32) {
        *lock(&self.pending) = (count > 0).then_some((fault, count));
    }

    /// Removes any pending fault.
    pub(crate) fn clear(&self) {
        *lock(&self.pending) = None;
    }

    /// Takes one use of the pending fault if `applies` says it answers this request.
    pub(crate) fn take(&self, applies: impl FnOnce(&F) -> bool) -> Option<F> {
        let mut pending = lock(&self.pending);
        let (fault, remaining) = pending.as_mut().filter(|(fault, _)| applies(fault))?;
        let fault = fault.clone();
        *remaining -= 1;
        if *remaining == 0 {
            *pending = None;
        }
        Some(fault)
    }
}

/// A fault inside a mail session, applied by the protocol core where it reads a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionFault {
    /// The next command is answered with the service's transient failure (`NO`, `-ERR`, `451`).
    FailNext,
    /// A new connection answers this many commands, then drops, the next one unanswered.
    DropAfterCommands(u32),
    /// The next command of a signed-in session finds its token expired (IMAP: `* BYE Session invalidated -
    /// AccessTokenExpired`).
    ExpireToken,
}

impl FaultQueue<SessionFault> {
    /// For a new connection: how many commands it answers before it is dropped, if it is to be.
    pub(crate) fn take_for_connection(&self) -> Option<u32> {
        match self.take(|f| matches!(f, SessionFault::DropAfterCommands(_))) {
            Some(SessionFault::DropAfterCommands(commands)) => Some(commands),
            _ => None,
        }
    }

    /// For input a session read: a fault to apply to the command in it (a token can expire only once
    /// the session signed in).
    pub(crate) fn take_for_input(&self, signed_in: bool) -> Option<SessionFault> {
        self.take(|f| match f {
            SessionFault::FailNext => true,
            SessionFault::ExpireToken => signed_in,
            SessionFault::DropAfterCommands(_) => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_answers_count_requests_it_applies_to() {
        let queue = FaultQueue::default();
        queue.inject("slow", 2);
        assert_eq!(queue.take(|_| false), None, "not applicable: not used up");
        assert_eq!(queue.take(|_| true), Some("slow"));
        assert_eq!(queue.take(|_| true), Some("slow"));
        assert_eq!(queue.take(|_| true), None);
        queue.inject("x", 0);
        assert_eq!(queue.take(|_| true), None);
        queue.inject("y", 5);
        queue.clear();
        assert_eq!(queue.take(|_| true), None);
    }
}
