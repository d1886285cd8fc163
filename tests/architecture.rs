//! The layering of `src/` (ARCHITECTURE.md): no top-level module names one above it.
//!
//! The declared order is the ```` ```layers ```` block of ARCHITECTURE.md, bottom first. An
//! edge `A -> B` is any path in the code of a file of module `A` (comments and string
//! literals excluded) that reaches module `B`: `crate::b::…`, `crate::{b::…, …}`, a root
//! re-export `crate::Name` (resolved through `src/lib.rs`'s `pub use b::…{Name}`), or
//! `super::…` past the top of `A`. `A` may name only modules listed before it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// One forbidden edge.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    path: String,
    from: String,
    to: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: `{}` names `{}`, and `{}` is not below `{}` in ARCHITECTURE.md",
            self.file, self.line, self.from, self.path, self.to, self.from
        )
    }
}

/// The module names of the ```` ```layers ```` block, bottom first.
fn declared_layers(architecture_md: &str) -> Vec<String> {
    let mut layers = Vec::new();
    let mut inside = false;
    for line in architecture_md.lines() {
        let t = line.trim();
        if t == "```layers" {
            inside = true;
        } else if inside && t.starts_with("```") {
            break;
        } else if inside && !t.is_empty() {
            layers.push(t.to_string());
        }
    }
    layers
}

/// Replaces comments and the contents of string and char literals by spaces, keeping
/// line breaks, so that only code remains and line numbers still match.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |c: u8| if c == b'\n' { b'\n' } else { b' ' };
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(b[i]));
                    i += 1;
                }
            }
        } else if b[i] == b'"' || (b[i] == b'r' && b.get(i + 1).is_some_and(|&c| c == b'#')) {
            // A string, or a raw string r#"…"#.
            let mut hashes = 0;
            if b[i] == b'r' {
                out.push(b' ');
                i += 1;
                while i < b.len() && b[i] == b'#' {
                    hashes += 1;
                    out.push(b' ');
                    i += 1;
                }
            }
            out.push(b' ');
            i += 1;
            while i < b.len() {
                if hashes == 0 && b[i] == b'\\' {
                    out.push(b' ');
                    out.push(blank(*b.get(i + 1).unwrap_or(&b' ')));
                    i += 2;
                    continue;
                }
                if b[i] == b'"' && b[i + 1..].iter().take(hashes).all(|&c| c == b'#') {
                    out.extend(std::iter::repeat_n(b' ', 1 + hashes));
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(b[i]));
                i += 1;
            }
        } else if b[i] == b'\'' && (b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\')) {
            // A char literal ('x' or '\n'); lifetimes ('a) are left alone.
            let end = b[i + 1..]
                .iter()
                .position(|&c| c == b'\'')
                .map_or(b.len(), |p| i + 2 + p);
            out.extend(std::iter::repeat_n(b' ', end - i));
            i = end;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first segment of each path of a use tree: `a::b` → `a`; `{a::b, c, d::{e}}` → `a, c,
/// d`. `text` starts right after `crate::` (or a `super::` chain).
fn first_segments(text: &str) -> Vec<String> {
    let t = text.trim_start();
    if let Some(rest) = t.strip_prefix('{') {
        let mut depth = 0;
        let mut items = Vec::new();
        let mut cur = String::new();
        for c in rest.chars() {
            match c {
                '{' => {
                    depth += 1;
                    cur.push(c);
                }
                '}' if depth == 0 => break,
                '}' => {
                    depth -= 1;
                    cur.push(c);
                }
                ',' if depth == 0 => items.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        items.push(cur);
        items
            .iter()
            .map(|i| i.trim().chars().take_while(|&c| is_ident(c)).collect())
            .filter(|s: &String| !s.is_empty() && s != "self")
            .collect()
    } else {
        let s: String = t.chars().take_while(|&c| is_ident(c)).collect();
        if s.is_empty() { vec![] } else { vec![s] }
    }
}

/// Root re-exports of `lib.rs`: `pub use module::…::Name` → (`Name`, `module`).
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let code = code_only(lib);
    let mut map = BTreeMap::new();
    for stmt in code.split(';') {
        let Some(pos) = stmt.find("pub use ") else {
            continue;
        };
        let tree = stmt[pos + "pub use ".len()..].trim();
        let module: String = tree.chars().take_while(|&c| is_ident(c)).collect();
        // Every name in the tree: the last identifier before `,`, `}` or the end.
        let mut names = Vec::new();
        let mut cur = String::new();
        for c in tree[module.len()..].chars() {
            if is_ident(c) {
                cur.push(c);
            } else if c == ':' {
                cur.clear();
            } else if (matches!(c, ',' | '}' | '{') || c.is_whitespace()) && !cur.is_empty() {
                names.push(std::mem::take(&mut cur));
            }
        }
        if !cur.is_empty() {
            names.push(cur);
        }
        for n in names {
            if n != "self" && n != "as" {
                map.insert(n, module.clone());
            }
        }
    }
    map
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file below `src`: `request/stream.rs` → [request, stream];
/// `context/mod.rs` → [context].
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs").to_string();
        if stem != "mod" {
            parts.push(stem);
        }
    }
    parts
}

/// Checks a source tree against the declared layers. Returns the violations, plus the
/// top-level modules the declaration is missing.
fn check(src: &Path, layers: &[String]) -> (Vec<Violation>, Vec<String>) {
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let lib = fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let reexports = root_reexports(&lib);
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut violations = Vec::new();
    let mut undeclared = Vec::new();
    for file in &files {
        if file.parent() == Some(src) && file.file_name().is_some_and(|n| n == "lib.rs") {
            continue; // the wiring: it names every module
        }
        let path = module_path(src, file);
        let Some(top) = path.first().cloned() else {
            continue;
        };
        let Some(&from_rank) = rank.get(top.as_str()) else {
            if !undeclared.contains(&top) {
                undeclared.push(top);
            }
            continue;
        };
        let text = fs::read_to_string(file).unwrap_or_default();
        let code = code_only(&text);
        let shown = file
            .strip_prefix(src.parent().unwrap_or(src))
            .unwrap_or(file);
        for (lineno, line) in code.lines().enumerate() {
            // Every occurrence of `crate::` or a `super::` chain that leaves `top`.
            let mut targets: Vec<(String, String)> = Vec::new();
            let mut rest = line;
            while let Some(p) = rest.find("crate::") {
                let preceded = rest[..p]
                    .chars()
                    .last()
                    .is_some_and(|c| is_ident(c) || c == '$');
                let after = &rest[p + "crate::".len()..];
                if !preceded {
                    for seg in first_segments(after) {
                        let shown_path =
                            format!("crate::{}", after.trim_end().trim_end_matches(';'));
                        targets.push((seg, shown_path));
                    }
                }
                rest = after;
            }
            let mut rest = line;
            while let Some(p) = rest.find("super::") {
                let preceded = rest[..p].chars().last().is_some_and(is_ident);
                let mut after = &rest[p..];
                let mut n = 0;
                while let Some(a) = after.strip_prefix("super::") {
                    n += 1;
                    after = a;
                }
                if !preceded && n >= path.len() {
                    for seg in first_segments(after) {
                        targets.push((seg, rest[p..].trim_end().to_string()));
                    }
                }
                rest = after;
            }
            for (seg, shown_path) in targets {
                let to = if rank.contains_key(seg.as_str()) {
                    seg
                } else if let Some(m) = reexports.get(&seg) {
                    m.clone()
                } else {
                    continue; // a macro or an item of lib.rs itself
                };
                if to == top {
                    continue;
                }
                let ok = rank.get(to.as_str()).is_some_and(|&r| r < from_rank);
                if !ok {
                    violations.push(Violation {
                        file: shown.display().to_string(),
                        line: lineno + 1,
                        path: shown_path.chars().take(80).collect(),
                        from: top.clone(),
                        to,
                    });
                }
            }
        }
    }
    (violations, undeclared)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_module_names_a_module_above_it() {
    let md = fs::read_to_string(repo().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let layers = declared_layers(&md);
    assert!(
        layers.len() >= 10,
        "the ```layers block of ARCHITECTURE.md lists too few modules: {layers:?}"
    );
    let (violations, undeclared) = check(&repo().join("src"), &layers);
    let report: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
    assert!(
        report.is_empty(),
        "imports against the layering:\n{}",
        report.join("\n")
    );
    assert!(
        undeclared.is_empty(),
        "top-level modules missing from the ```layers block of ARCHITECTURE.md: {undeclared:?}"
    );
}

#[test]
fn every_declared_layer_is_a_module_of_src() {
    let md = fs::read_to_string(repo().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    for layer in declared_layers(&md) {
        let src = repo().join("src");
        assert!(
            src.join(format!("{layer}.rs")).is_file() || src.join(&layer).join("mod.rs").is_file(),
            "ARCHITECTURE.md declares `{layer}`, which is not a module of src/"
        );
    }
}

/// The checker itself: a small tree with one import of each forbidden kind, and allowed
/// ones beside them.
#[test]
fn the_checker_reports_each_kind_of_upward_import_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("low")).expect("mkdir");
    fs::create_dir_all(src.join("high")).expect("mkdir");
    fs::write(
        src.join("lib.rs"),
        "mod low;\nmod high;\npub use high::{Top, inner::Deep as Renamed};\n",
    )
    .expect("write");
    fs::write(
        src.join("high/mod.rs"),
        "use crate::low::Thing;\npub struct Top;\n",
    )
    .expect("write");
    fs::write(
        src.join("low/mod.rs"),
        "mod deep;\n\
         // crate::high in a comment is fine\n\
         const S: &str = \"crate::high in a string is fine\";\n\
         use crate::high::Top;\n",
    )
    .expect("write");
    fs::write(
        src.join("low/deep.rs"),
        "use crate::{low, high::Top};\n\
         fn f() -> crate::Top { todo!() }\n\
         use super::super::high;\n\
         use super::Sibling;\n",
    )
    .expect("write");
    let layers = vec!["low".to_string(), "high".to_string()];
    let (v, undeclared) = check(&src, &layers);
    let got: Vec<(String, usize, String)> = v
        .iter()
        .map(|v| (v.file.clone(), v.line, v.to.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("src/low/deep.rs".to_string(), 1, "high".to_string()),
            ("src/low/deep.rs".to_string(), 2, "high".to_string()),
            ("src/low/deep.rs".to_string(), 3, "high".to_string()),
            ("src/low/mod.rs".to_string(), 4, "high".to_string()),
        ],
        "{v:#?}"
    );
    assert!(v[0].to_string().contains("src/low/deep.rs:1"), "{}", v[0]);
    assert!(
        v[0].path.starts_with("crate::{low, high::Top}"),
        "{}",
        v[0].path
    );
    assert!(undeclared.is_empty());

    // A module missing from the declaration is reported too.
    let (_, undeclared) = check(&src, &["low".to_string()]);
    assert_eq!(undeclared, vec!["high".to_string()]);
}

#[test]
fn root_reexports_resolve_to_their_module() {
    let map = root_reexports(
        "pub use context::ServerHandle;\n#[cfg(unix)]\npub use signal::{Stoppable, shutdown_on_ctrl_c};\npub use options::{\n    DEFAULT_BACKLOG, Overload,\n};\n",
    );
    assert_eq!(map.get("ServerHandle").map(String::as_str), Some("context"));
    assert_eq!(
        map.get("shutdown_on_ctrl_c").map(String::as_str),
        Some("signal")
    );
    assert_eq!(map.get("Overload").map(String::as_str), Some("options"));
}
