//! The shape ARCHITECTURE.md promises, checked on the source: the layers import one way
//! (cli -> server -> transport/http -> session -> node -> hub -> broker -> leaves), the files
//! and folders inside any folder never import each other in a loop, and no source file is
//! over 600 lines.
//!
//! How: every `crate::…`, `super::…` and `self::…` path in a file (outside its `#[cfg(test)]`
//! module) is resolved to the module file it names; an import of a module counts for the
//! folder entry (file or subfolder) that holds it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules from the top layer down; modules of one layer may not import each other
/// unless they are leaves.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["server"],
    &["transport", "http"],
    &["session"],
    &["node"],
    &["hub"],
    &["broker"],
    &[
        "protocol", "outbox", "channel", "auth", "limits", "metrics", "config", "clock",
    ],
];

const MAX_LINES: usize = 600;

type Module = Vec<String>;

/// Every module file under `src/`, by module path.
fn modules(root: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<Module, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).unwrap().with_extension("");
                let mut module: Module = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(
                    module.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    module.pop();
                }
                out.insert(module, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The source a module is made of, without its tests and comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module files a module's paths name.
fn imports(module: &Module, code: &str, modules: &BTreeMap<Module, PathBuf>) -> BTreeSet<Module> {
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts = ["crate::", "super::", "self::"]
            .iter()
            .find(|p| bytes[i..].starts_with(p.as_bytes()) && (i == 0 || !is_ident(bytes[i - 1])));
        let Some(_) = starts else {
            i += 1;
            continue;
        };
        // The path: segments joined by `::`, possibly ending in a `{a, b::c}` group.
        let mut end = i;
        // Byte comparisons: `i` may sit inside a character of a string literal.
        while end < bytes.len() && (is_ident(bytes[end]) || bytes[end..].starts_with(b"::")) {
            end += if bytes[end..].starts_with(b"::") {
                2
            } else {
                1
            };
        }
        let path = code[i..end].trim_end_matches("::");
        let mut heads: Vec<String> = vec![path.to_owned()];
        if code[end..].starts_with('{') {
            let close = code[end..].find('}').map_or(code.len(), |c| end + c);
            heads = code[end + 1..close]
                .split(',')
                .map(|item| item.trim().split(" as ").next().unwrap_or("").trim())
                .filter(|item| !item.is_empty())
                .map(|item| format!("{path}::{item}"))
                .collect();
        }
        for head in heads {
            if let Some(target) = resolve(module, &head, modules)
                && target != *module
            {
                found.insert(target);
            }
        }
        i = end.max(i + 1);
    }
    found
}

/// The module file a path names (the longest prefix that is one).
fn resolve(from: &Module, path: &str, modules: &BTreeMap<Module, PathBuf>) -> Option<Module> {
    let mut segments = path.split("::").peekable();
    let mut base: Module = match segments.peek() {
        Some(&"crate") => {
            segments.next();
            Vec::new()
        }
        _ => from.clone(),
    };
    while let Some(&s) = segments.peek() {
        match s {
            "super" => {
                base.pop();
            }
            "self" => {}
            _ => break,
        }
        segments.next();
    }
    let mut full = base;
    full.extend(segments.map(str::to_owned));
    (1..=full.len())
        .rev()
        .map(|n| full[..n].to_vec())
        .find(|m| modules.contains_key(m))
}

fn all_imports() -> (
    BTreeMap<Module, PathBuf>,
    BTreeMap<Module, BTreeSet<Module>>,
) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&root);
    let edges = modules
        .iter()
        .map(|(m, p)| (m.clone(), imports(m, &code(p), &modules)))
        .collect();
    (modules, edges)
}

/// Imports of a module in a layer above, or beside (other than among leaves).
fn layer_violations(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<String> {
    let rank = |m: &Module| -> Option<(usize, bool)> {
        let top = m.first()?;
        LAYERS
            .iter()
            .position(|layer| layer.contains(&top.as_str()))
            .map(|i| (i, i == LAYERS.len() - 1))
    };
    let mut wrong = Vec::new();
    for (from, targets) in edges {
        let Some((from_rank, _)) = rank(from) else {
            continue;
        };
        for to in targets {
            let Some((to_rank, leaf)) = rank(to) else {
                continue;
            };
            let sideways = to_rank == from_rank && from[0] != to[0] && !leaf;
            if to_rank < from_rank || sideways {
                wrong.push(format!("{} -> {}", from.join("::"), to.join("::")));
            }
        }
    }
    wrong
}

/// Per folder (a module with children): the loops among its entries (files and subfolders),
/// an entry importing another when any module under it imports any module under the other.
fn folder_loops(
    modules: &BTreeMap<Module, PathBuf>,
    edges: &BTreeMap<Module, BTreeSet<Module>>,
) -> Vec<String> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        loops: &mut Vec<String>,
        folder: &str,
    ) {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            loops.push(format!("{folder}: {}", cycle.join(" -> ")));
            return;
        }
        if !done.insert(node.to_owned()) {
            return;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, stack, done, loops, folder);
        }
        stack.pop();
    }
    let mut loops = Vec::new();
    let folders: BTreeSet<Module> = modules
        .keys()
        .filter(|m| !m.is_empty())
        .map(|m| m[..m.len() - 1].to_vec())
        .collect();
    for folder in folders {
        let entry_of = |m: &Module| -> Option<String> {
            (m.len() > folder.len() && m[..folder.len()] == folder[..])
                .then(|| m[folder.len()].clone())
        };
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, targets) in edges {
            let Some(a) = entry_of(from) else { continue };
            for to in targets {
                if let Some(b) = entry_of(to)
                    && a != b
                {
                    graph.entry(a.clone()).or_default().insert(b);
                }
            }
        }
        let name = if folder.is_empty() {
            "src".to_owned()
        } else {
            folder.join("/")
        };
        let mut done = BTreeSet::new();
        for node in graph.keys() {
            visit(node, &graph, &mut Vec::new(), &mut done, &mut loops, &name);
        }
    }
    loops
}

#[test]
fn nothing_imports_a_layer_above_its_own() {
    let (_, edges) = all_imports();
    let wrong = layer_violations(&edges);
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_folder_has_an_import_loop_among_its_files_and_subfolders() {
    let (modules, edges) = all_imports();
    let loops = folder_loops(&modules, &edges);
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
}

#[test]
fn no_source_file_is_over_600_lines() {
    let (modules, _) = all_imports();
    let long: Vec<String> = modules
        .values()
        .filter_map(|p| {
            let n = std::fs::read_to_string(p).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", p.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by job:\n{}", long.join("\n"));
}

#[test]
fn the_checker_sees_a_loop_and_an_upward_import_when_there_is_one() {
    // The checks above must be able to fail: a made-up tree with both defects.
    let m = |path: &str| -> Module { path.split("::").map(str::to_owned).collect() };
    let modules: BTreeMap<Module, PathBuf> = ["hub", "broker", "broker::a", "broker::b"]
        .into_iter()
        .map(|p| (m(p), PathBuf::new()))
        .collect();
    let a_uses = imports(
        &m("broker::a"),
        "use super::b::Thing;\nuse crate::hub::Hub;",
        &modules,
    );
    assert_eq!(a_uses, BTreeSet::from([m("broker::b"), m("hub")]));
    let b_uses = imports(&m("broker::b"), "use super::{a, Shared};", &modules);
    assert_eq!(b_uses, BTreeSet::from([m("broker::a"), m("broker")]));
    let edges = BTreeMap::from([(m("broker::a"), a_uses), (m("broker::b"), b_uses)]);
    assert_eq!(layer_violations(&edges), ["broker::a -> hub"]);
    assert_eq!(folder_loops(&modules, &edges), ["broker: a -> b -> a"]);
}
