//! What BOINC's `script_assimilator` runs: `gah-assimilate`, given nothing but what
//! `script_assimilator` substitutes, and configured by its environment.
//!
//! `script_assimilator --script "NAME WORDS..."` runs `../bin/NAME` followed only by the
//! values of the keywords among WORDS (`files`, `wu_id`, `result_id`, `runtime`; since BOINC
//! 8.0 `batch_id`; since 8.2.0 `wu_name`, `files2`); every other word is dropped, and a
//! one-word script gets `wu_id files`. BOINC 8.2.5 and later (server release 1.6, master)
//! recognise no keyword written in the script line (their `split()` keeps the blank on each
//! word) but still append the defaults, so `--script gah-assimilate` is the line that works on
//! every BOINC server:
//!
//! ```text
//! ../bin/gah-assimilate WU_ID FILE [BINPKGS]              # the canonical result (one-word default)
//! ../bin/gah-assimilate WU_NAME FILE [BINPKGS]            # --script "gah-assimilate wu_name files" (8.2.0-8.2.4)
//! ../bin/gah-assimilate --error MASK WU_NAME WU_ID BATCH  # the workunit failed (BOINC 8.0 and later)
//! ../bin/gah-assimilate --error MASK WU_ID                # the workunit failed (BOINC 7, server 1.4)
//! ```
//!
//! `files` is every output file of the canonical result, in the result template's order: the
//! outcome archive, then the binary packages (`binpkgs.tar`) for workunits made with
//! `templates/gah_out` as it is now. With the project's `binpkgs_dir`, the packages the
//! validator recorded as agreed go into the package store ([`take_binpkgs`]).
//!
//! With `WU_ID`, the workunit's name is read from the upload's physical name, which BOINC
//! makes `<wu_name>_<n>_r<random>_<i>` (before late 2015: `<wu_name>_<n>_<i>`), see
//! [`wu_name_of_upload`]. An old-style `--error` names no workunit: the failure is recorded
//! as `wu#<WU_ID>`.
//!
//! Settings come from the project, not from whoever started the daemon
//! ([`Settings::resolve`], [`gah_core::project`]): the project's `gah.conf` (found from the
//! daemon's working directory `tmp_<host>/` as `../gah.conf`), else `GAH_RESULTS_DB` and
//! `GAH_SNAPSHOT`. With no results database anywhere it refuses, naming all three places,
//! rather than create one under `tmp_<host>/`.
//!
//! ## Exit codes
//!
//! A problem with one result never stops BOINC's daemon (it stops on any nonzero exit): a
//! quarantined archive, a missing canonical upload, an upload whose name names no workunit
//! are recorded (the `quarantine` table, and a log line) and the program exits 0 ([`Done`]).
//! Only what may pass (the database busy, the disk full) or a misconfigured project exits
//! nonzero.

use std::path::{Path, PathBuf};

use gah_core::db::{Database, DbError, Recorded, NO_SNAPSHOT};
use gah_core::project::{Overrides, ProjectError};

use crate::{AssimilateError, Assimilated};

/// Where the assimilator writes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The results database.
    pub db: PathBuf,
    /// The tree snapshot label the outcomes belong to (`None`: snapshot 0).
    pub snapshot: Option<String>,
    /// The repository metadata and profile failures are localised over (`gah.conf`'s
    /// `localise_repo`, `localise_profile`); `None`: no localisation.
    pub localise: Option<(PathBuf, Option<PathBuf>)>,
    /// The project's `binpkgs_dir`: where the validator records agreed packages and the
    /// package store is ([`crate::binpkgs`]); `None`: no package is stored.
    pub binpkgs_dir: Option<PathBuf>,
}

/// The project's localisation settings (`localise_repo`, `localise_profile`).
pub fn localise_of(r: &gah_core::project::Resolved) -> Option<(PathBuf, Option<PathBuf>)> {
    r.localise_repo.clone().map(|repo| (repo, r.localise_profile.clone()))
}

impl Settings {
    /// The results database and snapshot from `over`, the project file, then the
    /// environment ([`gah_core::project::resolve_here`]); an error naming every place when
    /// no results database is configured.
    pub fn resolve(over: &Overrides) -> Result<Settings, ProjectError> {
        let r = gah_core::project::resolve_here(over)?;
        Ok(Settings {
            db: r.require_results_db()?.to_owned(),
            snapshot: r.snapshot.clone(),
            localise: localise_of(&r),
            binpkgs_dir: r.binpkgs_dir.clone(),
        })
    }

    fn open(&self) -> Result<(Database, gah_core::db::SnapshotId), DbError> {
        let mut db = Database::open(&self.db)?;
        let snapshot = match &self.snapshot {
            Some(label) => db.snapshot(label)?,
            None => NO_SNAPSHOT,
        };
        Ok((db, snapshot))
    }
}

/// What `script_assimilator` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Store the canonical result of a workunit.
    Result {
        /// The workunit's name (given, or read from the upload's name).
        wu_name: String,
        /// The canonical result's outcome archive.
        file: PathBuf,
        /// Its binary packages upload, when the result template names one (uploaded or not).
        binpkgs: Option<PathBuf>,
    },
    /// A canonical result whose upload's name names no workunit (see
    /// [`wu_name_of_upload`]): recorded in quarantine as `wu#<WU_ID>`.
    Unnamed {
        /// The workunit's id.
        wu_id: i64,
        /// The upload.
        file: PathBuf,
    },
    /// The workunit failed as a whole (no canonical result).
    Failed {
        /// BOINC's error mask.
        mask: i64,
        /// The workunit's name (BOINC 8.0 and later pass it).
        wu_name: Option<String>,
        /// The workunit's id.
        wu_id: i64,
        /// The batch id (0 when BOINC passes none).
        batch_id: i64,
    },
}

/// The arguments are not what `script_assimilator` passes.
#[derive(Debug, thiserror::Error)]
#[error("bad command line `{got}`: {why}")]
pub struct ArgsError {
    got: String,
    why: String,
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Reads `script_assimilator`'s arguments (see the module docs for the forms).
pub fn parse_args(args: &[String]) -> Result<Call, ArgsError> {
    let err = |why: &str| ArgsError { got: args.join(" "), why: why.to_owned() };
    let int = |s: &String, what: &str| s.parse::<i64>().map_err(|_| err(&format!("{what} `{s}` is not an integer")));
    match args {
        [flag, mask, rest @ ..] if flag == "--error" => {
            let mask = int(mask, "MASK")?;
            match rest {
                [wu_id] => Ok(Call::Failed { mask, wu_name: None, wu_id: int(wu_id, "WU_ID")?, batch_id: 0 }),
                [wu_name, wu_id, batch] => Ok(Call::Failed {
                    mask,
                    wu_name: Some(wu_name.clone()),
                    wu_id: int(wu_id, "WU_ID")?,
                    batch_id: int(batch, "BATCH_ID")?,
                }),
                _ => Err(err("with --error, expected MASK WU_NAME WU_ID BATCH_ID or MASK WU_ID")),
            }
        }
        // `files` is every output file of the result template, in order: the outcome
        // archive, then (templates/gah_out) the binary packages.
        [wu, file, rest @ ..] if rest.len() <= 1 => {
            let file = PathBuf::from(file);
            let binpkgs = rest.first().map(PathBuf::from);
            if !is_id(wu) {
                return Ok(Call::Result { wu_name: wu.clone(), file, binpkgs });
            }
            Ok(match wu_name_of_upload(&file) {
                Some(wu_name) => Call::Result { wu_name: wu_name.to_owned(), file, binpkgs },
                None => Call::Unnamed { wu_id: int(wu, "WU_ID")?, file },
            })
        }
        _ => Err(err("expected WU_ID FILE [BINPKGS] (--script gah-assimilate), WU_NAME FILE [BINPKGS], or --error MASK ...")),
    }
}

/// The workunit an upload belongs to, from its physical name: BOINC names output files
/// `<result_name>_r<random>_<i>` (`tools/backend_lib.cpp`, `create_result`; before late 2015
/// `<result_name>_<i>`) and results `<wu_name>_<n>`. `None` when the name has neither form.
pub fn wu_name_of_upload(path: &Path) -> Option<&str> {
    fn strip_number<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
        let (head, tail) = s.rsplit_once('_')?;
        let digits = tail.strip_prefix(prefix)?;
        is_id(digits).then_some(head)
    }
    let name = path.file_name()?.to_str()?;
    let result = strip_number(name, "")?; // _<i>
    let result = strip_number(result, "r").unwrap_or(result); // _r<random>, since 2015
    let wu = strip_number(result, "")?; // _<n>
    (!wu.is_empty()).then_some(wu)
}

/// What one call did: always exit 0 (the line is logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done(pub String);

/// Does what `script_assimilator` asked: stores the result, quarantines it, or records the
/// failure. An error is transient or a misconfiguration: exit nonzero.
pub fn perform(settings: &Settings, call: &Call) -> Result<Done, AssimilateError> {
    let Done(line) = store(settings, call)?;
    Ok(Done(match localise(settings)? {
        Some(said) => format!("{line}; {said}"),
        None => line,
    }))
}

/// With `settings.localise`, moves the localisations on past what was stored
/// ([`crate::localise::catch_up`]); what it did, when it did something. Run after the row is
/// durable: a crash in between loses nothing, the next call takes the step. Without it, the
/// step's marks move past what was stored, so turning localisation on later starts from
/// then rather than localising every failure since.
pub fn localise(settings: &Settings) -> Result<Option<String>, AssimilateError> {
    let mut db = Database::open(&settings.db)?;
    let Some((repo, profile)) = &settings.localise else {
        db.skip_localisation()?;
        return Ok(None);
    };
    let ebuilds = match crate::localise::MetadataDir::open(repo, profile.as_deref()) {
        Ok(e) => e,
        // Taken again with the next result, once the folder is whole.
        Err(why) => return Ok(Some(format!("localisation not moved on: {why}"))),
    };
    let cfg = crate::localise::Config {
        ebuilds: &ebuilds,
        compilers: &gah_core::job::Compiler::ALL,
        settings: gah_localise::Settings::default(),
    };
    match crate::localise::catch_up(&mut db, &cfg) {
        Ok(s) if s == crate::localise::Stepped::default() => Ok(None),
        Ok(s) => Ok(Some(format!("localisation: {s}"))),
        // The database busy past its timeout passes: exit nonzero, as for storing.
        Err(crate::localise::StepError::Db(e)) if e.is_busy() => Err(AssimilateError::Db(e)),
        // The result is stored; anything else is said on the log line and taken again with
        // the next result, rather than stopping BOINC's daemon for every later workunit.
        Err(e) => Ok(Some(format!("localisation not moved on: {}", gah_util::error_chain(&e)))),
    }
}

/// Stores what the call brings, without the localisation step.
fn store(settings: &Settings, call: &Call) -> Result<Done, AssimilateError> {
    match call {
        Call::Result { wu_name, file, binpkgs } => match assimilate_result(settings, wu_name, file) {
            Ok(done @ Assimilated::Stored(_)) => {
                let packages = match (binpkgs, &settings.binpkgs_dir) {
                    (Some(upload), Some(dir)) => format!("; {}", take_binpkgs(upload, dir)),
                    _ => String::new(),
                };
                Ok(Done(format!("{wu_name}: {done}{packages}")))
            }
            Ok(done) => Ok(Done(format!("{wu_name}: {done}"))),
            // BOINC will not make a missing canonical upload appear: recorded, not retried.
            Err(AssimilateError::Read(e)) if crate::is_missing(&e) => {
                let reason = gah_validator::one_line(&gah_util::error_chain(&e));
                let (mut db, _) = settings.open()?;
                let recorded = db.record_quarantine(wu_name, &file.to_string_lossy(), None, &reason)?;
                Ok(Done(format!("{wu_name}: {}", Assimilated::Quarantined { reason, recorded })))
            }
            Err(e) => Err(e),
        },
        Call::Unnamed { wu_id, file } => {
            let name = format!("wu#{wu_id}");
            let reason =
                format!("{}: the upload's name is not BOINC's `<wu_name>_<n>_r<random>_<i>`, so it names no workunit", file.display());
            let (mut db, _) = settings.open()?;
            let recorded = db.record_quarantine(&name, &file.to_string_lossy(), None, &reason)?;
            Ok(Done(format!("{name}: {}", Assimilated::Quarantined { reason, recorded })))
        }
        Call::Failed { mask, wu_name, wu_id, batch_id } => {
            let (name, recorded) = record_failed(settings, *mask, wu_name.as_deref(), *wu_id, *batch_id)?;
            let what = match recorded {
                Recorded::Inserted => "recorded",
                Recorded::AlreadyPresent => "already recorded",
            };
            Ok(Done(format!("{name}: infrastructure failure (error mask {mask:#x}) {what}")))
        }
    }
}

/// Moves the canonical result's packages that the validator recorded as agreed
/// (`gah_validator::agreed`) into the project's package store ([`crate::binpkgs`]); what it
/// did, or why not, for the log line. The outcome is stored already and is what the
/// workunit is for: a package that cannot be stored is said, never a reason to stop BOINC's
/// daemon (the packages are built again by a later job).
pub fn take_binpkgs(upload: &Path, binpkgs_dir: &Path) -> String {
    // The validator's file: nothing recorded yet is nothing agreed (and not made here).
    if !binpkgs_dir.join(gah_validator::agreed::FILE_NAME).is_file() {
        return "no binary packages agreed".to_owned();
    }
    let agreed = match gah_validator::agreed::Agreed::open(binpkgs_dir) {
        Ok(record) => record.of(upload).map_err(|e| gah_util::error_chain(&e)),
        Err(e) => Err(gah_util::error_chain(&e)),
    };
    let agreed = match agreed {
        Ok(agreed) if agreed.is_empty() => return "no binary packages agreed".to_owned(),
        Ok(agreed) => agreed,
        Err(why) => return format!("binary packages not stored: {why}"),
    };
    let store = binpkgs_dir.join(crate::binpkgs::STORE);
    match crate::binpkgs::store_agreed(upload, &agreed, &store, &binpkgs_dir.join(crate::binpkgs::STAGING)) {
        Ok(stored) => stored.to_string(),
        Err(e) => format!("binary packages not stored: {}", gah_util::error_chain(&e)),
    }
}

/// Stores the canonical result `file` of workunit `wu_name` ([`crate::assimilate_at`]).
pub fn assimilate_result(settings: &Settings, wu_name: &str, file: &Path) -> Result<Assimilated, AssimilateError> {
    let (mut db, snapshot) = settings.open()?;
    crate::assimilate_at(&mut db, snapshot, wu_name, file)
}

/// Records that workunit `wu_name` (or `wu#<wu_id>` when BOINC gave no name) failed as a
/// whole ([`crate::record_error`]). The work generator's rotation reads it from the results
/// database (as an infrastructure error of the job [`gah_core::job::job_id_of_wu`] names).
pub fn record_failed(
    settings: &Settings,
    mask: i64,
    wu_name: Option<&str>,
    wu_id: i64,
    batch_id: i64,
) -> Result<(String, Recorded), DbError> {
    let name = wu_name.map_or_else(|| format!("wu#{wu_id}"), str::to_owned);
    let mut db = Database::open(&settings.db)?;
    let recorded = crate::record_error(&mut db, mask, &name, wu_id, batch_id)?;
    Ok((name, recorded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_names_its_workunit() {
        for (file, wu) in [
            ("/p/upload/1f/app-arch_bzip2-1.0.8-gcc-0123456789ab_3_0_r1804289383_0", Some("app-arch_bzip2-1.0.8-gcc-0123456789ab_3")),
            ("wu_a_1_r7_0", Some("wu_a")),
            ("old_wu_2_0", Some("old_wu")),
            ("outcome.tar.gz", None),
            ("_0_r1_0", None),
        ] {
            assert_eq!(wu_name_of_upload(Path::new(file)), wu, "{file}");
        }
    }

    #[test]
    fn every_form_script_assimilator_passes_parses() {
        let args = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            parse_args(&args("42 /u/wu_a_1_r9_0")).unwrap(),
            Call::Result { wu_name: "wu_a".into(), file: "/u/wu_a_1_r9_0".into(), binpkgs: None }
        );
        assert_eq!(parse_args(&args("wu_b /u/x")).unwrap(), Call::Result { wu_name: "wu_b".into(), file: "/u/x".into(), binpkgs: None });
        assert_eq!(
            parse_args(&args("--error 4 wu_c 42 7")).unwrap(),
            Call::Failed { mask: 4, wu_name: Some("wu_c".into()), wu_id: 42, batch_id: 7 }
        );
        assert_eq!(parse_args(&args("--error 4 42")).unwrap(), Call::Failed { mask: 4, wu_name: None, wu_id: 42, batch_id: 0 });
        assert_eq!(parse_args(&args("42 /u/outcome.tar.gz")).unwrap(), Call::Unnamed { wu_id: 42, file: "/u/outcome.tar.gz".into() });
        // Both output files of templates/gah_out: the outcome archive is the first.
        assert_eq!(
            parse_args(&args("42 /u/wu_a_1_r9_0 /u/wu_a_1_r9_1")).unwrap(),
            Call::Result { wu_name: "wu_a".into(), file: "/u/wu_a_1_r9_0".into(), binpkgs: Some("/u/wu_a_1_r9_1".into()) }
        );
        for bad in ["only-one", "--error x 1", "--error 1 a b", "a b c d"] {
            assert!(parse_args(&args(bad)).is_err(), "{bad}");
        }
    }
}
