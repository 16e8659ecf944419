//! The layering of `src/`, as a test: every `crate::` path in the library must point to a module of the same or a
//! lower layer, and no two modules may import each other (directly or round a loop).
//!
//! The layers are the table under "## Layers" in ARCHITECTURE.md — one source of truth for the document and the
//! check: a top-level module missing from the table, or a table entry without a module, fails here too, and so does a
//! top-level module the "## Module map" table does not mention.
//!
//! Why a tokenizer (proc-macro2) and not a regex: comments, doc comments and string literals are not imports, and
//! grouped imports (`use crate::{a::b, c}`) and paths inside macro calls (`matches!(e, crate::x::Y)`) are. Why files
//! and not items: a module is the unit a reader opens; an edge from file A to module B is any `crate::B…` path in A.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// One finding, with the file and the import that caused it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation(String);

/// The layer table: top-level module → (layer number, layer name).
type Layers = BTreeMap<String, (u32, String)>;

/// Parses the "## Layers" table of ARCHITECTURE.md: rows `| N | name | `mod`, `mod` | … |`.
fn parse_layers(markdown: &str) -> Result<Layers, String> {
    let section = markdown
        .split("\n## ")
        .find(|s| s.starts_with("Layers"))
        .ok_or("ARCHITECTURE.md has no \"## Layers\" section")?;
    let mut layers = Layers::new();
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Some(Ok(n)) = cells.first().map(|c| c.parse::<u32>()) else { continue };
        let (name, mods) = (cells.get(1).copied().unwrap_or(""), cells.get(2).copied().unwrap_or(""));
        for m in mods.split(',').map(|m| m.trim().trim_matches('`')).filter(|m| !m.is_empty()) {
            if let Some((prev, _)) = layers.insert(m.to_string(), (n, name.to_string())) {
                return Err(format!("module `{m}` is in layer {prev} and layer {n} of the table"));
            }
        }
    }
    if layers.is_empty() {
        return Err("the \"## Layers\" table of ARCHITECTURE.md has no rows".into());
    }
    Ok(layers)
}

/// The module path of a source file relative to `src/` (`eval/quality/mod.rs` → `eval::quality`, `lib.rs` → ``).
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if let Some(last) = parts.last_mut() {
        *last = last.trim_end_matches(".rs").to_string();
        if last == "mod" || last == "lib" {
            parts.pop();
        }
    }
    parts.join("::")
}

/// Every path that starts with `crate::` in `source`, as its segments after `crate` (a grouped import gives one path
/// per leaf; `self` in a group names the group's own prefix; `*` stops the path).
fn crate_paths(source: &str) -> Result<Vec<Vec<String>>, String> {
    module_paths(source, &[])
}

/// Every absolute path of `source`, the file of module `base`: those that start with `crate::`, and those that
/// start with `super::` or `self::`, resolved against `base` (and against the inline `mod name { … }` they sit in),
/// as their segments after `crate`.
fn module_paths(source: &str, base: &[String]) -> Result<Vec<Vec<String>>, String> {
    let tokens = TokenStream::from_str(source).map_err(|e| format!("does not tokenize: {e:?}"))?;
    let mut out = Vec::new();
    scan(tokens, base, &mut out);
    Ok(out)
}

fn scan(stream: TokenStream, base: &[String], out: &mut Vec<Vec<String>>) {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    let ident = |i: usize, name: &str| matches!(tokens.get(i), Some(TokenTree::Ident(id)) if id == name);
    let mut i = 0;
    while i < tokens.len() {
        // `mod name { … }`: its paths are relative to `base::name`.
        if ident(i, "mod") {
            if let (Some(TokenTree::Ident(name)), Some(TokenTree::Group(g))) = (tokens.get(i + 1), tokens.get(i + 2)) {
                if g.delimiter() == Delimiter::Brace {
                    let mut inner = base.to_vec();
                    inner.push(name.to_string());
                    scan(g.stream(), &inner, out);
                    i += 3;
                    continue;
                }
            }
        }
        if let TokenTree::Group(g) = &tokens[i] {
            scan(g.stream(), base, out);
            i += 1;
            continue;
        }
        // Only a path's first segment counts (`a::super` is no path start), and `pub(crate)`/`pub(super)` are
        // visibilities, not paths: the keyword must be followed by `::`.
        let starts = i == 0 || !matches!(&tokens[i - 1], TokenTree::Punct(p) if p.as_char() == ':');
        if starts && ident(i, "crate") && is_path_sep(&tokens, i + 1) {
            i = path_tail(&tokens, i + 3, Vec::new(), out);
        } else if starts && ident(i, "self") && is_path_sep(&tokens, i + 1) {
            i = path_tail(&tokens, i + 3, base.to_vec(), out);
        } else if starts && ident(i, "super") && is_path_sep(&tokens, i + 1) {
            let mut up = 0;
            while ident(i, "super") && is_path_sep(&tokens, i + 1) {
                up += 1;
                i += 3;
            }
            match base.len().checked_sub(up) {
                Some(keep) => i = path_tail(&tokens, i, base[..keep].to_vec(), out),
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
}

fn is_path_sep(tokens: &[TokenTree], i: usize) -> bool {
    matches!((tokens.get(i), tokens.get(i + 1)), (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == ':' && b.as_char() == ':')
}

/// Reads `seg (:: seg)* [:: {group}]` from `i` with `prefix` already read; pushes the finished paths; returns the
/// index after the path.
fn path_tail(tokens: &[TokenTree], mut i: usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    loop {
        match tokens.get(i) {
            Some(TokenTree::Ident(id)) => {
                prefix.push(id.to_string());
                i += 1;
                if is_path_sep(tokens, i) {
                    i += 2;
                    continue;
                }
                out.push(prefix);
                return i;
            }
            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                let mut j = 0;
                while j < inner.len() {
                    match &inner[j] {
                        TokenTree::Punct(p) if p.as_char() == ',' => j += 1,
                        TokenTree::Ident(id) if id == "self" => {
                            out.push(prefix.clone());
                            j += 1;
                        }
                        TokenTree::Ident(id) if id == "as" => j += 2,
                        _ => {
                            let before = j;
                            j = path_tail(&inner, j, prefix.clone(), out);
                            if j == before {
                                j += 1;
                            }
                        }
                    }
                }
                return i + 1;
            }
            // `*`, or anything else: the prefix so far is the path.
            _ => {
                if !prefix.is_empty() {
                    out.push(prefix);
                }
                return i;
            }
        }
    }
}

/// The checked facts of one source tree: files (relative to `src/`) and their text.
struct Tree {
    files: BTreeMap<PathBuf, String>,
}

impl Tree {
    fn read(src: &Path) -> Tree {
        fn walk(dir: &Path, root: &Path, files: &mut BTreeMap<PathBuf, String>) {
            let mut entries: Vec<_> =
                std::fs::read_dir(dir).expect("read src/").map(|e| e.expect("entry").path()).collect();
            entries.sort();
            for p in entries {
                if p.is_dir() {
                    walk(&p, root, files);
                } else if p.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&p).expect("read a source file");
                    files.insert(p.strip_prefix(root).expect("under src").to_path_buf(), text);
                }
            }
        }
        let mut files = BTreeMap::new();
        walk(src, src, &mut files);
        Tree { files }
    }

    /// All findings: unknown or missing modules in the table, upward imports, cycles.
    fn check(&self, layers: &Layers) -> Vec<Violation> {
        let mut found = Vec::new();
        // The binary is the top of the house; it is not a module of the library.
        let lib: BTreeMap<&PathBuf, &String> = self.files.iter().filter(|(p, _)| !p.starts_with("bin")).collect();
        let modules: BTreeSet<String> = lib.keys().map(|p| module_of(p)).collect();
        let top: BTreeSet<String> =
            modules.iter().filter_map(|m| m.split("::").next()).filter(|m| !m.is_empty()).map(String::from).collect();
        for m in top.difference(&layers.keys().cloned().collect()) {
            found.push(Violation(format!("src/{m} is in no layer of ARCHITECTURE.md's \"## Layers\" table")));
        }
        for m in layers.keys().filter(|m| !top.contains(*m)) {
            found.push(Violation(format!("ARCHITECTURE.md's layer table names `{m}`, which is not a module of src/")));
        }
        let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (path, text) in &lib {
            let from = module_of(path);
            let from_top = from.split("::").next().unwrap_or("").to_string();
            let base: Vec<String> = from.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
            let paths = match module_paths(text, &base) {
                Ok(p) => p,
                Err(e) => {
                    found.push(Violation(format!("src/{}: {e}", path.display())));
                    continue;
                }
            };
            for segs in paths {
                // The longest prefix of the path that is a module is what the file depends on.
                let Some(target) = (1..=segs.len()).rev().map(|n| segs[..n].join("::")).find(|m| modules.contains(m))
                else {
                    continue;
                };
                let target_top = segs[0].clone();
                if let (Some((lf, nf)), Some((lt, nt))) = (layers.get(&from_top), layers.get(&target_top)) {
                    if lt > lf {
                        found.push(Violation(format!(
                            "src/{} (layer {lf}: {nf}) imports crate::{} from layer {lt} ({nt}) above it",
                            path.display(),
                            segs.join("::")
                        )));
                    }
                }
                // A module holds its children (`mod`, re-exports): that is containment, not a dependency that can
                // close a loop. The child's use of its parent is one, and counts.
                let into_own_child = target.starts_with(&format!("{from}::"));
                if target != from && !from.is_empty() && !into_own_child {
                    edges.entry(from.clone()).or_default().entry(target).or_insert_with(|| segs.join("::"));
                }
            }
        }
        for cycle in cycles(&edges) {
            let how: Vec<String> = cycle
                .iter()
                .map(|m| {
                    let next = edges[m].keys().find(|t| cycle.contains(*t)).cloned().unwrap_or_default();
                    format!("{m} → {next} (crate::{})", edges[m].get(&next).cloned().unwrap_or_default())
                })
                .collect();
            found.push(Violation(format!("import cycle between {} modules: {}", cycle.len(), how.join("; "))));
        }
        found.sort();
        found
    }
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeMap<String, String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on_stack: BTreeSet<String>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit(s: &mut State, v: &str) {
        s.index.insert(v.to_string(), s.next);
        s.low.insert(v.to_string(), s.next);
        s.next += 1;
        s.stack.push(v.to_string());
        s.on_stack.insert(v.to_string());
        let targets: Vec<String> = s.edges.get(v).map(|t| t.keys().cloned().collect()).unwrap_or_default();
        for w in targets {
            if !s.index.contains_key(&w) {
                visit(s, &w);
                let lw = s.low[&w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(&w) {
                let iw = s.index[&w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn architecture() -> String {
    std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md")
}

#[test]
fn src_imports_point_down_only_and_form_no_cycle() {
    let layers = parse_layers(&architecture()).unwrap_or_else(|e| panic!("{e}"));
    let found = Tree::read(&root().join("src")).check(&layers);
    assert!(
        found.is_empty(),
        "layering violations:\n{}",
        found.iter().map(|v| v.0.as_str()).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_module_map_names_every_top_level_module() {
    let doc = architecture();
    let map = doc.split("\n## ").find(|s| s.starts_with("Module map")).expect("a \"## Module map\" section");
    let tree = Tree::read(&root().join("src"));
    let mut missing = BTreeSet::new();
    for p in tree.files.keys().filter(|p| !p.starts_with("bin")) {
        let first = p.iter().next().map(|c| c.to_string_lossy().into_owned()).unwrap_or_default();
        if first == "lib.rs" {
            continue;
        }
        let shown = if first.ends_with(".rs") { format!("`src/{first}`") } else { format!("`src/{first}/`") };
        if !map.contains(&shown) {
            missing.insert(shown);
        }
    }
    assert!(missing.is_empty(), "ARCHITECTURE.md's module map does not mention {missing:?}");
}

/// A made-up tree: `low` (layer 0) and `high` (layer 1).
fn planted(files: &[(&str, &str)]) -> (Tree, Layers) {
    let tree = Tree { files: files.iter().map(|(p, t)| (PathBuf::from(p), t.to_string())).collect() };
    let layers = parse_layers("# x\n\n## Layers\n\n| layer | name | modules |\n|---|---|---|\n| 0 | base | `low` |\n| 1 | top | `high`, `side` |\n").unwrap();
    (tree, layers)
}

#[test]
fn a_planted_upward_import_is_named_with_its_file() {
    let (tree, layers) = planted(&[
        ("lib.rs", "pub mod low; pub mod high; pub mod side;"),
        ("low/mod.rs", "// crate::high in a comment is not an import\npub mod inner;"),
        ("low/inner.rs", "use crate::{high::Thing as T, low};\nfn f() -> &'static str { \"crate::high\" }"),
        ("high.rs", "use crate::low::inner;\npub(crate) struct Thing;"),
        ("side.rs", "pub fn g() { let _ = matches!(1, 1); }"),
    ]);
    let found = tree.check(&layers);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].0.contains("import cycle") && found[0].0.contains("high") && found[0].0.contains("low::inner"),
        "{found:?}"
    );
    assert_eq!(found[1].0, "src/low/inner.rs (layer 0: base) imports crate::high::Thing from layer 1 (top) above it");
}

#[test]
fn a_planted_cycle_within_a_layer_is_found() {
    let (tree, layers) = planted(&[
        ("lib.rs", "pub mod high; pub mod side;"),
        ("high.rs", "pub fn a() { crate::side::b() }"),
        ("side.rs", "pub fn b() { let _ = matches!(crate::high::a(), ()); }"),
    ]);
    let found = tree.check(&layers);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|v| v.0.starts_with("import cycle between 2 modules: high → side")), "{found:?}");
    assert!(found.iter().any(|v| v.0.contains("ARCHITECTURE.md's layer table names `low`")), "{found:?}");
}

#[test]
fn grouped_imports_and_visibility_are_read_right() {
    let paths = crate_paths("pub(crate) use crate::{a::{b, c::{self, D}}, e::*}; fn f() { crate::g::h(); }").unwrap();
    let shown: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(shown, ["a::b", "a::c", "a::c::D", "e", "g::h"]);
}

#[test]
fn a_planted_cycle_through_super_paths_is_found_and_test_modules_are_not_one() {
    let (tree, layers) = planted(&[
        ("lib.rs", "pub mod high; pub mod low;"),
        ("low/mod.rs", "mod a; mod b; #[cfg(test)] mod tests { use super::*; use super::a::A; }"),
        ("low/a.rs", "use super::b::B; pub struct A(B);"),
        ("low/b.rs", "pub struct B; fn f() -> super::super::low::a::A { todo!() }"),
        ("high.rs", "mod inner { use super::super::low::b::B; pub(super) fn g() {} }"),
    ]);
    let found = tree.check(&layers);
    let cycles: Vec<_> = found.iter().filter(|v| v.0.contains("import cycle")).collect();
    assert_eq!(cycles.len(), 1, "{found:?}");
    assert!(cycles[0].0.starts_with("import cycle between 2 modules: low::a → low::b"), "{found:?}");
    assert!(found.iter().all(|v| !v.0.contains("layer 1")), "high imports low: downward, fine: {found:?}");
    let up = module_paths("mod t { use super::super::x::Y; }", &["a".into(), "b".into()]).unwrap();
    assert_eq!(up, vec![vec!["a".to_string(), "x".into(), "Y".into()]]);
    assert!(module_paths("pub(super) fn f() {} pub(crate) struct S;", &["a".into()]).unwrap().is_empty());
}
