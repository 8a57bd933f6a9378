//! Quoting for `sh`, for the command lines we write into scripts (`create_work.sh`) and into
//! qemu's `exec:` migration URIs.

/// `s` in single quotes, safe as one word for any POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quotes_survive_the_shell() {
        for s in ["plain", "with space", "it's", "$(rm -rf /)", "a\nb", "", "''"] {
            let out = crate::process::run_checked(crate::process::command("sh").args(["-c", &format!("printf %s {}", quote(s))])).unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
        }
    }
}
