//! The few XML shapes the harness reads from the BOINC client (a `<scheduler_request>`, the
//! header of an upload) and a writer helper. Shapes follow BOINC 7.20's client
//! (`client/cs_scheduler.cpp` `make_scheduler_request`, `client/result.cpp` `RESULT::write`).

use anyhow::{bail, Context};
use quick_xml::events::Event;
use quick_xml::Reader;

/// An app version the client described (anonymous platform: from its `app_info.xml`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientAppVersion {
    /// `<app_name>`.
    pub app_name: String,
    /// `<version_num>`.
    pub version_num: i64,
    /// `<platform>`.
    pub platform: String,
    /// `<plan_class>` (empty when none).
    pub plan_class: String,
}

/// A reported result (`<result>` in the request): the client is done with it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportedResult {
    /// Result name.
    pub name: String,
    /// The app's exit status (0 = success; 194 aborted by client, 203 aborted via GUI, ...).
    pub exit_status: i64,
    /// The client's result state (5 = files uploaded, 3 = compute error, 6 = aborted, 7 = upload failed).
    pub state: i64,
    /// Wall-clock seconds the task ran.
    pub final_elapsed_time: f64,
    /// CPU seconds.
    pub final_cpu_time: f64,
    /// The app's `stderr.txt`, as the client sent it.
    pub stderr_out: String,
    /// Uploaded output files: (name, nbytes, md5).
    pub files: Vec<(String, f64, String)>,
}

/// The parts of a `<scheduler_request>` the harness acts on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerRequest {
    /// `<authenticator>`.
    pub authenticator: String,
    /// `<hostid>` (0 on the first contact).
    pub hostid: i64,
    /// `<platform_name>`.
    pub platform_name: String,
    /// `<work_req_seconds>`.
    pub work_req_seconds: f64,
    /// `<cpu_req_secs>`.
    pub cpu_req_secs: f64,
    /// `<cpu_req_instances>`.
    pub cpu_req_instances: f64,
    /// `<app_versions>`: the versions the client has (under anonymous platform, those of its
    /// `app_info.xml`).
    pub app_versions: Vec<ClientAppVersion>,
    /// Completed results being reported.
    pub results: Vec<ReportedResult>,
    /// Names of results the client still has (`<other_results>`).
    pub other_results: Vec<String>,
    /// The client's version, `major.minor.release`.
    pub client_version: String,
    /// `<code_sign_key>`: the project's key the client holds (empty: none yet).
    pub code_sign_key: String,
    /// `<host_info><p_ncpus>`.
    pub p_ncpus: f64,
    /// `<host_info><p_fpops>`.
    pub p_fpops: f64,
    /// `<host_info><m_nbytes>`.
    pub m_nbytes: f64,
    /// `<working_global_preferences>`: `max_ncpus_pct`, `ram_max_used_busy_pct`,
    /// `ram_max_used_idle_pct` (0 when absent).
    pub max_ncpus_pct: f64,
    /// See `max_ncpus_pct`.
    pub ram_max_used_busy_pct: f64,
    /// See `max_ncpus_pct`.
    pub ram_max_used_idle_pct: f64,
}

impl SchedulerRequest {
    /// True when the client asks for work.
    pub fn wants_work(&self) -> bool {
        self.work_req_seconds > 0.0 || self.cpu_req_secs > 0.0 || self.cpu_req_instances > 0.0
    }
}

/// Parses the client's POST body.
pub fn parse_scheduler_request(body: &[u8]) -> anyhow::Result<SchedulerRequest> {
    let mut reader = Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    // The request embeds free text (stderr, preferences); be lenient about its tags.
    reader.config_mut().check_end_names = false;
    let mut req = SchedulerRequest::default();
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut result = ReportedResult::default();
    let mut av = ClientAppVersion::default();
    let mut file = (String::new(), 0.0, String::new());
    let (mut major, mut minor, mut release) = (String::new(), String::new(), String::new());
    let mut buf = Vec::new();
    let mut seen_root = false;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .with_context(|| format!("scheduler_request: XML error at byte {}", reader.buffer_position()))?;
        match event {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if path.is_empty() {
                    if name != "scheduler_request" {
                        bail!("scheduler_request: root element is <{name}>");
                    }
                    seen_root = true;
                }
                path.push(name);
                text.clear();
                match path_str(&path).as_str() {
                    "scheduler_request/result" => result = ReportedResult::default(),
                    "scheduler_request/app_versions/app_version" => av = ClientAppVersion::default(),
                    "scheduler_request/result/file_info" => file = (String::new(), 0.0, String::new()),
                    _ => {}
                }
            }
            Event::Empty(_) => {}
            Event::Text(t) => {
                let s = t.unescape().map(|c| c.into_owned()).unwrap_or_else(|_| String::from_utf8_lossy(&t).into_owned());
                text.push_str(&s);
            }
            Event::CData(c) => text.push_str(&String::from_utf8_lossy(&c)),
            Event::End(_) => {
                let p = path_str(&path);
                let v = text.trim().to_owned();
                match p.as_str() {
                    "scheduler_request/authenticator" => req.authenticator = v,
                    "scheduler_request/hostid" => req.hostid = v.parse().unwrap_or(0),
                    "scheduler_request/platform_name" => req.platform_name = v,
                    "scheduler_request/work_req_seconds" => req.work_req_seconds = num(&v),
                    "scheduler_request/cpu_req_secs" => req.cpu_req_secs = num(&v),
                    "scheduler_request/cpu_req_instances" => req.cpu_req_instances = num(&v),
                    "scheduler_request/core_client_major_version" => major = v,
                    "scheduler_request/core_client_minor_version" => minor = v,
                    "scheduler_request/core_client_release" => release = v,
                    "scheduler_request/result/name" => result.name = v,
                    "scheduler_request/result/exit_status" => result.exit_status = v.parse().unwrap_or(0),
                    "scheduler_request/result/state" => result.state = v.parse().unwrap_or(0),
                    "scheduler_request/result/final_elapsed_time" => result.final_elapsed_time = num(&v),
                    "scheduler_request/result/final_cpu_time" => result.final_cpu_time = num(&v),
                    "scheduler_request/result/stderr_out" => result.stderr_out = text.clone(),
                    "scheduler_request/result/file_info/name" => file.0 = v,
                    "scheduler_request/result/file_info/nbytes" => file.1 = num(&v),
                    "scheduler_request/result/file_info/md5_cksum" => file.2 = v,
                    "scheduler_request/result/file_info" => result.files.push(std::mem::take(&mut file)),
                    "scheduler_request/result" => req.results.push(std::mem::take(&mut result)),
                    "scheduler_request/app_versions/app_version/app_name" => av.app_name = v,
                    "scheduler_request/app_versions/app_version/version_num" => av.version_num = v.parse().unwrap_or(0),
                    "scheduler_request/app_versions/app_version/platform" => av.platform = v,
                    "scheduler_request/app_versions/app_version/plan_class" => av.plan_class = v,
                    "scheduler_request/app_versions/app_version" => req.app_versions.push(std::mem::take(&mut av)),
                    "scheduler_request/other_results/other_result/name" => req.other_results.push(v),
                    // The key's text keeps its lines (the scheduler compares it after
                    // strip_whitespace, which trims only the ends).
                    "scheduler_request/code_sign_key" => req.code_sign_key = v,
                    "scheduler_request/host_info/p_ncpus" => req.p_ncpus = num(&v),
                    "scheduler_request/host_info/p_fpops" => req.p_fpops = num(&v),
                    "scheduler_request/host_info/m_nbytes" => req.m_nbytes = num(&v),
                    "scheduler_request/working_global_preferences/global_preferences/max_ncpus_pct" => req.max_ncpus_pct = num(&v),
                    "scheduler_request/working_global_preferences/global_preferences/ram_max_used_busy_pct" => {
                        req.ram_max_used_busy_pct = num(&v)
                    }
                    "scheduler_request/working_global_preferences/global_preferences/ram_max_used_idle_pct" => {
                        req.ram_max_used_idle_pct = num(&v)
                    }
                    _ => {}
                }
                path.pop();
                // Text of an inner element (e.g. <core_client_version> inside <stderr_out>)
                // must not leak into the parent's value: keep accumulating only for stderr.
                if path_str(&path) != "scheduler_request/result/stderr_out" {
                    text.clear();
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !seen_root {
        bail!("scheduler_request: no <scheduler_request> element");
    }
    req.client_version = format!("{major}.{minor}.{release}");
    Ok(req)
}

fn path_str(path: &[String]) -> String {
    path.join("/")
}

fn num(v: &str) -> f64 {
    v.parse().unwrap_or(0.0)
}

/// An upload handler request (`<data_server_request>`), split at its `<data>` line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataServerRequest {
    /// `<get_file_size>NAME</get_file_size>`.
    pub get_file_size: Option<String>,
    /// For `<file_upload>`: the file's name (from its `<file_info>`).
    pub name: String,
    /// `<nbytes>`: the whole file's size.
    pub nbytes: Option<f64>,
    /// `<max_nbytes>` from the file_info.
    pub max_nbytes: Option<f64>,
    /// `<md5_cksum>`.
    pub md5_cksum: String,
    /// `<offset>`: where `data` starts in the file.
    pub offset: f64,
    /// True when a `<file_upload>` element was present.
    pub is_upload: bool,
    /// Byte offset of the data (just after `<data>\n`) in the body, for uploads.
    pub data_start: Option<usize>,
}

/// Parses the line-oriented header as BOINC's `file_upload_handler` does (one tag per line,
/// `<data>` then a newline then the bytes).
pub fn parse_data_server_request(body: &[u8]) -> DataServerRequest {
    let mut req = DataServerRequest::default();
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..].iter().position(|&b| b == b'\n').map(|i| pos + i + 1).unwrap_or(body.len());
        let line = String::from_utf8_lossy(&body[pos..end]);
        let line = line.trim();
        pos = end;
        if line.starts_with("<data>") {
            req.data_start = Some(pos);
            break;
        }
        if line.starts_with("<file_upload>") {
            req.is_upload = true;
        } else if let Some(v) = tag(line, "get_file_size") {
            req.get_file_size = Some(v);
        } else if let Some(v) = tag(line, "name") {
            req.name = v;
        } else if let Some(v) = tag(line, "nbytes") {
            req.nbytes = v.parse().ok();
        } else if let Some(v) = tag(line, "max_nbytes") {
            req.max_nbytes = v.parse().ok();
        } else if let Some(v) = tag(line, "md5_cksum") {
            req.md5_cksum = v;
        } else if let Some(v) = tag(line, "offset") {
            req.offset = v.parse().unwrap_or(0.0);
        }
    }
    req
}

/// The value of `<name>value</name>` when `line` holds that element.
fn tag(line: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = line.find(&open)? + open.len();
    let end = line[start..].find(&close)? + start;
    Some(line[start..end].trim().to_owned())
}

/// Escapes text for an XML element.
pub fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_report_with_cdata_stderr() {
        let body = br#"<scheduler_request>
    <authenticator>abc</authenticator>
    <hostid>0</hostid>
    <platform_name>x86_64-pc-linux-gnu</platform_name>
    <core_client_major_version>7</core_client_major_version>
    <core_client_minor_version>20</core_client_minor_version>
    <core_client_release>5</core_client_release>
    <work_req_seconds>0.000000</work_req_seconds>
    <cpu_req_secs>60.0</cpu_req_secs>
<result>
    <name>wu_0</name>
    <final_cpu_time>1.5</final_cpu_time>
    <final_elapsed_time>30.25</final_elapsed_time>
    <exit_status>0</exit_status>
    <state>5</state>
    <platform>x86_64-pc-linux-gnu</platform>
    <version_num>100</version_num>
<stderr_out>
<core_client_version>7.20.5</core_client_version>
<![CDATA[
gah-app: <weird> & stuff
]]>
</stderr_out>
<file_info>
    <name>wu_0_0</name>
    <nbytes>1234.000000</nbytes>
    <max_nbytes>16000000.000000</max_nbytes>
    <md5_cksum>0123</md5_cksum>
    <url>http://127.0.0.1:1/gah_cgi/file_upload_handler</url>
</file_info>
</result>
<app_versions>
<app_version>
    <app_name>gah</app_name>
    <version_num>100</version_num>
    <platform>x86_64-pc-linux-gnu</platform>
    <plan_class>vm</plan_class>
    <file_ref><file_name>gah-app</file_name><main_program/></file_ref>
</app_version>
</app_versions>
<other_results>
    <other_result><name>wu_1</name></other_result>
</other_results>
</scheduler_request>
"#;
        let r = parse_scheduler_request(body).unwrap();
        assert_eq!(r.authenticator, "abc");
        assert!(r.wants_work());
        assert_eq!(r.client_version, "7.20.5");
        assert_eq!(r.results.len(), 1);
        let res = &r.results[0];
        assert_eq!((res.name.as_str(), res.exit_status, res.state), ("wu_0", 0, 5));
        assert!(res.stderr_out.contains("<weird> & stuff"), "{:?}", res.stderr_out);
        assert_eq!(res.files, vec![("wu_0_0".to_owned(), 1234.0, "0123".to_owned())]);
        assert_eq!(
            r.app_versions,
            vec![ClientAppVersion {
                app_name: "gah".into(),
                version_num: 100,
                platform: "x86_64-pc-linux-gnu".into(),
                plan_class: "vm".into()
            }]
        );
        assert_eq!(r.other_results, vec!["wu_1".to_owned()]);
    }

    #[test]
    fn splits_an_upload_at_data() {
        let mut body = b"<data_server_request>\n<core_client_major_version>7</core_client_major_version>\n<file_upload>\n<file_info>\n    <name>wu_0_0</name>\n    <max_nbytes>100</max_nbytes>\n</file_info>\n<nbytes>5</nbytes>\n<md5_cksum>x</md5_cksum>\n<offset>2</offset>\n<data>\n".to_vec();
        let start = body.len();
        body.extend_from_slice(b"abc");
        let r = parse_data_server_request(&body);
        assert!(r.is_upload);
        assert_eq!((r.name.as_str(), r.nbytes, r.max_nbytes, r.offset, r.data_start), ("wu_0_0", Some(5.0), Some(100.0), 2.0, Some(start)));
        let g = parse_data_server_request(b"<data_server_request>\n<get_file_size>wu_0_0</get_file_size>\n</data_server_request>\n");
        assert_eq!(g.get_file_size.as_deref(), Some("wu_0_0"));
    }
}
