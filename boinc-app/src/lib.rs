//! `gah-app`: the program volunteers run, on their host. What runs inside the guest is the
//! `gah-guest` crate (`gah-agent`); what crosses between them is typed in `gah_core`.
//!
//! - [`app`]: the BOINC application (`gah-app`): inputs, supervision, outcome archive.
//! - [`supervisor`]: the lifecycle state machine over one guest.
//! - [`backend`]: the [`backend::Backend`] trait, its two implementations,
//!   [`backend::vm`] (qemu) and [`backend::sandbox`] (namespaces), and the choice between them.
//!
//! Programs are spawned, files written durably and tars unpacked through `gah_util`.
//!
//! **Invariants:** the app and the supervisor know only the `Backend`/`Guest` traits (only
//! [`backend::choose`] names the backends); no guest process outlives `gah-app` (parent-death
//! signals, process groups, `Drop` kills); the guest never gets a network device or a shared
//! folder.

pub mod app;
pub mod backend;
pub mod data_plane;
pub mod init_data;
pub mod rootfs_archive;
pub mod supervisor;

/// The tracing target of what the app says to the volunteer (its stderr is the task's
/// `stderr.txt`). The `gah-app` binary prints these events as plain `gah-app: …` lines, which
/// `gah run` and the real-client tests look for.
pub const SAY: &str = "gah-app";
