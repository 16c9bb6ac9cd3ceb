//! Property tests of `Keys`: an id is data, never key structure or pattern syntax.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use dashcache::glob::matches;
use dashcache::{ErrorKind, Keys};
use proptest::prelude::*;

/// Ids made of the characters that could change a key's shape: the separator, every glob
/// metacharacter, hash-tag braces, the escape character itself, and ordinary text.
const ID: &str = "[a-c0-9:*?\\[\\]\\\\{}%é-]{1,12}";

fn keys() -> Keys {
    Keys::new("app", ["authz", "user"]).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn different_ids_never_collide(a in ID, b in ID, tail in "[a-z]{1,5}") {
        let k = keys();
        let ka = k.key(["authz", a.as_str(), tail.as_str()]).unwrap();
        let kb = k.key(["authz", b.as_str(), tail.as_str()]).unwrap();
        prop_assert_eq!(a == b, ka == kb);
        // Nor can two segments be forged from one.
        let joined = format!("{a}:{tail}");
        let one = k.key(["authz", joined.as_str()]).unwrap();
        prop_assert_ne!(one, ka);
    }

    #[test]
    fn a_pattern_matches_only_its_own_ids_keys(owner in ID, other in ID, tail in "[a-z]{1,5}") {
        let k = keys();
        let pattern = k.pattern(["authz", owner.as_str()]).unwrap();
        let own = k.key(["authz", owner.as_str(), tail.as_str()]).unwrap();
        let foreign = k.key(["authz", other.as_str(), tail.as_str()]).unwrap();
        let other_ns = k.key(["user", owner.as_str(), tail.as_str()]).unwrap();
        prop_assert!(matches(&pattern, &own), "{} !~ {}", pattern, own);
        prop_assert_eq!(matches(&pattern, &foreign), owner == other, "{} vs {}", pattern, foreign);
        prop_assert!(!matches(&pattern, &other_ns));
    }

    #[test]
    fn segments_hold_no_structure_characters(id in ID) {
        let key = keys().key(["user", id.as_str()]).unwrap();
        let segment = key.strip_prefix("app:user:").unwrap();
        prop_assert!(!segment.contains([':', '*', '?', '[', ']', '\\', '{', '}']), "{}", segment);
        prop_assert!(dashcache::glob::is_literal(&key));
    }

    #[test]
    fn whitespace_and_control_characters_are_refused(
        before in "[a-z]{0,3}",
        bad in "[ \t\r\n\u{0}\u{7f}\u{85}\u{a0}\u{2028}\u{3000}]",
        after in "[a-z]{0,3}",
    ) {
        let id = format!("{before}{bad}{after}");
        let err = keys().key(["user", id.as_str()]).unwrap_err();
        prop_assert_eq!(err.kind(), ErrorKind::InvalidKey);
    }
}
