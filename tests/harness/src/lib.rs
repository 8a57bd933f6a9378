//! `gah-boinc-harness`: a **test harness** that lets the integration tests run gentoo@home's
//! `gah-app` under Debian's real BOINC client, end to end, on 127.0.0.1 only. Product code
//! never depends on this crate.
//!
//! - [`server::Harness`] plays just enough of a BOINC project's server side: the master page,
//!   the scheduler RPC (`scheduler_request` → `scheduler_reply` with `app`, `file_info`,
//!   `workunit`, `result`, `result_ack`, `request_delay`, `message`), file download (with
//!   `Range`), and the upload handler protocol (`get_file_size`, `file_upload`). When the
//!   client reports a result it runs `gah_validator::init` (and `compare` once a quorum of two
//!   or more is valid) and `gah_assimilator::assimilate` into `results/results.sqlite`, like
//!   BOINC's `script_validator`/`script_assimilator` would with the `gah-*` binaries.
//!   Only anonymous platform is supported (the client's `app_info.xml` provides the app).
//! - [`client::Client`] runs `/usr/bin/boinc` in a private `--dir`, attached through an
//!   account file, and talks to it with `boinccmd`; dropping it kills the client, its app and
//!   any guest, so no qemu outlives a test, even a failing one.
//!
//! ```no_run
//! use gah_boinc_harness::{client::{Client, ClientConfig}, server::{Harness, HarnessConfig, WorkunitSpec}};
//! # fn job() -> gah_core::job::Job { unimplemented!() }
//! let tmp = std::path::Path::new("/tmp/x");
//! let harness = Harness::start(HarnessConfig::new(&tmp.join("server"))).unwrap();
//! let results = harness.add_workunit(WorkunitSpec::new("wu1", job())).unwrap();
//! let mut config = ClientConfig::new(&tmp.join("client"), &harness.master_url(), harness.authenticator());
//! config.write().unwrap();
//! // ... put app_info.xml and the app files into config.project_dir() ...
//! let client = Client::start(&config).unwrap();
//! let snap = harness.wait_until(std::time::Duration::from_secs(600), |s| s.outcome("wu1") != gah_boinc_harness::server::WuOutcome::Pending).unwrap();
//! # drop((client, snap, results));
//! ```

pub mod client;
pub mod server;
pub mod xml;
