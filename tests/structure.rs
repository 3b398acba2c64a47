//! The crate's structure: no import cycles between modules, no oversized source files
//! (ARCHITECTURE.md, code map).
//!
//! Reads `server/**/*.rs` (the binaries in `server/bin/` aside) and `client/src/**/*.rs` as
//! text. Each file belongs to a top-level module (`server/users/cache.rs` to `users`) and, inside
//! a folder module, to a first-level submodule (`users::cache`). A path a file names (`use
//! crate::…`, `use super::…` trees expanded, and `crate::…`/`super::…` paths in code) gives an
//! edge between top-level modules, or between sibling submodules of one top-level module. A
//! module's own root file (`mod.rs` or `config.rs`) is its facade: edges between it and its
//! submodules (re-exports included) are not counted. `#[cfg(test)]` items and the files of
//! `#[cfg(test)] mod name;` are left out, so tests may reach across. Any cycle fails the test,
//! printed in full; `STRUCTURE_EDGES=1` prints the whole graph.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Most lines a source file may have, its `#[cfg(test)]` items aside.
const MAX_LINES: usize = 600;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read source folder")
        .map(|e| e.expect("read entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A line without its `//` comment (one that starts the line or follows a space, so that
/// `https://` in a string stays).
fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with("//") {
        return "";
    }
    match line.find(" //") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// A source file without its `#[cfg(test)]` items.
struct Source {
    /// Lines left.
    lines: usize,
    /// The code left, without `//` comments.
    code: String,
    /// The files (or folders) of the `#[cfg(test)] mod name;` modules it declares.
    test_modules: Vec<PathBuf>,
}

/// Where `mod name;` declared in `file` lives (a file, or a folder for `name/mod.rs`).
fn declared(file: &Path, name: &str, path_attribute: Option<&str>) -> PathBuf {
    let dir = file.parent().expect("file in a folder");
    if let Some(path) = path_attribute {
        return dir.join(path);
    }
    let stem = file.file_stem().expect("file name");
    let base = if stem == "mod" || stem == "lib" {
        dir.to_path_buf()
    } else {
        dir.join(stem)
    };
    let as_file = base.join(format!("{name}.rs"));
    if as_file.is_file() {
        as_file
    } else {
        base.join(name)
    }
}

/// Reads `file`, leaving out every `#[cfg(test)]` item (a test module, a test-only method):
/// the attribute and the item up to its `;` or its closing brace.
fn without_tests(file: &Path) -> Source {
    let text = fs::read_to_string(file).expect("read source file");
    let all: Vec<&str> = text.lines().collect();
    let mut source = Source {
        lines: 0,
        code: String::new(),
        test_modules: Vec::new(),
    };
    let mut i = 0;
    while i < all.len() {
        if !all[i].trim_start().starts_with("#[cfg(test)]") {
            source.lines += 1;
            source.code.push_str(strip_comment(all[i]));
            source.code.push('\n');
            i += 1;
            continue;
        }
        i += 1;
        let mut path_attribute = None;
        while i < all.len() && all[i].trim_start().starts_with("#[") {
            let attribute = all[i].trim();
            path_attribute = attribute
                .strip_prefix("#[path = \"")
                .and_then(|rest| rest.strip_suffix("\"]"))
                .or(path_attribute);
            i += 1;
        }
        let item = all.get(i).map_or("", |line| line.trim());
        let declaration = item.strip_prefix("pub(crate) ").unwrap_or(item);
        if let Some(name) = declaration
            .strip_prefix("mod ")
            .and_then(|rest| rest.strip_suffix(';'))
        {
            source
                .test_modules
                .push(declared(file, name.trim(), path_attribute));
            i += 1;
            continue;
        }
        let (mut depth, mut opened) = (0i32, false);
        while i < all.len() {
            let line = strip_comment(all[i]);
            i += 1;
            for ch in line.chars() {
                match ch {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if (opened && depth <= 0) || (!opened && line.trim_end().ends_with(';')) {
                break;
            }
        }
    }
    source
}

/// The files under `dirs`, each read without its tests, test-only files (those of
/// `#[cfg(test)] mod name;` declarations) left out.
fn sources(dirs: &[PathBuf]) -> Vec<(PathBuf, Source)> {
    let mut files = Vec::new();
    for dir in dirs {
        rust_files(dir, &mut files);
    }
    let read: Vec<(PathBuf, Source)> = files
        .into_iter()
        .map(|file| {
            let source = without_tests(&file);
            (file, source)
        })
        .collect();
    let test_modules: Vec<PathBuf> = read
        .iter()
        .flat_map(|(_, source)| source.test_modules.iter().cloned())
        .collect();
    read.into_iter()
        .filter(|(file, _)| !test_modules.iter().any(|test| file.starts_with(test)))
        .collect()
}

/// The module path of a file under `server/`: `users/cache.rs` → `["users", "cache"]`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

/// Expands one `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        return vec![path.to_owned()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').expect("closing brace")];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .flat_map(expand)
        .map(|rest| {
            if rest == "self" {
                prefix.trim_end_matches("::").to_owned()
            } else {
                format!("{prefix}{rest}")
            }
        })
        .collect()
}

/// Every `crate::`/`super::` path the code names, resolved to an absolute module path.
fn named_paths(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut raw = Vec::new();
    let mut rest = code;
    // `use` statements, with their trees expanded.
    let mut without_uses = String::new();
    while let Some(i) = rest.find("use ") {
        let starts_word = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        without_uses.push_str(&rest[..i]);
        let after = &rest[i + 4..];
        let Some(end) = after.find(';') else { break };
        let stmt = after[..end].trim();
        if starts_word && (stmt.starts_with("crate::") || stmt.starts_with("super::")) {
            raw.extend(expand(stmt));
            rest = &after[end + 1..];
        } else {
            without_uses.push_str("use ");
            rest = after;
        }
    }
    without_uses.push_str(rest);
    // Paths written in code.
    for start in ["crate::", "super::"] {
        let mut text = without_uses.as_str();
        while let Some(i) = text.find(start) {
            let before_ok = i == 0 || {
                let b = text.as_bytes()[i - 1];
                !(b.is_ascii_alphanumeric() || b == b'_' || b == b':')
            };
            let tail = &text[i..];
            let len = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            if before_ok {
                raw.push(tail[..len].trim_end_matches(':').to_owned());
            }
            text = &text[i + len.max(1)..];
        }
    }
    raw.into_iter()
        .filter_map(|path| {
            let mut segments: Vec<&str> = path.split("::").map(str::trim).collect();
            let mut base: Vec<String> = match segments.first() {
                Some(&"crate") => Vec::new(),
                Some(&"super") => module.to_vec(),
                _ => return None,
            };
            segments.remove(0);
            if path.starts_with("super") {
                base.pop();
            }
            for segment in segments {
                if segment == "super" {
                    base.pop()?;
                } else {
                    base.push(segment.to_owned());
                }
            }
            Some(base)
        })
        .collect()
}

/// Whether `server/<path>` is a module (a file or a folder with `mod.rs`).
fn is_module(server: &Path, path: &[String]) -> bool {
    let joined: PathBuf = path.iter().collect();
    server.join(&joined).with_extension("rs").is_file()
        || server.join(&joined).join("mod.rs").is_file()
}

fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, edges, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn no_import_cycles_between_modules() {
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("server");
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, source) in sources(std::slice::from_ref(&server)) {
        let rel = file.strip_prefix(&server).expect("under server/");
        let module = module_of(rel);
        if matches!(
            module.first().map(String::as_str),
            Some("bin" | "lib" | "main")
        ) {
            continue;
        }
        for target in named_paths(&module, &source.code) {
            let Some(top) = target.first() else { continue };
            if !is_module(&server, &target[..1]) {
                continue;
            }
            if *top != module[0] {
                edges
                    .entry(module[0].clone())
                    .or_default()
                    .insert(top.clone());
            } else if module.len() > 1
                && target.len() > 1
                && target[1] != module[1]
                && is_module(&server, &target[..2])
            {
                edges
                    .entry(format!("{}::{}", module[0], module[1]))
                    .or_default()
                    .insert(format!("{}::{}", target[0], target[1]));
            }
        }
    }
    if std::env::var_os("STRUCTURE_EDGES").is_some() {
        for (a, bs) in &edges {
            eprintln!("{a} -> {bs:?}");
        }
    }
    let mut cycles = Vec::new();
    // Report every cycle: remove one edge of each found and look again.
    while let Some(cycle) = find_cycle(&edges) {
        cycles.push(cycle.join(" → "));
        edges
            .get_mut(&cycle[0])
            .expect("edge of the cycle")
            .remove(&cycle[1]);
    }
    assert!(
        cycles.is_empty(),
        "import cycles between modules:\n  {}",
        cycles.join("\n  ")
    );
}

#[test]
fn no_oversized_source_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let offenders: Vec<String> = sources(&[root.join("server"), root.join("client/src")])
        .into_iter()
        .filter_map(|(file, source)| {
            let lines = source.lines;
            (lines > MAX_LINES).then(|| {
                let rel = file.strip_prefix(root).unwrap_or(&file);
                format!("{} ({lines} lines)", rel.display())
            })
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "source files over {MAX_LINES} lines, their tests aside:\n  {}",
        offenders.join("\n  ")
    );
}
