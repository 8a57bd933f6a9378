//! The bug-report bundle for one failure, in the form Gentoo's bugzilla asks for: a summary
//! line (`cat/pkg-ver: fails to compile with USE="…" (clang)`), a comment (what failed, how
//! to reproduce, the build log's excerpt, `emerge --info`) and the attachments. `gah results
//! bug` prints and writes it; the web page's cell page shows it, ready to paste.

use std::fmt::Write as _;

use gah_core::db::{BlobId, Database, LocalisationState, StoredLocalisation, StoredOutcome};
use gah_core::job::split_cpv;
use gah_core::localisation::{Cause, Conclusion};
use gah_core::outcome::Status;

use crate::wire;
use crate::QaError;

/// A bug report and the files it attaches.
#[derive(Debug)]
pub struct BugReport {
    /// The report (also its JSON form).
    pub doc: wire::Bug,
    /// The whole build log.
    pub log: Vec<u8>,
    /// `emerge --info`, when the upload had it.
    pub emerge_info: Option<Vec<u8>>,
}

impl BugReport {
    /// The report as one text: the summary line, then the comment.
    pub fn text(&self) -> String {
        format!("Summary: {}\n\n{}", self.doc.summary, self.doc.comment)
    }
}

/// `status` or `status (phase)`: a cell's state in a few words.
pub fn status_text(r: &StoredOutcome) -> String {
    match (&r.failed_phase, r.status) {
        (Some(p), Status::BuildFailed | Status::Timeout) => format!("{} ({p})", r.status),
        _ => r.status.to_string(),
    }
}

/// True when a cell in this state is worth a bug against its own package.
pub fn is_reportable(status: Status) -> bool {
    status.is_own_failure() || status == Status::Timeout
}

/// `fails to compile`, `fails tests`, ...: the summary's verb for a failure.
fn failure_verb(r: &StoredOutcome) -> String {
    match (r.status, r.failed_phase.as_deref()) {
        (Status::TestFailed, _) => "fails tests".into(),
        (Status::BuildFailed, Some(p)) if p != "build" => format!("fails to {p}"),
        (Status::Timeout, Some(p)) => format!("times out in {p}"),
        _ => "fails to build".into(),
    }
}

/// The report for the failure `r`, naming the other failing cells `also` of the same
/// package beside it. Refuses a row that is not a failure of its own package, saying where
/// to look instead.
pub fn report(db: &Database, r: &StoredOutcome, also: &[&StoredOutcome]) -> Result<BugReport, QaError> {
    refuse_unreportable(db, r)?;
    report_with_log(db, r, also, db.read_blob(r.log.sha256())?)
}

/// [`report`] with `r`'s build log already read (a page that shows its excerpt read it):
/// a log is decompressed and hashed once a request.
pub fn report_with_log(db: &Database, r: &StoredOutcome, also: &[&StoredOutcome], log: Vec<u8>) -> Result<BugReport, QaError> {
    refuse_unreportable(db, r)?;
    let info = r.emerge_info.as_ref().map(|b| db.read_blob(b.sha256())).transpose()?;
    report_body(db, r, also, log, info)
}

/// A refusal naming where to look instead, unless `r` fails on its own.
pub fn refuse_unreportable(db: &Database, r: &StoredOutcome) -> Result<(), QaError> {
    if !is_reportable(r.status) {
        return Err(QaError::Refused(if r.status == Status::DepsFailed {
            format!(
                "{} does not fail on its own here: a dependency failed ({}); file the bug against that package",
                r.cell.cpv,
                db.failed_dependency(r)
            )
        } else {
            format!("no failure of {} to report: this cell's outcome is {}", r.cell.cpv, r.status)
        }));
    }
    Ok(())
}

fn report_body(
    db: &Database,
    r: &StoredOutcome,
    also: &[&StoredOutcome],
    log: Vec<u8>,
    info: Option<Vec<u8>>,
) -> Result<BugReport, QaError> {
    let log_text = String::from_utf8_lossy(&log);
    let use_flags = r.cell.use_flags.to_package_use();
    let use_part = if use_flags.is_empty() { String::new() } else { format!(" with USE=\"{use_flags}\"") };
    let localisation = localisation_of(db, r)?;
    let cause = localisation.as_ref().and_then(|(l, _)| l.conclusion.as_ref()).and_then(|c| c.cause());
    let summary = match cause {
        // The minimal failing set, in Gentoo's form, instead of the whole configuration.
        Some(cause) => format!("{}: {}", r.cell.cpv, localised_summary(&failure_verb(r), cause)),
        None => format!("{}: {}{use_part} ({})", r.cell.cpv, failure_verb(r), r.cell.compiler),
    };

    let mut c = String::new();
    let _ = writeln!(c, "{} {} when built with {}{}.", r.cell.cpv, failure_verb(r), r.cell.compiler, use_part);
    let _ = writeln!(
        c,
        "Found by gentoo@home: workunit {}, tree snapshot {}, assimilated {}, {} backend ({}).",
        r.wu_name, r.snapshot_label, r.assimilated_at, r.backend, r.accelerator
    );
    let _ = writeln!(c, "Result: {} in phase {}: {}", r.status, r.failed_phase.as_deref().unwrap_or("-"), r.summary);
    if !r.failing_tests.is_empty() {
        let _ = writeln!(c, "\nFailing tests:");
        for t in &r.failing_tests {
            let _ = writeln!(c, "  {t}");
        }
    }
    if let Some((l, by_cause)) = &localisation {
        localisation_comment(&mut c, r, l, *by_cause);
    }
    let (cc, cxx) = r.cell.compiler.cc_cxx();
    let cp = split_cpv(&r.cell.cpv).map_or(r.cell.cpv.as_str(), |(cp, _)| cp);
    // A command line people paste as root, built from an upload's names: quoted as words.
    let entry = gah_util::shell::quote(&format!("{cp} {use_flags}"));
    let _ = writeln!(c, "\nReproduce:\n  echo {entry} >> /etc/portage/package.use/gah");
    let _ = writeln!(c, "  CC={cc} CXX={cxx} emerge --oneshot {}", gah_util::shell::word(&format!("={}", r.cell.cpv)));
    if !also.is_empty() {
        let _ = writeln!(c, "\nAlso fails with:");
        for o in also {
            let _ = writeln!(c, "  USE=\"{}\" {}: {}", o.cell.use_flags.to_package_use(), o.cell.compiler, status_text(o));
        }
    }
    // Cut megabyte lines: bugzilla takes at most 65,535 characters a comment, and the whole
    // log is attached anyway.
    let excerpt = crate::text::visible_lines(&gah_core::buildlog::excerpt(&log_text));
    let _ = writeln!(c, "\nBuild log excerpt (full log attached):\n{excerpt}");
    let info_text = info.as_deref().map(|i| String::from_utf8_lossy(i).into_owned());
    match &info_text {
        Some(i) => {
            let _ = writeln!(c, "emerge --info ={}:\n{}", r.cell.cpv, i.trim_end());
        }
        None => {
            let _ = writeln!(c, "emerge --info: not in the uploaded archive");
        }
    }
    let attachment = |name, bytes: &[u8], blob: &BlobId| wire::Attachment {
        name,
        bytes: bytes.len(),
        sha256: blob.sha256().to_owned(),
        stored: blob.relative_path(),
        content_type: "text/plain",
    };
    let mut attachments = vec![attachment("build.log", &log, &r.log)];
    if let (Some(i), Some(blob)) = (&info, &r.emerge_info) {
        attachments.push(attachment("emerge-info.txt", i, blob));
    }
    let _ = writeln!(c, "\nAttachments:");
    for a in &attachments {
        let _ = writeln!(c, "  {} ({} bytes, sha256 {})", a.name, a.bytes, a.sha256);
    }
    let doc = wire::Bug {
        summary,
        comment: c,
        seq: r.seq,
        cpv: r.cell.cpv.clone(),
        repo: r.cell.repo.clone(),
        use_flags,
        compiler: r.cell.compiler,
        status: r.status,
        failed_phase: r.failed_phase.clone(),
        failing_tests: r.failing_tests.clone(),
        wu_name: r.wu_name.clone(),
        snapshot: r.snapshot_label.clone(),
        excerpt,
        emerge_info: info_text,
        attachments,
        also_fails: also.iter().map(|o| wire::CellState::from(*o)).collect(),
        written_to: None,
        localisation: localisation.as_ref().map(|(l, by_cause)| wire::Localisation::new(l, *by_cause)),
    };
    Ok(BugReport { doc, log, emerge_info: info })
}

/// The localisation that speaks for the failing row `r`: its cell's own (the newest) once
/// done, else a finished one of another failing cell of the same ebuild, with the same
/// status, whose cause `r`'s configuration shows (then `true`: localised by cause), else its
/// cell's own still running.
pub fn localisation_of(db: &Database, r: &StoredOutcome) -> Result<Option<(StoredLocalisation, bool)>, QaError> {
    let own = db.cell_localisation(&r.cell)?;
    if let Some(own) = own.as_ref().filter(|l| l.state == LocalisationState::Done) {
        return Ok(Some((own.clone(), false)));
    }
    if let Some(by_cause) = db.localisation_explaining(r)? {
        return Ok(Some((by_cause, true)));
    }
    Ok(own.map(|l| (l, false)))
}

/// `fails to compile with USE="foo" (clang only)`, `fails tests with clang`, `fails to
/// compile`: the summary's words for a failure localised to `cause`.
pub fn localised_summary(verb: &str, cause: &Cause) -> String {
    match (cause.flags.is_empty(), cause.compiler) {
        (true, None) => verb.to_owned(),
        (true, Some(c)) => format!("{verb} with {c}"),
        (false, _) => format!("{verb} with {cause}"),
    }
}

/// The comment's paragraph on the localisation `l` of the failure `r`: the minimal failing
/// set (or why there is none) and the evidence, one configuration a line.
fn localisation_comment(c: &mut String, r: &StoredOutcome, l: &StoredLocalisation, by_cause: bool) {
    let Some(conclusion) = &l.conclusion else {
        let _ = writeln!(c, "\nLocalisation: still running ({} follow-up builds so far).", l.evidence.runs.len());
        return;
    };
    let evidence = conclusion.evidence();
    match conclusion {
        Conclusion::Localised { cause, .. } => {
            let _ = writeln!(
                c,
                "\nMinimal failing set: {cause}{} (localised by gentoo@home with {} follow-up builds: every configuration \
                 showing it failed, and leaving out any one of its values made the build pass).",
                if cause.any_compiler_unsaid() { ", any compiler" } else { "" },
                evidence.runs.len()
            );
        }
        Conclusion::Flaky { .. } => {
            let _ = writeln!(c, "\nNot reproduced: the same configuration passed when built again (flaky); not localised.");
        }
        Conclusion::Inconclusive { why, .. } => {
            let _ = writeln!(c, "\nLocalisation inconclusive: {why}.");
        }
    }
    if by_cause {
        let _ = writeln!(
            c,
            "(Localised from the failure with USE=\"{}\" {}, which {} shares.)",
            l.cell.use_flags.to_package_use(),
            l.cell.compiler,
            r.cell.cpv
        );
    }
    let _ = writeln!(c, "Configurations built to find it, in order (outcomes of {} other configurations were known):", evidence.known);
    for run in &evidence.runs {
        let _ = writeln!(c, "  {run}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gah_core::job::Compiler;
    use gah_core::localisation::Verdict;

    #[test]
    fn the_summary_names_the_minimal_set_in_gentoos_form() {
        let cause = |flags: &[(&str, bool)], compiler| Cause { flags: flags.iter().map(|(f, v)| (f.to_string(), *v)).collect(), compiler };
        let verb = "fails to compile";
        assert_eq!(
            localised_summary(verb, &cause(&[("foo", true)], Some(Compiler::Clang))),
            r#"fails to compile with USE="foo" (clang only)"#
        );
        assert_eq!(
            localised_summary(verb, &cause(&[("static-libs", false), ("threads", true)], None)),
            r#"fails to compile with USE="-static-libs threads""#
        );
        assert_eq!(localised_summary("fails tests", &cause(&[], Some(Compiler::Clang))), "fails tests with clang");
        assert_eq!(localised_summary(verb, &cause(&[], None)), "fails to compile");
    }

    /// Issue 13: a stored localisation reaches the bug (summary, comment) and the cell page,
    /// also for another failing cell whose configuration shows the cause.
    #[test]
    fn a_localised_failure_shows_on_the_bug_and_the_cell_page() {
        use gah_core::db::{Filter, LocalisationProgress, Page};
        use gah_core::job::{Job, UseAssignment};
        use gah_core::localisation::{Evidence, Run};
        use gah_core::outcome::Outcome;
        let mut db = Database::temp().unwrap();
        fn put(db: &mut Database, flags: &str, compiler: Compiler, status: Status) -> Job {
            let job = Job::new("gah", "app-misc/foo-1", UseAssignment::from_package_use(flags).unwrap(), compiler, 60);
            let mut o = Outcome::for_job(&job, status);
            o.failed_phase = (status == Status::BuildFailed).then(|| "compile".to_owned());
            db.record_outcome(&job.job_id, &o, b"cc: error: nope\n").unwrap();
            job
        }
        let failing = put(&mut db, "a b", Compiler::Clang, Status::BuildFailed);
        put(&mut db, "-a -b", Compiler::Clang, Status::Success);
        let other = put(&mut db, "-a b", Compiler::Clang, Status::BuildFailed);
        let rows = db.latest(&Filter::default(), Page::ALL).unwrap();
        let row = |job: &gah_core::job::Job| rows.iter().find(|r| r.job_id == job.job_id).unwrap().clone();
        let run = |j: &gah_core::job::Job, status| Run {
            use_flags: j.use_flags.clone(),
            compiler: j.compiler,
            status,
            verdict: Verdict::of(status, Status::BuildFailed),
        };
        let evidence = Evidence {
            failing: run(&failing, Status::BuildFailed),
            known: 1,
            runs: vec![run(&failing, Status::BuildFailed), run(&other, Status::BuildFailed)],
        };
        let cause = Cause { flags: [("b".to_owned(), true)].into(), compiler: Some(Compiler::Clang) };
        db.save_localisation(row(&failing).seq, LocalisationProgress::Done(&Conclusion::Localised { cause, evidence })).unwrap();
        // `other` has a localisation of its own, still running: it does not hide the cause found.
        let own = Evidence { failing: run(&other, Status::BuildFailed), known: 1, runs: Vec::new() };
        db.save_localisation(row(&other).seq, LocalisationProgress::Running { evidence: &own, next: &other.cell(), tries: 0 }).unwrap();

        for (job, by_cause) in [(&failing, false), (&other, true)] {
            let r = row(job);
            let bug = report(&db, &r, &[]).unwrap().doc;
            assert_eq!(bug.summary, r#"app-misc/foo-1: fails to compile with USE="b" (clang only)"#);
            assert!(
                bug.comment.contains(r#"Minimal failing set: USE="b" (clang only) (localised by gentoo@home with 2 follow-up builds"#),
                "{}",
                bug.comment
            );
            assert!(bug.comment.contains(r#"  USE="-a b" clang: build_failed (fails)"#), "{}", bug.comment);
            assert_eq!(bug.localisation.as_ref().unwrap().by_cause, by_cause);
            let page = crate::web::views::cell(&db, r.seq).unwrap();
            let json = serde_json::to_value(&page).unwrap();
            assert_eq!(json["localisation"]["cause_text"], r#"USE="b" (clang only)"#);
            assert_eq!(json["localisation"]["conclusion"]["kind"], "localised");
            let html = askama::Template::render(&crate::web::pages::CellHtml::new(&page)).unwrap();
            assert!(html.contains("Minimal failing set") && html.contains("fails with USE=&#34;b&#34; (clang only)"), "{html}");
            assert!(html.contains("USE=&#34;-a b&#34; clang: build_failed (fails)"), "{html}");
        }
        // A cell that does not show the cause keeps the whole configuration in its summary.
        let plain = put(&mut db, "a -b", Compiler::Gcc, Status::BuildFailed);
        let r = db.latest(&Filter::default(), Page::ALL).unwrap().into_iter().find(|r| r.job_id == plain.job_id).unwrap();
        assert_eq!(report(&db, &r, &[]).unwrap().doc.summary, r#"app-misc/foo-1: fails to compile with USE="a -b" (gcc)"#);
    }
}
