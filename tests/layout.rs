//! The layout stays one-way: every top-level module of `src/` refers only to
//! modules of its own rank or lower (the order of the README's
//! "Architecture" section), read from the `crate::` paths of the source.
//!
//! Test code (`#[cfg(test)]` items and the files they declare) is left out:
//! a unit test may drive its module with a later stage. Comments are left
//! out too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top-level modules, bottom to top; a module may use its own rank or lower.
const ORDER: &[&[&str]] = &[
    &["fault", "record"],
    &["config"],
    &["observability"],
    &["schema"],
    &["registry"],
    &["source"],
    &["decode"],
    &["transform"],
    &["conform"],
    &["quarantine"],
    &["sink"],
    &["pipeline"],
    &["commands"],
];

/// Upward references other moves of issue 14 remove: (file, module it
/// refers to, who removes it). A listed edge that is gone fails the test, so
/// the list only shrinks.
const TEMPORARY: &[(&str, &str, &str)] = &[];

/// One reference from a file to a top-level module.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    file: String,
    line: usize,
    from: String,
    to: String,
}

#[test]
fn modules_refer_only_to_their_own_rank_or_lower() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let refs = references(root);
    assert!(
        refs.len() > 100,
        "only {} references found: is the parser broken?",
        refs.len()
    );
    let mut problems = check(&refs, TEMPORARY);
    let used: BTreeSet<(&str, &str)> = refs
        .iter()
        .map(|r| (r.file.as_str(), r.to.as_str()))
        .collect();
    for (file, to, who) in TEMPORARY {
        if !used.contains(&(*file, *to)) {
            problems.push(format!(
                "temporary exception {file} -> {to} ({who}) is gone: delete it from TEMPORARY in tests/layout.rs"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "the layout is one-way (see README \"Architecture\"):\n{}",
        problems.join("\n")
    );
}

/// The checker finds upward references in plain, grouped and `super::`
/// paths, and leaves out comments, strings and test code.
#[test]
fn an_upward_reference_is_reported_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("config")).unwrap();
    std::fs::create_dir_all(src.join("sink")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod config;\npub mod sink;\n").unwrap();
    std::fs::write(
        src.join("config/mod.rs"),
        "//! Uses [`crate::sink`] in a comment only.\n\
         mod inner;\n\
         use crate::fault::Backoff;\n\
         const URL: &str = \"crate::sink:: in a string\";\n\
         use crate::{fault, sink::DeltaSink};\n\
         #[cfg(test)]\n\
         mod tests {\n    use crate::sink::DeltaSink;\n}\n\
         #[cfg(test)]\n\
         mod more_tests;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("config/inner.rs"),
        "fn f() { let _ = super::super::pipeline::run(); }\n",
    )
    .unwrap();
    std::fs::write(
        src.join("config/more_tests.rs"),
        "use crate::commands::x;\n",
    )
    .unwrap();
    std::fs::write(src.join("sink/mod.rs"), "use crate::config::Config;\n").unwrap();
    let refs = references(dir.path());
    let problems = check(&refs, &[]);
    assert_eq!(
        problems,
        [
            "src/config/inner.rs:1: config -> pipeline (config may use only its own rank or lower)",
            "src/config/mod.rs:5: config -> sink (config may use only its own rank or lower)",
        ],
        "{refs:#?}"
    );
    // A listed exception lets one file's edge through, not the module's.
    let problems = check(&refs, &[("src/config/mod.rs", "sink", "test")]);
    assert_eq!(problems.len(), 1, "{problems:?}");
}

fn rank(module: &str) -> Option<usize> {
    ORDER.iter().position(|rank| rank.contains(&module))
}

/// The upward references in `refs` not in `exceptions`, one line each.
fn check(refs: &[Reference], exceptions: &[(&str, &str, &str)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut unknown = BTreeSet::new();
    for r in refs {
        let (Some(from), Some(to)) = (rank(&r.from), rank(&r.to)) else {
            for m in [&r.from, &r.to] {
                if rank(m).is_none() && unknown.insert(m.clone()) {
                    problems.push(format!(
                        "{}:{}: `{m}` has no rank: name the module it lives in, or place a new module in ORDER in tests/layout.rs",
                        r.file, r.line
                    ));
                }
            }
            continue;
        };
        let excepted = exceptions
            .iter()
            .any(|(file, to, _)| *file == r.file && *to == r.to);
        if to > from && !excepted {
            problems.push(format!(
                "{}:{}: {} -> {} ({} may use only its own rank or lower)",
                r.file, r.line, r.from, r.to, r.from
            ));
        }
    }
    problems
}

/// Every reference to another top-level module from the non-test code of
/// `root/src` (the library's modules; `lib.rs`, `main.rs` and `bin/` are the
/// top and not checked).
fn references(root: &Path) -> Vec<Reference> {
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut test_files = BTreeSet::new();
    let mut code = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let (blanked, tests) = without_tests(&text, &blank(&text), path);
        test_files.extend(tests);
        code.push((path.clone(), blanked));
    }
    let mut refs = Vec::new();
    for (path, code) in code {
        if test_files.contains(&path) {
            continue;
        }
        let rel = path.strip_prefix(&src).unwrap();
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
            .collect();
        if parts.len() == 1 && matches!(parts[0].as_str(), "lib" | "main") || parts[0] == "bin" {
            continue;
        }
        let file = format!("src/{}", rel.display());
        for (line, to) in crate_paths(&code, &parts) {
            if to != parts[0] {
                refs.push(Reference {
                    file: file.clone(),
                    line,
                    from: parts[0].clone(),
                    to,
                });
            }
        }
    }
    refs
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `text` with comments, string and char literals replaced by spaces (byte
/// for byte, line breaks kept: offsets and lines stay those of `text`).
fn blank(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let hide = |out: &mut String, ch: char| {
        if ch == '\n' {
            out.push('\n');
        } else {
            out.extend(std::iter::repeat_n(' ', ch.len_utf8()));
        }
    };
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let at = |k: usize| c.get(i + k).copied().unwrap_or('\0');
        let raw_start = c[i] == 'r'
            && (at(1) == '"' || (at(1) == '#' && matches!(at(2), '"' | '#')))
            && match i.checked_sub(1).map(|p| c[p]) {
                None => true,
                Some('b') => i < 2 || !ident(c[i - 2]),
                Some(p) => !ident(p),
            };
        if c[i] == '/' && at(1) == '/' {
            while i < c.len() && c[i] != '\n' {
                hide(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '/' && at(1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                let pair = (c[i], c.get(i + 1).copied().unwrap_or('\0'));
                if pair == ('/', '*') || pair == ('*', '/') {
                    depth += if pair.0 == '/' { 1 } else { -1 };
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    hide(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if raw_start {
            // r"…", r#"…"#: up to the quote followed by as many `#`.
            let mut hashes = 0;
            i += 1;
            while c[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            out.extend(std::iter::repeat_n(' ', hashes + 2));
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                    out.extend(std::iter::repeat_n(' ', hashes + 1));
                    i += hashes + 1;
                    break;
                }
                hide(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '"' || (c[i] == '\'' && (at(2) == '\'' || at(1) == '\\')) {
            // A string, or a char literal ('x', '\n', '\u{..}'), not a lifetime.
            let quote = c[i];
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != quote {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    hide(&mut out, c[i]);
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// `code` (`text` blanked) without its `#[cfg(test)]` items, and the files
/// of the `#[cfg(test)] mod x;` declarations in it.
fn without_tests(text: &str, code: &str, path: &Path) -> (String, Vec<PathBuf>) {
    const CFG_TEST: &str = "#[cfg(test)]";
    let here = path.parent().unwrap().to_path_buf();
    let dir = if path
        .file_name()
        .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
    {
        here.clone()
    } else {
        path.with_extension("")
    };
    let mut out = code.as_bytes().to_vec();
    let mut files = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(CFG_TEST).map(|p| p + from) {
        let mut i = at + CFG_TEST.len();
        // Further attributes, e.g. #[path = "…"] (its string is blanked:
        // read it from `text`, whose offsets are the same).
        let mut explicit_path = None;
        loop {
            let trimmed = code[i..].trim_start();
            i = code.len() - trimmed.len();
            if !trimmed.starts_with("#[") {
                break;
            }
            let end = i + trimmed.find(']').unwrap() + 1;
            if trimmed.starts_with("#[path") {
                explicit_path = Some((i, end));
            }
            i = end;
        }
        let item_end = code[i..].find([';', '{']).map(|p| p + i).unwrap();
        let end = if code.as_bytes()[item_end] == b';' {
            let words: Vec<&str> = code[i..item_end].split_whitespace().collect();
            if let Some(pos) = words.iter().position(|w| *w == "mod") {
                let name = words[pos + 1];
                match explicit_path {
                    Some((from, to)) => {
                        let attr = &text[from..to];
                        let file = attr.split('"').nth(1).unwrap();
                        files.push(here.join(file));
                    }
                    None => {
                        files.push(dir.join(format!("{name}.rs")));
                        files.push(dir.join(name).join("mod.rs"));
                    }
                }
            }
            item_end + 1
        } else {
            let mut depth = 0;
            let mut j = item_end;
            for (k, ch) in code[item_end..].char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    j = item_end + k + 1;
                    break;
                }
            }
            j
        };
        for b in &mut out[at..end] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
        from = end;
    }
    (String::from_utf8_lossy(&out).into_owned(), files)
}

/// The top-level module each `crate::…` or `super::…` path in `code` leads
/// to, with its line; `module` is the file's module path (`["sink",
/// "delta"]`). Grouped imports (`use crate::{a, b::c}`) give one per group
/// member.
fn crate_paths(code: &str, module: &[String]) -> Vec<(usize, String)> {
    let mut module = module.to_vec();
    if module.last().is_some_and(|m| m == "mod") {
        module.pop();
    }
    let mut out = Vec::new();
    let word_start = |s: &str, at: usize| {
        at == 0 || {
            let b = s.as_bytes()[at - 1];
            !(b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        }
    };
    for (n, line) in code.lines().enumerate() {
        let mut from = 0;
        while from < line.len() {
            let rest = &line[from..];
            let (at, len, up) = match (rest.find("crate::"), rest.find("super::")) {
                (Some(c), Some(s)) if s < c => (s, 0, true),
                (Some(c), _) => (c, "crate::".len(), false),
                (None, Some(s)) => (s, 0, true),
                (None, None) => break,
            };
            let start = from + at;
            from = start + 1;
            if !word_start(line, start) {
                continue;
            }
            let mut tail = &line[start + len..];
            if up {
                let mut levels = 0;
                while let Some(t) = tail.strip_prefix("super::") {
                    levels += 1;
                    tail = t;
                }
                from = line.len() - tail.len();
                // Leaves the top-level module only when it climbs to the root.
                if levels < module.len() {
                    continue;
                }
            }
            if let Some(group) = tail.strip_prefix('{') {
                // Members at depth 0 of the group; it may span lines, but
                // inlet's grouped crate imports fit on one.
                let mut depth = 0;
                let mut member_start = true;
                for (k, ch) in group.char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => member_start = true,
                        c if member_start && (c.is_alphanumeric() || c == '_') => {
                            member_start = false;
                            let name: String = group[k..]
                                .chars()
                                .take_while(|c| c.is_alphanumeric() || *c == '_')
                                .collect();
                            out.push((n + 1, name));
                        }
                        _ => {}
                    }
                }
            } else {
                let name: String = tail
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push((n + 1, name));
                }
            }
        }
    }
    out
}
