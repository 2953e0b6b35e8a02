//! Quoting for the two languages a batch script is read in: bash (the script body, the
//! `sbatch` line `plan` prints) and sbatch's own `#SBATCH` directive parser.
//!
//! Every string the Slurm backend writes into a script or shows as a command line goes
//! through one of these two helpers; nothing else escapes by hand. Neither language can carry
//! every string on one line, so [`check_line_safe`] says which strings may be written at all.

/// Characters that mean nothing to bash or to sbatch's directive parser.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_./=:,%@+".contains(c)
}

/// Why a string cannot be written into a one-line slot of the script, if it cannot.
///
/// Control characters (newline, carriage return, tab, NUL, escape, ...) would start a new line,
/// be cut off by sbatch or bash, or hide what the line says in a terminal.
pub fn check_line_safe(s: &str) -> Result<(), String> {
    match s.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!(
            "it contains the control character {c:?}, which a batch script line cannot hold"
        )),
        None => Ok(()),
    }
}

/// `s` as one bash word: unchanged when plainly safe, else single-quoted (a `'` inside
/// becomes `'\''`), so `$`, backticks, `;`, quotes and spaces stay literal.
pub fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(is_plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `s` as one argument of an `#SBATCH` line.
///
/// sbatch splits a directive at unquoted whitespace, drops quotes, reads a backslash as "the
/// next character is literal" (inside quotes too) and takes an unquoted `#` as the start of a
/// comment (older releases even a quoted one); a newline always ends the directive. So: plain
/// words stay as they are, anything else goes in double quotes with `\`, `"`, `'` and `#`
/// escaped. The caller refuses control characters first ([`check_line_safe`]).
pub fn directive_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(is_plain) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '\\' | '"' | '\'' | '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `s` as literal text inside a Slurm filename pattern (`--output`), where `%x` stands for
/// job fields and `%%` for one `%`.
pub fn pattern_literal(s: &str) -> String {
    s.replace('%', "%%")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn shell_words() {
        assert_eq!(shell_word("/a/b-c_d.e"), "/a/b-c_d.e");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("$(touch x)"), "'$(touch x)'");
        assert_eq!(shell_word("`id`;x"), "'`id`;x'");
    }

    /// sbatch's directive tokenizer (Slurm's `_get_argument` in `src/sbatch/opt.c`),
    /// rewritten to check that [`directive_word`] survives it as one argument.
    pub(crate) fn sbatch_tokens(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut chars = line.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek().is_none() {
                return out;
            }
            let mut arg = String::new();
            let mut quote: Option<char> = None;
            let mut escape = false;
            while let Some(&c) = chars.peek() {
                if c == '\n' || (quote.is_none() && c.is_whitespace()) {
                    break;
                }
                chars.next();
                if escape {
                    escape = false;
                } else if c == '\\' {
                    escape = true;
                    continue;
                } else if let Some(q) = quote {
                    if c == q {
                        quote = None;
                        continue;
                    }
                } else if c == '"' || c == '\'' {
                    quote = Some(c);
                    continue;
                } else if c == '#' {
                    out.push(arg);
                    return out;
                }
                arg.push(c);
            }
            assert!(quote.is_none(), "unmatched quote in {line:?}");
            out.push(arg);
        }
    }

    #[test]
    fn directive_words_are_one_sbatch_argument() {
        for s in [
            "/plain/path",
            "/with space/x",
            "/q\"uote/'single'",
            "/hash#tag",
            "/back\\slash",
            "$(touch x)",
            "a  b",
        ] {
            let line = format!("--chdir={}", directive_word(s));
            assert_eq!(sbatch_tokens(&line), vec![format!("--chdir={s}")], "{line}");
        }
        assert_eq!(directive_word("/w/runs/%A_%a.out"), "/w/runs/%A_%a.out");
    }

    #[test]
    fn control_characters_are_refused() {
        assert!(check_line_safe("/a b/c's").is_ok());
        for bad in ["a\nb", "a\rb", "a\0b", "a\tb", "a\u{1b}[2Jb"] {
            assert!(check_line_safe(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn percent_is_literal_in_patterns() {
        assert_eq!(pattern_literal("/r/100%/x"), "/r/100%%/x");
    }
}
