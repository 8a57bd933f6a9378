//! `gah-app`: the program volunteers run, and the guest agent it runs inside the guest.
//!
//! - [`app`]: the BOINC application (`gah-app`): inputs, backend choice, supervision,
//!   outcome archive.
//! - [`supervisor`]: the lifecycle state machine over one guest.
//! - [`backend`]: the [`backend::Backend`] trait and its two implementations,
//!   [`backend::vm`] (qemu) and [`backend::sandbox`] (namespaces).
//! - [`agent`]: the guest agent (`gah-agent`), which runs Portage inside the guest.
//! - [`process`]: the one place that spawns external programs.
//!
//! **Invariants:** the supervisor knows only the `Backend`/`Guest` traits; no guest process
//! outlives `gah-app` (parent-death signals, process groups, `Drop` kills); the guest never
//! gets a network device or a shared folder.

pub mod agent;
pub mod app;
pub mod backend;
pub mod binpkgs;
pub mod init_data;
pub mod process;
pub mod rootfs_archive;
pub mod supervisor;
