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
}
