//! The few fields of the client's `init_data.xml` the app needs (BOINC's `APP_INIT_DATA` is a
//! C++ class, so it is read here with quick-xml rather than through the API).

use std::path::Path;

use quick_xml::events::Event;
use quick_xml::Reader;

/// What the client grants this task.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// CPUs the client allots (`<ncpus>`), rounded up.
    pub ncpus: Option<u32>,
    /// The workunit's `<rsc_memory_bound>` in bytes.
    pub memory_bound_bytes: Option<u64>,
    /// The workunit's `<rsc_disk_bound>` in bytes.
    pub disk_bound_bytes: Option<u64>,
    /// CPU seconds earlier runs of this task used up to their last checkpoint
    /// (`<wu_cpu_time>`): what this run's reports build on.
    pub earlier_cpu_secs: f64,
}

/// Reads `path`; a missing or unreadable file (standalone runs) gives no limits.
pub fn read(path: &Path) -> Limits {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text),
        Err(_) => Limits::default(),
    }
}

/// Parses the text of `init_data.xml`.
pub fn parse(text: &str) -> Limits {
    let mut reader = Reader::from_str(text);
    let mut limits = Limits::default();
    let mut current: Option<Vec<u8>> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => current = Some(e.name().as_ref().to_vec()),
            Ok(Event::Text(t)) => {
                let Some(name) = &current else { continue };
                let Ok(value) = t.unescape() else { continue };
                let Ok(number) = value.trim().parse::<f64>() else { continue };
                match name.as_slice() {
                    b"ncpus" if number >= 1.0 => limits.ncpus = Some(whole_u32(number.ceil())),
                    b"rsc_memory_bound" if number > 0.0 => limits.memory_bound_bytes = Some(whole_u64(number)),
                    b"rsc_disk_bound" if number > 0.0 => limits.disk_bound_bytes = Some(whole_u64(number)),
                    b"wu_cpu_time" if number > 0.0 => limits.earlier_cpu_secs = number,
                    _ => {}
                }
            }
            Ok(Event::End(_)) => current = None,
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    limits
}

/// Where the task may keep host-wide data, and how it must reach the network: the project
/// folder (`<project_dir>`, shared by the project's tasks on this host) and the HTTP proxy the
/// volunteer set in the client (`<proxy_info>`: `<use_http_proxy/>`, `<http_server_name>`,
/// `<http_server_port>`, and `<use_http_auth/>` with `<http_user_name>`, `<http_user_passwd>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Network {
    /// The project folder.
    pub project_dir: Option<std::path::PathBuf>,
    /// The proxy as a URL (`http://[user:password@]host:port`), when the volunteer set one.
    pub http_proxy: Option<String>,
    /// Hosts reached without it (`<no_proxy>`, comma-separated hosts or URLs).
    pub no_proxy: Vec<String>,
}

impl Network {
    /// The proxy for `url`: none when its host is in the `<no_proxy>` list, compared as the
    /// client does (client/http_curl.cpp `no_proxy_for_url`: each entry parsed as a URL, hosts
    /// equal).
    pub fn proxy_for(&self, url: &str) -> Option<&str> {
        let host = url_host(url);
        if self.no_proxy.iter().any(|h| *h == host) {
            return None;
        }
        self.http_proxy.as_deref()
    }
}

/// The host of a URL or of a bare `host[:port][/path]`, as BOINC's `parse_url` takes it.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or_default();
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(':').next().unwrap_or_default()
}

/// Reads `path` for [`Network`]; nothing when it is missing (standalone runs).
pub fn read_network(path: &Path) -> Network {
    std::fs::read_to_string(path).map(|t| parse_network(&t)).unwrap_or_default()
}

/// Parses the text of `init_data.xml` for [`Network`].
pub fn parse_network(text: &str) -> Network {
    let mut reader = Reader::from_str(text);
    let (mut project_dir, mut use_proxy, mut use_auth) = (None, false, false);
    let (mut host, mut port, mut user, mut password) = (None, None, None, None);
    let mut no_proxy = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => current = Some(e.name().as_ref().to_vec()),
            Ok(Event::Empty(e)) => match e.name().as_ref() {
                b"use_http_proxy" => use_proxy = true,
                b"use_http_auth" => use_auth = true,
                _ => {}
            },
            Ok(Event::Text(t)) => {
                let Some(name) = &current else { continue };
                let Ok(value) = t.unescape() else { continue };
                let value = value.trim().to_owned();
                match name.as_slice() {
                    b"project_dir" if !value.is_empty() => project_dir = Some(std::path::PathBuf::from(value)),
                    b"use_http_proxy" => use_proxy = value != "0",
                    b"use_http_auth" => use_auth = value != "0",
                    b"http_server_name" if !value.is_empty() => host = Some(value),
                    b"http_server_port" => port = value.parse::<u16>().ok(),
                    b"http_user_name" => user = Some(value),
                    b"http_user_passwd" => password = Some(value),
                    b"no_proxy" => {
                        no_proxy = value.split(',').map(|t| url_host(t.trim()).to_owned()).filter(|h| !h.is_empty()).collect();
                    }
                    _ => {}
                }
            }
            Ok(Event::End(_)) => current = None,
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    let auth = match (use_auth, user, password) {
        (true, Some(u), Some(p)) => format!("{}:{}@", encode(&u), encode(&p)),
        _ => String::new(),
    };
    let http_proxy = match (use_proxy, host) {
        // A host name with URL syntax in it is not one.
        (true, Some(h)) if h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_".contains(&b)) => {
            Some(format!("http://{auth}{h}:{}", port.unwrap_or(80)))
        }
        _ => None,
    };
    Network { project_dir, http_proxy, no_proxy }
}

/// Percent-encodes a user name or password for a URL's userinfo.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

// The client writes these numbers as floats. A float-to-int `as` drops the fraction (wanted:
// the CPU count is rounded up first, a byte count has none to speak of) and saturates at the
// type's bounds, which no real count reaches.
#[allow(clippy::cast_possible_truncation)]
fn whole_u32(number: f64) -> u32 {
    number as u32
}

#[allow(clippy::cast_possible_truncation)] // As above.
fn whole_u64(number: f64) -> u64 {
    number as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpus_and_memory_bound() {
        let text = "<app_init_data>\n<ncpus>1.500000</ncpus>\n<rsc_memory_bound>4000000000.000000</rsc_memory_bound>\n<rsc_disk_bound>9000000000.000000</rsc_disk_bound><project_dir>/x</project_dir><wu_cpu_time>12.5</wu_cpu_time></app_init_data>";
        assert_eq!(
            parse(text),
            Limits {
                ncpus: Some(2),
                memory_bound_bytes: Some(4_000_000_000),
                disk_bound_bytes: Some(9_000_000_000),
                earlier_cpu_secs: 12.5
            }
        );
        assert_eq!(parse("garbage"), Limits::default());
    }

    #[test]
    fn reads_the_project_folder_and_the_volunteers_proxy() {
        let text = "<app_init_data><project_dir>/var/lib/boinc/projects/gah</project_dir>
            <proxy_info><use_http_proxy/><use_http_auth/><http_server_name>proxy.lan</http_server_name>
            <http_server_port>3128</http_server_port><http_user_name>me</http_user_name><http_user_passwd>p@ss:w</http_user_passwd>
            </proxy_info></app_init_data>";
        let n = parse_network(text);
        assert_eq!(n.project_dir.as_deref(), Some(Path::new("/var/lib/boinc/projects/gah")));
        assert_eq!(n.http_proxy.as_deref(), Some("http://me:p%40ss%3Aw@proxy.lan:3128"));
        // Set up but not in use; or a host name that is not one.
        let off = text.replace("<use_http_proxy/>", "");
        assert_eq!(parse_network(&off).http_proxy, None);
        let odd = text.replace("proxy.lan", "evil.lan/@x");
        assert_eq!(parse_network(&odd).http_proxy, None);
        // The client's exception list: the project's server reached directly.
        let except = text.replace("</proxy_info>", "<no_proxy>intranet.lan, http://boinc.example.org:8080/gah/</no_proxy></proxy_info>");
        let n = parse_network(&except);
        assert_eq!(n.proxy_for("http://boinc.example.org/gah/download/cvmfs/gentoo.gah"), None);
        assert_eq!(n.proxy_for("http://intranet.lan:80/x"), None);
        assert_eq!(n.proxy_for("http://other.org/x"), Some("http://me:p%40ss%3Aw@proxy.lan:3128"));
        assert_eq!(parse_network("garbage"), Network::default());
    }
}
