//! The shape of `src/`, enforced: no import circle between top-level modules (a folder counts as
//! one), and no production file over `MAX_PRODUCTION_LINES` (lines before `#[cfg(test)]`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_PRODUCTION_LINES: usize = 600;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src_files() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            (rel, fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// `azure/http.rs` → `azure`, `state.rs` → `state`; `None` for the crate roots.
fn top_module(rel: &str) -> Option<String> {
    match rel.split_once('/') {
        Some((folder, _)) => Some(folder.to_string()),
        None if rel == "lib.rs" || rel == "main.rs" => None,
        None => Some(rel.trim_end_matches(".rs").to_string()),
    }
}

/// The lines before the first `#[cfg(test)]`.
fn production(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .collect()
}

/// Every top-level module named as `crate::name` in code (comments skipped).
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    for line in production(text) {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                refs.insert(name);
            } else if rest.starts_with('{') {
                // `use crate::{a, b::c}`: the names at the top of the group.
                let group = &rest[1..rest.find('}').unwrap_or(rest.len())];
                for part in group.split(',') {
                    let name = part.trim().split("::").next().unwrap_or("").trim();
                    if !name.is_empty() {
                        refs.insert(name.to_string());
                    }
                }
            }
        }
    }
    refs
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let files = src_files();
    let modules: BTreeSet<String> = files.iter().filter_map(|(r, _)| top_module(r)).collect();
    for (rel, text) in &files {
        let Some(from) = top_module(rel) else {
            continue;
        };
        let deps = graph.entry(from.clone()).or_default();
        for to in crate_refs(text) {
            if to != from && modules.contains(&to) {
                deps.insert(to);
            }
        }
    }
    graph
}

/// One circle, as `a → b → a`, if there is any.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_circle_between_top_level_modules() {
    let graph = import_graph();
    for (from, to) in &graph {
        eprintln!(
            "{from} → {}",
            to.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import circle: {}", cycle.join(" → "));
    }
}

#[test]
fn the_circle_check_finds_a_circle() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    graph.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    graph.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    graph.insert("c".to_string(), BTreeSet::new());
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn references_are_read_from_code_not_comments() {
    let refs = crate_refs(
        "use crate::{agent, azure::http::Http};\n// crate::config is only mentioned\nlet x = crate::state::load(p);\n#[cfg(test)]\nuse crate::cli;\n",
    );
    assert_eq!(
        refs,
        BTreeSet::from(["agent".into(), "azure".into(), "state".into()])
    );
}

#[test]
fn no_production_file_over_the_limit() {
    let long: Vec<String> = src_files()
        .iter()
        .map(|(rel, text)| (rel, production(text).len()))
        .filter(|(_, n)| *n > MAX_PRODUCTION_LINES)
        .map(|(rel, n)| format!("src/{rel}: {n} lines before #[cfg(test)]"))
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_PRODUCTION_LINES} production lines; split by concern:\n{}",
        long.join("\n")
    );
}
