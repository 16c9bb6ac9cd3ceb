//! Free text from clients — names, descriptions, e-mail addresses — checked in one place before
//! it reaches the database: no control characters (NUL breaks PostgreSQL's text, and the rest
//! break logs and terminals), no Unicode format characters (bidi overrides and zero-width
//! characters make one string look like another), bounded lengths. A refusal is a 400 naming
//! the field. A leaf: routes and the CLI use it.

use crate::error::AppError;

/// `value` of `field` when it is 1 to `max_chars` characters of printable text, not blank.
///
/// # Errors
/// [`AppError::InvalidField`] naming `field` and what is wrong.
pub(crate) fn free_text<'a>(
    field: &'static str,
    value: &'a str,
    max_chars: usize,
) -> Result<&'a str, AppError> {
    let invalid = |reason: String| AppError::InvalidField { field, reason };
    if value.trim().is_empty() {
        return Err(invalid("must not be empty".into()));
    }
    let count = value.chars().count();
    if count > max_chars {
        return Err(invalid(format!(
            "has {count} characters, at most {max_chars} are allowed"
        )));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(invalid(format!(
            "contains the control character U+{:04X}",
            u32::from(c)
        )));
    }
    if let Some(c) = value.chars().find(|c| is_format(*c) || is_noncharacter(*c)) {
        return Err(invalid(format!(
            "contains the invisible character U+{:04X} (bidi controls and zero-width \
             characters are refused)",
            u32::from(c)
        )));
    }
    Ok(value)
}

/// `value` of `field` when it is an e-mail address: printable text of at most 254 characters,
/// one `@` with something on each side, no white space.
///
/// # Errors
/// [`AppError::InvalidField`] naming `field`.
pub(crate) fn email<'a>(field: &'static str, value: &'a str) -> Result<&'a str, AppError> {
    let value = free_text(field, value, 254)?;
    let shaped = value.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !domain.contains('@')
    });
    if !shaped || value.chars().any(char::is_whitespace) {
        return Err(AppError::InvalidField {
            field,
            reason: "is not an e-mail address".into(),
        });
    }
    Ok(value)
}

/// Unicode's format characters (general category Cf): invisible, and they change how the
/// text around them is shown.
fn is_format(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Code points Unicode reserves as never assigned (U+FDD0–U+FDEF, and the last two of every
/// plane): no text needs them.
fn is_noncharacter(c: char) -> bool {
    let n = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&n) || (n & 0xFFFE) == 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_passes_and_the_rest_names_the_field() {
        assert_eq!(free_text("name", "Zoë 李 ✓", 100).ok(), Some("Zoë 李 ✓"));
        for bad in [
            "",
            "  ",
            "Bob\0x",
            "a\u{202e}b",
            "a\u{200b}b",
            "tab\there",
            "\u{FFFF}",
        ] {
            let err = free_text("name", bad, 100).err().map(|e| e.to_string());
            assert!(err.is_some_and(|e| e.starts_with("name ")), "{bad:?}");
        }
        assert!(free_text("name", &"x".repeat(101), 100).is_err());
        assert!(email("email", "bob@example.com").is_ok());
        for bad in ["bob", "@x", "x@", "a b@c", "a@b@c", "a\u{202e}@b"] {
            assert!(email("email", bad).is_err(), "{bad:?}");
        }
    }
}
