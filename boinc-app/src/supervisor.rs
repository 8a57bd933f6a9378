//! The supervisor: drives one guest through its lifecycle and answers the BOINC client.
//!
//! An explicit state machine: each handler returns the next state, and commands that make
//! no sense in a state are refused, not guessed at.
//!
//! ```text
//! Preparing --start--> Booting --first progress--> Running --suspend--> Suspended
//!     Running/Booting <--resume-- Suspended
//!     any --guest exited--> Finished;  any --abort/quit/timeout--> Finished (guest killed)
//! ```

use std::time::{Duration, Instant};

use gah_core::progress::{AppReport, Phase};

use crate::backend::{BackendError, Guest, GuestEvent, Limit};

/// Where the supervisor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Staging inputs, before the guest exists.
    Preparing,
    /// The guest is starting; no progress yet.
    Booting,
    /// The guest reports progress.
    Running,
    /// The guest is paused at the client's request.
    Suspended,
    /// The guest's state is being saved.
    Checkpointing,
    /// The guest is gone.
    Finished,
}

/// What the BOINC client (or a person) asks of the running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Pause the guest.
    Suspend,
    /// Continue a paused guest.
    Resume,
    /// Stop for now; the client will restart the task later.
    Quit,
    /// Stop for good.
    Abort,
}

/// How the supervised run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The guest finished; `ok` is false when the guest itself failed.
    GuestExited { ok: bool, detail: String },
    /// The guest passed one of the host's limits.
    LimitExceeded { limit: Limit, detail: String },
    /// The wall-clock limit passed; the guest was killed.
    TimedOut,
    /// The client asked to quit; the guest was killed.
    Quit,
    /// The client aborted the task; the guest was killed.
    Aborted,
}

/// A command refused in the current state.
#[derive(Debug, thiserror::Error)]
#[error("{command:?} is not allowed while {state:?}")]
pub struct NotAllowed {
    /// The command.
    pub command: Command,
    /// The state it arrived in.
    pub state: State,
}

/// What went wrong while supervising.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A command that makes no sense in the current state.
    #[error(transparent)]
    NotAllowed(#[from] NotAllowed),
    /// [`Supervisor::poll`] after the run ended.
    #[error("poll after the run ended")]
    Ended,
    /// The guest could not be paused.
    #[error("pause the guest")]
    Pause(#[source] BackendError),
    /// The guest could not be resumed.
    #[error("resume the guest")]
    Resume(#[source] BackendError),
    /// The guest could not be checkpointed.
    #[error("checkpoint the guest")]
    Checkpoint(#[source] BackendError),
    /// The guest could not be killed.
    #[error("kill the guest")]
    Kill(#[source] BackendError),
    /// The guest's events could not be read.
    #[error("read the guest's events")]
    Events(#[source] BackendError),
}

/// Owns the guest for its whole life.
pub struct Supervisor {
    guest: Box<dyn Guest>,
    state: State,
    /// Last fraction reported by the guest.
    pub fraction: f64,
    /// Last phase reported by the guest.
    pub phase: Phase,
    /// Furthest phase said so far: only a move past it is logged, so a guest that flips
    /// between phases cannot flood the task's stderr.
    furthest_phase: Phase,
    deadline: Instant,
    suspended_at: Option<Instant>,
    /// Highest guest CPU time read so far: once qemu or the sandbox's cgroup is gone, a read
    /// gives 0, and the client keeps the last number it was told.
    cpu_high_water: std::cell::Cell<f64>,
}

impl Supervisor {
    /// Takes ownership of a started guest. Suspended time does not count against `limit`.
    pub fn new(guest: Box<dyn Guest>, limit: Duration) -> Supervisor {
        tracing::info!(from = ?State::Preparing, to = ?State::Booting, "supervisor");
        Supervisor {
            guest,
            state: State::Booting,
            fraction: 0.0,
            phase: Phase::Boot,
            furthest_phase: Phase::Boot,
            deadline: Instant::now() + limit,
            suspended_at: None,
            cpu_high_water: std::cell::Cell::new(0.0),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    fn transition(&mut self, to: State, why: &str) {
        if self.state != to {
            tracing::info!(from = ?self.state, to = ?to, why, "supervisor");
            self.state = to;
        }
    }

    /// Applies a command; returns the ending when it ends the run.
    pub fn command(&mut self, command: Command) -> Result<Option<Ending>, SupervisorError> {
        match (self.state, command) {
            // Booting --Suspend--> Suspended; Running --Suspend--> Suspended
            (State::Booting | State::Running, Command::Suspend) => {
                self.guest.pause().map_err(SupervisorError::Pause)?;
                self.suspended_at = Some(Instant::now());
                self.transition(State::Suspended, "suspend");
                Ok(None)
            }
            // Suspended --Resume--> Running
            (State::Suspended, Command::Resume) => {
                self.guest.resume().map_err(SupervisorError::Resume)?;
                if let Some(since) = self.suspended_at.take() {
                    self.deadline += since.elapsed();
                }
                self.transition(State::Running, "resume");
                Ok(None)
            }
            // any live state --Quit--> Checkpointing --> Finished: save, then stop.
            (State::Booting | State::Running | State::Suspended, Command::Quit) => {
                if let Err(e) = self.checkpoint() {
                    tracing::warn!(
                        "checkpoint before quitting failed, the task restarts from the last good one: {}",
                        gah_util::error_chain(&e)
                    );
                }
                self.guest.kill().map_err(SupervisorError::Kill)?;
                self.transition(State::Finished, "quit");
                Ok(Some(Ending::Quit))
            }
            // any live state --Abort--> Finished
            (State::Booting | State::Running | State::Suspended, Command::Abort) => {
                self.guest.kill().map_err(SupervisorError::Kill)?;
                self.transition(State::Finished, if command == Command::Quit { "quit" } else { "abort" });
                Ok(Some(if command == Command::Quit { Ending::Quit } else { Ending::Aborted }))
            }
            // Repeated suspend or resume is harmless.
            (State::Suspended, Command::Suspend) | (State::Booting | State::Running, Command::Resume) => Ok(None),
            (state, command) => Err(NotAllowed { command, state }.into()),
        }
    }

    /// Saves the guest (Running/Suspended --> Checkpointing --> back). Returns the checkpoint's
    /// size, or `None` when the backend resumes by phase instead.
    pub fn checkpoint(&mut self) -> Result<Option<u64>, SupervisorError> {
        let back = match self.state {
            State::Running | State::Suspended | State::Booting => self.state,
            state => return Err(NotAllowed { command: Command::Quit, state }.into()),
        };
        self.transition(State::Checkpointing, "checkpoint");
        let result = self.guest.checkpoint(self.fraction);
        self.transition(back, "checkpoint done");
        result.map_err(SupervisorError::Checkpoint)
    }

    /// Waits up to `timeout` for the guest; returns the ending once there is one.
    pub fn poll(&mut self, timeout: Duration) -> Result<Option<Ending>, SupervisorError> {
        if self.state == State::Finished {
            return Err(SupervisorError::Ended);
        }
        if self.state != State::Suspended && Instant::now() >= self.deadline {
            self.guest.kill().map_err(SupervisorError::Kill)?;
            self.transition(State::Finished, "wall-clock limit");
            return Ok(Some(Ending::TimedOut));
        }
        if self.state == State::Suspended {
            std::thread::sleep(timeout);
            return Ok(None);
        }
        // Drain what is already there, so the fraction reported next is the newest: a burst of
        // lines (a restored VM replays its progress log) must not show as old progress.
        // At most so many at a time: a guest that floods progress must not keep the supervisor
        // from its deadline and the client's commands.
        const MOST_EVENTS_A_POLL: usize = 1024;
        let mut event = self.guest.next_event(timeout).map_err(SupervisorError::Events)?;
        let mut drained = 0;
        while let Some(GuestEvent::Progress { fraction, phase }) = event {
            self.fraction = fraction;
            if phase > self.furthest_phase {
                self.furthest_phase = phase;
                tracing::info!(fraction, %phase, "guest progress");
                // For whoever runs gah-app (gah run follows these).
                tracing::info!(target: crate::SAY, "{}", AppReport::Progress { fraction, phase }.to_message());
            }
            self.phase = phase;
            if self.state == State::Booting {
                self.transition(State::Running, "first progress");
            }
            drained += 1;
            if drained == MOST_EVENTS_A_POLL {
                return Ok(None);
            }
            event = self.guest.next_event(Duration::ZERO).map_err(SupervisorError::Events)?;
        }
        match event {
            Some(GuestEvent::Exited { ok, detail }) => {
                self.transition(State::Finished, "guest exited");
                Ok(Some(Ending::GuestExited { ok, detail }))
            }
            Some(GuestEvent::LimitExceeded { limit, detail }) => {
                self.transition(State::Finished, "guest passed a limit");
                tracing::warn!(limit = limit.as_str(), "{detail}");
                Ok(Some(Ending::LimitExceeded { limit, detail }))
            }
            _ => Ok(None),
        }
    }

    /// CPU seconds the guest has used so far (never less than an earlier answer).
    pub fn cpu_seconds(&self) -> f64 {
        let seconds = self.guest.cpu_seconds().max(self.cpu_high_water.get());
        self.cpu_high_water.set(seconds);
        seconds
    }

    /// The guest's host-side log.
    pub fn console_log(&self) -> std::path::PathBuf {
        self.guest.console_log()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test double: a guest whose events and CPU time readings come from a script (CPU 0
    /// once "gone").
    struct ScriptedGuest {
        events: Vec<GuestEvent>,
        cpu: std::cell::RefCell<Vec<f64>>,
    }

    impl Guest for ScriptedGuest {
        fn next_event(&mut self, _: Duration) -> Result<Option<GuestEvent>, BackendError> {
            Ok((!self.events.is_empty()).then(|| self.events.remove(0)))
        }
        fn pause(&mut self) -> Result<(), BackendError> {
            Ok(())
        }
        fn resume(&mut self) -> Result<(), BackendError> {
            Ok(())
        }
        fn checkpoint(&mut self, _: f64) -> Result<Option<u64>, BackendError> {
            Ok(None)
        }
        fn kill(&mut self) -> Result<(), BackendError> {
            Ok(())
        }
        fn cpu_seconds(&self) -> f64 {
            self.cpu.borrow_mut().remove(0)
        }
        fn console_log(&self) -> std::path::PathBuf {
            "console.log".into()
        }
    }

    #[test]
    fn cpu_time_never_falls_when_the_guest_is_gone() {
        let guest = ScriptedGuest { events: vec![], cpu: std::cell::RefCell::new(vec![5.0, 120.0, 0.0, 130.0]) };
        let supervisor = Supervisor::new(Box::new(guest), Duration::from_secs(60));
        let reads: Vec<f64> = (0..4).map(|_| supervisor.cpu_seconds()).collect();
        assert_eq!(reads, [5.0, 120.0, 120.0, 130.0]);
    }

    #[test]
    fn one_poll_takes_a_burst_of_progress_to_its_newest_line() {
        let progress = |fraction: f64, phase: &str| GuestEvent::Progress { fraction, phase: phase.parse().unwrap() };
        let events = vec![progress(0.01, "start"), progress(0.05, "deps"), progress(0.52, "unpack")];
        let mut supervisor = Supervisor::new(Box::new(ScriptedGuest { events, cpu: Default::default() }), Duration::from_secs(60));
        assert_eq!(supervisor.poll(Duration::from_millis(10)).unwrap(), None);
        assert_eq!((supervisor.fraction, supervisor.phase.as_str(), supervisor.state()), (0.52, "unpack", State::Running));
    }
}
