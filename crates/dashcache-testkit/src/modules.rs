//! The import graph of a crate's top-level modules, and the check that it has no loops.
//!
//! A module `a` *uses* `b` when code in `src/a.rs` or `src/a/…` names `crate::b` (directly,
//! in a grouped `use crate::{…}`, or through a re-export of `lib.rs` such as
//! `crate::RedisCache`, which counts as the module it comes from). Comments are skipped;
//! `super::` paths are not followed (they stay inside a module, or reach a parent from a test
//! module that the graph does not care about). `lib.rs` and `main.rs` wire everything and are
//! not part of the graph.
//!
//! [`assert_no_loops`] is what a crate's architecture test calls; [`graph`] gives the edges,
//! for a reader who wants to see the direction.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module → the modules it uses.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The import graph of the crate whose `src/` is under `crate_dir`.
///
/// # Panics
/// When `src/` cannot be read.
pub fn graph(crate_dir: &Path) -> Graph {
    let src = crate_dir.join("src");
    let reexports = reexports(&src);
    let mut graph = Graph::new();
    for entry in read_dir(&src) {
        let name = entry
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        if matches!(name.as_str(), "lib" | "main") {
            continue;
        }
        let is_module_file = entry.extension().is_some_and(|e| e == "rs");
        if !entry.is_dir() && !is_module_file {
            continue;
        }
        let mut uses = BTreeSet::new();
        for file in rust_files(&entry) {
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            for used in crate_paths(&text) {
                let module = reexports.get(&used).cloned().unwrap_or(used);
                if module != name {
                    uses.insert(module);
                }
            }
        }
        graph.entry(name).or_default().extend(uses);
    }
    // Only modules count (a `crate::` path may name a macro or an item of lib.rs itself).
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|m| modules.contains(m));
    }
    graph
}

/// Prints the crate's module graph; panics with the loop when it has one.
///
/// # Panics
/// On a loop, naming its modules in order.
pub fn assert_no_loops(crate_dir: &Path) {
    let graph = graph(crate_dir);
    // Shown with `--nocapture`: how a reader sees the direction.
    println!("{}", render(&graph));
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "module loop in {}: {}\nthe graph:\n{}",
            crate_dir.display(),
            cycle.join(" → "),
            render(&graph)
        );
    }
}

/// One line per module: `a → b, c`.
pub fn render(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(m, uses)| {
            let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
            format!("  {m} → {}", uses.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A loop of the graph (its first module repeated at the end), if it has one.
pub fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|m| m == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut marks, &mut Vec::new()))
}

/// `Name → module` for every `pub use module::…` of `lib.rs`.
fn reexports(src: &Path) -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let mut map = BTreeMap::new();
    for statement in code(&lib).split(';') {
        let statement = statement.trim();
        let Some(path) = statement
            .strip_prefix("pub use ")
            .or_else(|| statement.strip_prefix("pub(crate) use "))
        else {
            continue;
        };
        let Some((module, items)) = path.split_once("::") else {
            continue;
        };
        for item in leaves(items) {
            let name = item
                .rsplit(" as ")
                .next()
                .unwrap_or(&item)
                .trim()
                .to_owned();
            map.insert(name, module.trim().to_owned());
        }
    }
    map
}

/// The last segment of every path in a (possibly grouped) `use` tree: `{a::B, C as D}` →
/// `B`, `C as D`.
fn leaves(tree: &str) -> Vec<String> {
    heads_of_group(tree)
        .into_iter()
        .map(|p| p.rsplit("::").next().unwrap_or(&p).trim().to_owned())
        .collect()
}

/// The module (first segment) named by each `crate::` path in `text`'s code.
fn crate_paths(text: &str) -> Vec<String> {
    let code = without_test_modules(&code(text));
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        // `dashcache_testkit::` and the like end in `crate::` without being it.
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if rest.starts_with('{') {
            found.extend(heads_of_group(rest));
        } else {
            found.push(ident(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
        .into_iter()
        .map(|p| p.split("::").next().unwrap_or_default().trim().to_owned())
        .collect()
}

/// The paths of the group `{a::b, c, d::{e, f}}` at its start, each as written.
fn heads_of_group(text: &str) -> Vec<String> {
    let Some(body) = text.trim_start().strip_prefix('{') else {
        return vec![ident(text)];
    };
    let mut depth = 0usize;
    let mut parts = Vec::new();
    let mut current = String::new();
    for c in body.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The identifier at the start of `text`.
fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// `text` without comments (line, doc and block comments) and the contents of string and
/// character literals (raw strings included), so a path in a doc example or a message does
/// not count.
fn code(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        match (c[i], at(i + 1)) {
            ('/', '/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            ('/', '*') => {
                i += 2;
                while i < c.len() && !(c[i] == '*' && at(i + 1) == '/') {
                    i += 1;
                }
                i += 2;
            }
            ('r', '"' | '#') if !at(i.wrapping_sub(1)).is_alphanumeric() => {
                let mut j = i + 1;
                let mut hashes = 0;
                while at(j) == '#' {
                    hashes += 1;
                    j += 1;
                }
                if at(j) != '"' {
                    out.push(c[i]);
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= c.len() {
                        break;
                    }
                    if c[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#') {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            ('"', _) => {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    i += if c[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            // A character literal ('x', '\n', '"'); a lifetime ('a) has no closing quote.
            ('\'', '\\') => {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            }
            ('\'', _) if at(i + 2) == '\'' => i += 3,
            _ => {
                out.push(c[i]);
                i += 1;
            }
        }
    }
    out
}

/// `code` without its `#[cfg(test)] mod … { … }` blocks: what tests import is not the
/// architecture.
fn without_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let is_module = after.trim_start().starts_with("mod ");
        let open = after.find(['{', ';']);
        match open {
            Some(open) if is_module && after.as_bytes()[open] == b'{' => {
                let mut depth = 0usize;
                let mut end = after.len();
                for (i, c) in after[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = open + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &after[end..];
            }
            _ => {
                out.push_str("#[cfg(test)]");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    entries
}

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        read_dir(path).iter().flat_map(|p| rust_files(p)).collect()
    } else if path.extension().is_some_and(|e| e == "rs") {
        vec![path.to_path_buf()]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_found_in_code_only() {
        let text = r#"
            use crate::{cache::Cache, error::{Error, Result}};
            use crate::RedisCache;
            // crate::commented
            /// [`x`](crate::doc)
            let s = "crate::string";
            other_crate::not_this();
            fn f() -> crate::key::Keys { todo() }
            #[cfg(test)]
            mod tests { use crate::memory::MemoryCache; fn g() { if x { y } } }
        "#;
        assert_eq!(
            crate_paths(text),
            ["cache", "error", "RedisCache", "key"].map(str::to_owned)
        );
    }

    #[test]
    fn a_loop_is_found_and_a_tree_passes() {
        let mut g = Graph::new();
        g.entry("a".into()).or_default().insert("b".into());
        g.entry("b".into()).or_default().insert("c".into());
        g.entry("c".into()).or_default();
        assert_eq!(find_cycle(&g), None);
        g.entry("c".into()).or_default().insert("a".into());
        assert_eq!(
            find_cycle(&g),
            Some(["a", "b", "c", "a"].map(str::to_owned).to_vec())
        );
    }
}
