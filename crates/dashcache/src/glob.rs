//! Redis-compatible glob matching, so `delete_pattern` selects the same keys on every backend.
//!
//! The semantics are those of Redis' `stringmatchlen` (used by `SCAN MATCH` and `KEYS`), byte
//! for byte, quirks included:
//!
//! - `*` matches any run of bytes (also empty), `?` exactly one byte;
//! - `[abc]`, `[^abc]` (negated), `[a-z]` (a reversed range `[z-a]` is the same range), and `\x`
//!   inside a class for a literal `x`;
//! - `\x` outside a class matches `x` literally; a trailing lone `\` matches a `\`;
//! - a class left open at the end of the pattern (`[ab`) is closed there;
//! - range bounds compare as C `char`, which is signed on the platforms Redis ships for, so a
//!   range is interpreted the same way here;
//! - a pattern nesting more than 1000 `*` is refused (matches nothing), as Redis does.
//!
//! A differential property test (`tests/glob_vs_redis.rs`) drives this and a real
//! `redis-server` with random patterns and keys.

/// Whether `key` matches the Redis glob `pattern`.
///
/// ```
/// use dashcache::glob::matches;
///
/// assert!(matches("user:*:profile", "user:42:profile"));
/// assert!(matches("user:[0-9]?", "user:42"));
/// assert!(!matches("user:\\*", "user:42"));
/// ```
pub fn matches(pattern: &str, key: &str) -> bool {
    let mut give_up = false;
    match_bytes(pattern.as_bytes(), key.as_bytes(), &mut give_up, 0)
}

/// Escapes every glob metacharacter (`* ? [ ] \`) of `literal` with a backslash, so the result
/// as a pattern matches exactly `literal`.
///
/// ```
/// use dashcache::glob::{escape, matches};
///
/// let id = "a*b";
/// assert!(matches(&escape(id), "a*b"));
/// assert!(!matches(&escape(id), "aXXb"));
/// ```
pub fn escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len() + 4);
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether `pattern` contains any unescaped metacharacter, i.e. can match more than one key.
pub fn is_literal(pattern: &str) -> bool {
    let mut bytes = pattern.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'*' | b'?' | b'[' => return false,
            b'\\' => {
                bytes.next();
            }
            _ => {}
        }
    }
    true
}

const MAX_NESTING: u32 = 1000;

/// `give_up` carries Redis' pruning across recursion: once the tail after a `*` fails to match
/// at every position, no earlier `*` can make it match by consuming more, so every caller stops.
fn match_bytes(mut p: &[u8], mut s: &[u8], give_up: &mut bool, nesting: u32) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    while let (Some(&pc), Some(&sc)) = (p.first(), s.first()) {
        match pc {
            b'*' => {
                while p.get(1) == Some(&b'*') {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                while !s.is_empty() {
                    if match_bytes(&p[1..], s, give_up, nesting + 1) {
                        return true;
                    }
                    if *give_up {
                        return false;
                    }
                    s = &s[1..];
                }
                *give_up = true;
                return false;
            }
            b'?' => {
                s = &s[1..];
                p = &p[1..];
            }
            b'[' => {
                let (matched, rest) = match_class(&p[1..], sc);
                if !matched {
                    return false;
                }
                s = &s[1..];
                p = rest;
            }
            b'\\' if p.len() >= 2 => {
                if p[1] != sc {
                    return false;
                }
                s = &s[1..];
                p = &p[2..];
            }
            _ => {
                if pc != sc {
                    return false;
                }
                s = &s[1..];
                p = &p[1..];
            }
        }
        if s.is_empty() {
            while p.first() == Some(&b'*') {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

/// Matches one byte against the class whose body starts at `p` (just after `[`); returns the
/// verdict and the pattern after the class.
fn match_class(mut p: &[u8], c: u8) -> (bool, &[u8]) {
    let negate = p.first() == Some(&b'^');
    if negate {
        p = &p[1..];
    }
    let mut matched = false;
    loop {
        match p {
            [b'\\', escaped, rest @ ..] => {
                matched |= *escaped == c;
                p = rest;
            }
            [b']', rest @ ..] => {
                p = rest;
                break;
            }
            [] => break,
            [start, b'-', end, rest @ ..] => {
                // Redis compares `char`s, signed on x86 and ARM Linux builds.
                let (lo, hi) = {
                    let (a, b) = (*start as i8, *end as i8);
                    if a <= b { (a, b) } else { (b, a) }
                };
                matched |= (lo..=hi).contains(&(c as i8));
                p = rest;
            }
            [literal, rest @ ..] => {
                matched |= *literal == c;
                p = rest;
            }
        }
    }
    (matched != negate, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_questions() {
        assert!(matches("*", "anything"));
        assert!(matches("a*", "a"));
        assert!(matches("a*c", "abbbc"));
        assert!(!matches("a*c", "abbb"));
        assert!(matches("a**c", "ac"));
        assert!(matches("?", "x"));
        assert!(!matches("?", "xy"));
        assert!(matches("a?c*", "abcdef"));
        assert!(!matches("*", ""));
    }

    #[test]
    fn classes() {
        assert!(matches("[abc]", "b"));
        assert!(!matches("[abc]", "d"));
        assert!(matches("[^abc]", "d"));
        assert!(!matches("[^abc]", "a"));
        assert!(matches("[a-c]x", "bx"));
        assert!(matches("[c-a]", "b"), "reversed ranges are swapped");
        assert!(matches("[\\]]", "]"));
        assert!(matches("[\\-]", "-"));
        assert!(matches("[ab", "a"), "an open class is closed at the end");
        assert!(!matches("[ab", "ab"));
        assert!(
            matches("[a-]", "]"),
            "a range may end at the closing bracket, as in Redis"
        );
    }

    #[test]
    fn escapes() {
        assert!(matches("a\\*", "a*"));
        assert!(!matches("a\\*", "ab"));
        assert!(matches("a\\", "a\\"), "a trailing backslash is literal");
        assert!(matches("\\a", "a"));
    }

    #[test]
    fn escape_makes_any_text_literal() {
        for text in ["a*b", "[x]", "q?", "back\\slash", "plain", "*?[]\\"] {
            let pattern = escape(text);
            assert!(matches(&pattern, text), "{pattern}");
            assert!(is_literal(&pattern), "{pattern}");
            assert!(!matches(&pattern, &format!("{text}x")));
        }
        assert!(!is_literal("a*"));
        assert!(is_literal("a\\*"));
    }

    #[test]
    fn deep_star_nesting_is_refused_not_a_stack_overflow() {
        let pattern = "*a".repeat(5000);
        let key = "a".repeat(4000);
        assert!(!matches(&pattern, &key));
    }

    #[test]
    fn pathological_patterns_finish_quickly() {
        // Without the give-up pruning this is exponential.
        let pattern = format!("{}b", "a*".repeat(30));
        let key = "a".repeat(60);
        assert!(!matches(&pattern, &key));
    }
}
