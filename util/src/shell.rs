//! Quoting for `sh`, for the command lines we write into scripts (`create_work.sh`) and into
//! qemu's `exec:` migration URIs.

/// `s` in single quotes, safe as one word for any POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `s` as it is when every character is one the shell takes literally, else [`quote`]d: a
/// command line people read (and paste) stays plain when it can.
pub fn word(s: &str) -> String {
    let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-_.,/=:@%".contains(&b));
    if plain {
        s.to_owned()
    } else {
        quote(s)
    }
}

#[cfg(test)]
mod tests {
    use super::{quote, word};

    #[test]
    fn plain_words_stay_plain() {
        assert_eq!(word("=app-arch/bzip2-1.0.8"), "=app-arch/bzip2-1.0.8");
        assert_eq!(word("a/b ssl -static"), "'a/b ssl -static'");
        assert_eq!(word("x';rm -rf /'"), quote("x';rm -rf /'"));
    }

    #[test]
    fn quotes_survive_the_shell() {
        for s in ["plain", "with space", "it's", "$(rm -rf /)", "a\nb", "", "''"] {
            let out = crate::process::run_checked(crate::process::command("sh").args(["-c", &format!("printf %s {}", quote(s))])).unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
        }
    }
}
