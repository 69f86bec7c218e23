//! Faults a test server puts into one session on purpose (the sandbox's admin API asks for them): the next
//! command refused with the protocol's transient failure, or the connection dropped — unanswered — after a
//! number of commands. Each protocol core consults its [`CommandFaults`] where it reads a command (not an
//! AUTH continuation or message data), so a client sees the fault exactly where a real service's failure
//! would reach it.

/// What a core does with the command it just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandFault {
    /// Answer it with the protocol's transient failure, without running it.
    Fail,
    /// Close the connection without answering it.
    Drop,
}

/// The faults pending for one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandFaults {
    fail_next: bool,
    /// Commands still answered before the connection is dropped.
    drop_after: Option<u32>,
}

impl CommandFaults {
    /// The next command is refused.
    pub fn fail_next(&mut self) {
        self.fail_next = true;
    }

    /// `commands` more commands are answered; the one after them drops the connection.
    pub fn drop_after(&mut self, commands: u32) {
        self.drop_after = Some(commands);
    }

    /// Called by a core for each command it reads.
    pub(crate) fn on_command(&mut self) -> Option<CommandFault> {
        if let Some(left) = &mut self.drop_after {
            if *left == 0 {
                return Some(CommandFault::Drop);
            }
            *left -= 1;
        }
        std::mem::take(&mut self.fail_next).then_some(CommandFault::Fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fault_fires_once_where_asked() {
        let mut faults = CommandFaults::default();
        assert_eq!(faults.on_command(), None);
        faults.fail_next();
        assert_eq!(faults.on_command(), Some(CommandFault::Fail));
        assert_eq!(faults.on_command(), None);
        faults.drop_after(2);
        assert_eq!(faults.on_command(), None);
        assert_eq!(faults.on_command(), None);
        assert_eq!(faults.on_command(), Some(CommandFault::Drop));
    }
}
