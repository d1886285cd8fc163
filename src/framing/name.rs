//! Checking a peer-supplied file name before it is used inside an upload directory.

use std::fmt;

/// The longest file name accepted, in bytes: 255, the `NAME_MAX` of Linux, macOS and the
/// usual file systems.
pub const MAX_FILE_NAME_LEN: usize = 255;

/// Windows device names, reserved in every directory and with any extension (`CON.txt`).
const RESERVED: [&str; 4] = ["CON", "PRN", "AUX", "NUL"];

/// Why a peer-supplied file name was refused by [`sanitize_file_name`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_FILE_NAME_LEN`] bytes; carries the length.
    TooLong(usize),
    /// The name contains a NUL byte.
    Nul,
    /// The name is an absolute path: it starts with `/` or `\`, or a drive (`C:`).
    Absolute,
    /// The name is `.` or `..`.
    DotName,
    /// The name contains a path separator (`/` or `\`), so it names a path, not a file.
    Separator(char),
    /// The name contains a control character or one Windows forbids (`< > : " | ? *`).
    ForbiddenChar(char),
    /// The name ends with `.` or a space, which Windows silently strips.
    TrailingDotOrSpace,
    /// The name is a Windows device name (`CON`, `PRN`, `AUX`, `NUL`, `COM0`–`COM9`,
    /// `LPT0`–`LPT9`, in any case and with any extension); carries the name.
    Reserved(String),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("file name is empty"),
            NameError::TooLong(len) => write!(
                f,
                "file name is {len} bytes long, over the limit of {MAX_FILE_NAME_LEN}"
            ),
            NameError::Nul => f.write_str("file name contains a NUL byte"),
            NameError::Absolute => f.write_str("file name is an absolute path"),
            NameError::DotName => f.write_str("file name is `.` or `..`"),
            NameError::Separator(c) => write!(f, "file name contains the path separator {c:?}"),
            NameError::ForbiddenChar(c) => {
                write!(f, "file name contains the forbidden character {c:?}")
            }
            NameError::TrailingDotOrSpace => f.write_str("file name ends with a dot or a space"),
            NameError::Reserved(name) => {
                write!(f, "file name {name:?} is a reserved device name on Windows")
            }
        }
    }
}

impl std::error::Error for NameError {}

/// Checks that `name`, as sent by a peer, names one plain file inside a directory, and
/// returns it unchanged; it never rewrites a name, it only refuses.
///
/// Refused, in this order: empty; over [`MAX_FILE_NAME_LEN`] bytes; NUL; absolute (leading
/// `/` or `\`, or a drive letter `C:`); `.` and `..`; any `/` or `\`; control characters and
/// the characters Windows forbids (`< > : " | ? *`); a trailing dot or space; Windows device
/// names (`CON`, `nul.txt`, `COM1`, ...). Names starting with a dot (`.bashrc`) and any
/// other Unicode are accepted.
///
/// ```
/// use socketserver::framing::{sanitize_file_name, NameError};
///
/// assert_eq!(sanitize_file_name("report 2024.pdf"), Ok("report 2024.pdf"));
/// assert_eq!(sanitize_file_name("你好.txt"), Ok("你好.txt"));
/// assert_eq!(sanitize_file_name(".."), Err(NameError::DotName));
/// assert_eq!(sanitize_file_name("../etc/passwd"), Err(NameError::Separator('/')));
/// assert_eq!(sanitize_file_name("/etc/passwd"), Err(NameError::Absolute));
/// assert!(matches!(sanitize_file_name("con.txt"), Err(NameError::Reserved(_))));
/// ```
///
/// # Errors
/// The first rule the name breaks, as a [`NameError`].
pub fn sanitize_file_name(name: &str) -> Result<&str, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_FILE_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if name.contains('\0') {
        return Err(NameError::Nul);
    }
    let b = name.as_bytes();
    if b[0] == b'/' || b[0] == b'\\' || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
    {
        return Err(NameError::Absolute);
    }
    if name == "." || name == ".." {
        return Err(NameError::DotName);
    }
    if let Some(c) = name.chars().find(|&c| c == '/' || c == '\\') {
        return Err(NameError::Separator(c));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c.is_control() || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*'))
    {
        return Err(NameError::ForbiddenChar(c));
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Err(NameError::TrailingDotOrSpace);
    }
    if is_reserved(name) {
        return Err(NameError::Reserved(name.to_owned()));
    }
    Ok(name)
}

/// Whether the part before the first dot (spaces trimmed) is a Windows device name.
fn is_reserved(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).trim_end_matches(' ');
    if RESERVED.iter().any(|r| stem.eq_ignore_ascii_case(r)) {
        return true;
    }
    let mut chars = stem.chars();
    let prefix: String = chars.by_ref().take(3).collect();
    let rest: Vec<char> = chars.collect();
    (prefix.eq_ignore_ascii_case("COM") || prefix.eq_ignore_ascii_case("LPT"))
        && rest.len() == 1
        && (rest[0].is_ascii_digit() || matches!(rest[0], '¹' | '²' | '³'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names() {
        for n in [
            "CON",
            "con",
            "Nul.txt",
            "COM1",
            "lpt9.tar.gz",
            "COM¹",
            "aux ",
            "PRN.x",
        ] {
            assert!(is_reserved(n), "{n}");
        }
        for n in ["CONSOLE", "COM10", "nully", "COM", "xCON", "LPTX"] {
            assert!(!is_reserved(n), "{n}");
        }
    }
}
