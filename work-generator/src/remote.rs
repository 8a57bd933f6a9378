//! Remote job submission, BOINC's documented web RPC (`lib/remote_submit.cpp` is the
//! reference client): a `<submit_batch>` document POSTed as the form field `request` to
//! `PROJECT_URL/submit_rpc_handler.php`, authenticated by a job submitter's authenticator.
//! The reply is `<batch_id>N</batch_id>` or `<error><error_num>N</error_num><error_msg>…
//! </error_msg></error>`.
//!
//! Each job's input files are given in `remote` mode: a URL the server fetches from (the
//! queue's `pending/` folder published over HTTP), with its size and MD5: its `job.json`,
//! then its `data.json` (`<wu_name>.data.json`), which the submitter writes into that folder.
//! Batch-level `job_params` carry the `rsc_*` bounds and the deadline; the RPC has no
//! replication values, so each job carries its own `<input_template>`: `templates/gah_in`
//! with the quorum ([`crate::boinc::input_template_with_replication`]).

use std::fmt::Write as _;

use md5::{Digest, Md5};
use quick_xml::escape::escape;

use crate::boinc::{Submission, Workunit};

/// Where and as whom to submit.
#[derive(Clone)]
pub struct Remote {
    /// The project's URL, with its trailing `/` (e.g. `https://gah.example.org/gah/`).
    pub project_url: String,
    /// A job submitter's authenticator (never logged).
    pub authenticator: String,
    /// The URL prefix under which the queue's `pending/` is served (`<job_id>.json`,
    /// `<wu_name>.data.json`).
    pub job_url_base: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The authenticator is a credential: keep it out of logs and panics.
        f.debug_struct("Remote").field("project_url", &self.project_url).field("job_url_base", &self.job_url_base).finish_non_exhaustive()
    }
}

/// A submission the project did not take, naming the URL.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The HTTP client could not be built.
    #[error("build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// The request could not be sent or its reply not read.
    #[error("POST {url}")]
    Post {
        /// The handler's URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an HTTP error.
    #[error("POST {url}: HTTP {status}: {body_head}")]
    Http {
        /// The handler's URL.
        url: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The first 200 characters of the reply.
        body_head: String,
    },
    /// The handler's reply is an error or not a batch id.
    #[error("submit_batch at {url}")]
    Reply {
        /// The handler's URL.
        url: String,
        /// What the reply said.
        #[source]
        source: ReplyError,
    },
}

/// A reply of the RPC handler that is not a batch id.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The handler reported an `<error>`.
    #[error(transparent)]
    Refused(#[from] RpcError),
    /// The reply has no `<batch_id>`.
    #[error("no <batch_id> in the reply: {body_head}")]
    NoBatchId {
        /// The first 200 characters of the reply.
        body_head: String,
    },
    /// The `<batch_id>` is not a number.
    #[error("batch id `{id}` is not a number")]
    BadBatchId {
        /// The text found.
        id: String,
        /// The cause.
        #[source]
        source: std::num::ParseIntError,
    },
}

/// An `<error>` reply of the RPC handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("BOINC submit_batch error {num}: {msg}{}", known_server_bug(msg))]
pub struct RpcError {
    /// `error_num`.
    pub num: i64,
    /// `error_msg`.
    pub msg: String,
}

/// What we know about a server's error, said after it. BOINC master since its XXE change
/// (BOINC/boinc#6946, 2026-03) parses the request with `safe_simplexml_load_string`, which
/// turns libxml's entity loader off for the rest of the request; on PHP 8 with libxml2 2.9
/// (Debian bookworm) the handler then cannot read the app's input template from disk.
/// Seen on a real server built from BOINC master c5c6cb79b9 (docs/DEPLOY.md).
fn known_server_bug(msg: &str) -> &'static str {
    if msg.contains("couldn't parse input template file") {
        " (a BOINC server bug, not the template: since BOINC/boinc#6946 the handler turns libxml's entity loader off before \
         reading templates/<app>_in, which fails on PHP 8 with libxml2 2.9; submit on the server with --boinc-project, \
         see docs/DEPLOY.md)"
    } else {
        ""
    }
}

/// The `<submit_batch>` request for `wus` (one new batch named `batch_name`; the bounds of
/// the first job apply to all: a plan has one timeout). Each job is named after its
/// workunit; its file is fetched from `<job_url_base><job_id>.json` (BOINC names remote
/// input files by content, so a changed job file is a new file), then its `data.json` (`data`,
/// in `wus`' order) from `<job_url_base><wu_name>.data.json`.
pub fn submit_batch_request(wus: &[Workunit], data: &[Vec<u8>], sub: &Submission, remote: &Remote, batch_name: &str) -> String {
    assert_eq!(wus.len(), data.len(), "one data.json per workunit");
    let mut s = String::new();
    let first = wus.first().map(|wu| &wu.job);
    let _ = write!(
        s,
        "<submit_batch>\n<authenticator>{auth}</authenticator>\n<batch>\n    <batch_id>0</batch_id>\n    <batch_name>{name}</batch_name>\n    <app_name>{app}</app_name>\n    <job_params>\n        <rsc_disk_bound>{disk}</rsc_disk_bound>\n        <rsc_fpops_est>{est}</rsc_fpops_est>\n        <rsc_fpops_bound>{bound}</rsc_fpops_bound>\n        <rsc_memory_bound>{mem}</rsc_memory_bound>\n        <delay_bound>{delay}</delay_bound>\n    </job_params>\n",
        auth = escape(remote.authenticator.as_str()),
        name = escape(batch_name),
        app = escape(sub.appname.as_str()),
        disk = sub.disk_bound,
        est = first.map_or(0.0, |j| sub.fpops_est(j)),
        bound = first.map_or(0.0, |j| sub.fpops_bound(j)),
        mem = sub.memory_bound,
        delay = sub.delay_bound,
    );
    // The same text for every job: the handler writes one template file for all of them.
    let template = format!("        {}\n", crate::boinc::input_template_with_replication(sub));
    for (wu, data_json) in wus.iter().zip(data) {
        let job = &wu.job;
        let bytes = job.to_json();
        let md5 = hex::encode(Md5::digest(&bytes));
        let _ = write!(
            s,
            "    <job>\n        <name>{name}</name>\n        <rsc_fpops_est>{est}</rsc_fpops_est>\n        <input_file>\n            <mode>remote</mode>\n            <url>{url}</url>\n            <nbytes>{n}</nbytes>\n            <md5>{md5}</md5>\n        </input_file>\n    </job>\n",
            name = escape(wu.name.as_str()),
            est = sub.fpops_est(job),
            url = escape(format!("{}{}.json", remote.job_url_base, job.job_id).as_str()),
            n = bytes.len(),
        );
        // Its data.json after it, in the input template's order.
        let job_end = s.len() - "    </job>\n".len();
        let data_file = format!(
            "        <input_file>\n            <mode>remote</mode>\n            <url>{url}</url>\n            <nbytes>{n}</nbytes>\n            <md5>{md5}</md5>\n        </input_file>\n",
            url = escape(format!("{}{}", remote.job_url_base, wu.data_file()).as_str()),
            n = data_json.len(),
            md5 = hex::encode(Md5::digest(data_json)),
        );
        s.insert_str(job_end, &data_file);
        let job_end = s.len() - "    </job>\n".len();
        s.insert_str(job_end, &template);
    }
    s.push_str("</batch>\n</submit_batch>\n");
    s
}

/// Reads the handler's reply: the batch id, or the `<error>` it reports.
pub fn parse_reply(body: &str) -> Result<u64, ReplyError> {
    let tag = |name: &str| -> Option<String> {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(quick_xml::escape::unescape(body[start..end].trim()).map_or_else(|_| body[start..end].trim().to_owned(), |c| c.into_owned()))
    };
    if body.contains("<error>") {
        let num = tag("error_num").and_then(|n| n.parse().ok()).unwrap_or(-1);
        let msg = tag("error_msg").unwrap_or_default();
        return Err(RpcError { num, msg }.into());
    }
    let id = tag("batch_id").ok_or_else(|| ReplyError::NoBatchId { body_head: head(body) })?;
    id.parse().map_err(|source| ReplyError::BadBatchId { id, source })
}

/// The start of a reply, for error messages.
fn head(body: &str) -> String {
    body.chars().take(200).collect()
}

/// POSTs `request` to the project's `submit_rpc_handler.php` and returns the batch id.
pub fn send(client: &reqwest::blocking::Client, remote: &Remote, request: &str) -> Result<u64, RemoteError> {
    let url = format!("{}submit_rpc_handler.php", remote.project_url);
    let body = match client.post(&url).form(&[("request", request)]).send().and_then(|resp| Ok((resp.status(), resp.text()?))) {
        Ok((status, body)) if !status.is_success() => return Err(RemoteError::Http { url, status, body_head: head(&body) }),
        Ok((_, body)) => body,
        Err(source) => return Err(RemoteError::Post { url, source }),
    };
    parse_reply(&body).map_err(|source| RemoteError::Reply { url, source })
}

/// A blocking client with rustls and a timeout (a stuck server must not stall the daemon).
pub fn client() -> Result<reqwest::blocking::Client, RemoteError> {
    reqwest::blocking::Client::builder().timeout(std::time::Duration::from_secs(60)).build().map_err(RemoteError::Client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_server_bug_is_named_after_the_servers_message() {
        let reply = "<error>\n<error_num>-1</error_num>\n<error_msg>couldn't parse input template file /p/html/inc/../../templates/gah_in</error_msg>\n</error>";
        let ReplyError::Refused(rpc) = parse_reply(reply).unwrap_err() else { panic!("not a refusal") };
        let said = rpc.to_string();
        assert!(said.starts_with("BOINC submit_batch error -1: couldn't parse input template file"), "{said}");
        assert!(said.contains("BOINC/boinc#6946") && said.contains("--boinc-project"), "{said}");
        let other = RpcError { num: -1, msg: "no app named gah".into() };
        assert_eq!(other.to_string(), "BOINC submit_batch error -1: no app named gah");
    }
}
