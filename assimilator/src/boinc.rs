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
//! ../bin/gah-assimilate WU_ID FILE                        # the canonical result (one-word default)
//! ../bin/gah-assimilate WU_NAME FILE                      # --script "gah-assimilate wu_name files" (8.2.0-8.2.4)
//! ../bin/gah-assimilate --error MASK WU_NAME WU_ID BATCH  # the workunit failed (BOINC 8.0 and later)
//! ../bin/gah-assimilate --error MASK WU_ID                # the workunit failed (BOINC 7, server 1.4)
//! ```
//!
//! With `WU_ID`, the workunit's name is read from the upload's physical name, which BOINC
//! makes `<wu_name>_<n>_r<random>_<i>` (before late 2015: `<wu_name>_<n>_<i>`), see
//! [`wu_name_of_upload`]. An old-style `--error` names no workunit: the failure is recorded
//! as `wu#<WU_ID>` and the work generator's rotation is not told.
//!
//! Settings come from the environment ([`Settings::from_env`]): `GAH_RESULTS_DB`,
//! `GAH_SNAPSHOT`, `GAH_QUEUE_DIR`.

use std::path::{Path, PathBuf};

use gah_core::db::{Database, DbError, Recorded, NO_SNAPSHOT};
use gah_core::outcome::Status;

use crate::{AssimilateError, Assimilated};

/// Where the assimilator writes.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The results database.
    pub db: PathBuf,
    /// The tree snapshot label the outcomes belong to (`None`: snapshot 0).
    pub snapshot: Option<String>,
    /// The work generator's queue folder, whose rotation newly stored outcomes update.
    pub queue: Option<PathBuf>,
}

impl Settings {
    /// `$GAH_RESULTS_DB` (else [`crate::default_db_path`]), `$GAH_SNAPSHOT`, `$GAH_QUEUE_DIR`;
    /// empty values count as unset.
    pub fn from_env() -> Settings {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Settings {
            db: crate::default_db_path(),
            snapshot: var("GAH_SNAPSHOT").map(|v| v.to_string_lossy().into_owned()),
            queue: var("GAH_QUEUE_DIR").map(PathBuf::from),
        }
    }

    fn open(&self) -> Result<(Database, i64), DbError> {
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
        /// The canonical result's output file.
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
        [wu, file] => {
            let file = PathBuf::from(file);
            let wu_name = if is_id(wu) {
                wu_name_of_upload(&file)
                    .ok_or_else(|| err("the upload's name is not BOINC's `<wu_name>_<n>_r<random>_<i>`, so it names no workunit"))?
                    .to_owned()
            } else {
                wu.clone()
            };
            Ok(Call::Result { wu_name, file })
        }
        _ => Err(err("expected WU_ID FILE (--script gah-assimilate), WU_NAME FILE, or --error MASK ...")),
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

/// Stores the canonical result `file` of workunit `wu_name` ([`crate::assimilate_at`]) and,
/// for a newly stored outcome, updates the rotation. Returns what was done and the
/// rotation's log line, if any.
pub fn assimilate_result(settings: &Settings, wu_name: &str, file: &Path) -> Result<(Assimilated, Option<String>), AssimilateError> {
    let (mut db, snapshot) = settings.open()?;
    let done = crate::assimilate_at(&mut db, snapshot, wu_name, file)?;
    let rotation = match (&settings.queue, &done) {
        (Some(queue), Assimilated::Stored(Recorded::Inserted)) => Some(match db.stored_job(wu_name, snapshot)? {
            // The row is durable; its job and status feed the rotation.
            Some((job_id, status)) => match status.parse::<Status>() {
                Ok(status) => crate::update_rotation(queue, &job_id, status),
                Err(e) => format!("rotation not updated for {job_id} (ignored): {e}"),
            },
            None => format!("rotation not updated for {wu_name} (ignored): the row just stored is not there"),
        }),
        _ => None,
    };
    Ok((done, rotation))
}

/// Records that workunit `wu_name` (or `wu#<wu_id>` when BOINC gave no name) failed as a
/// whole ([`crate::record_error`]) and, when newly recorded and named, tells the rotation of
/// its job ([`gah_core::job::job_id_of_wu`]) as an infrastructure error.
pub fn record_failed(
    settings: &Settings,
    mask: i64,
    wu_name: Option<&str>,
    wu_id: i64,
    batch_id: i64,
) -> Result<(String, Recorded, Option<String>), DbError> {
    let name = wu_name.map_or_else(|| format!("wu#{wu_id}"), str::to_owned);
    let mut db = Database::open(&settings.db)?;
    let recorded = crate::record_error(&mut db, mask, &name, wu_id, batch_id)?;
    let rotation = match (&settings.queue, wu_name, recorded) {
        (Some(queue), Some(wu), Recorded::Inserted) => {
            Some(crate::update_rotation(queue, gah_core::job::job_id_of_wu(wu), Status::InfraError))
        }
        _ => None,
    };
    Ok((name, recorded, rotation))
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
        assert_eq!(parse_args(&args("42 /u/wu_a_1_r9_0")).unwrap(), Call::Result { wu_name: "wu_a".into(), file: "/u/wu_a_1_r9_0".into() });
        assert_eq!(parse_args(&args("wu_b /u/x")).unwrap(), Call::Result { wu_name: "wu_b".into(), file: "/u/x".into() });
        assert_eq!(
            parse_args(&args("--error 4 wu_c 42 7")).unwrap(),
            Call::Failed { mask: 4, wu_name: Some("wu_c".into()), wu_id: 42, batch_id: 7 }
        );
        assert_eq!(parse_args(&args("--error 4 42")).unwrap(), Call::Failed { mask: 4, wu_name: None, wu_id: 42, batch_id: 0 });
        for bad in ["42 /u/outcome.tar.gz", "only-one", "--error x 1", "--error 1 a b", "a b c"] {
            assert!(parse_args(&args(bad)).is_err(), "{bad}");
        }
    }
}
