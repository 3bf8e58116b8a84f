//! The code map of ARCHITECTURE.md, enforced. Crate boundaries enforce the rest: `pairgate-domain` cannot
//! reach the store, and `pairgate-store-sqlite` cannot reach anything above it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Each top-level module of the `pairgate` crate, and the modules it must never import.
const FORBIDDEN: &[(&str, &[&str])] = &[
    // The store boundary: it knows the engines below it and nothing above it.
    ("store", &["auth", "app", "gateway", "admin", "cli", "server", "importer", "metrics", "client"]),
    ("auth", &["store", "app", "gateway", "admin", "cli", "server", "importer", "metrics", "client"]),
    ("app", &["gateway", "admin", "cli", "server", "importer", "client"]),
    // The front door speaks to an upstream gateway as a client (`gateway/upstream.rs`).
    ("gateway", &["admin", "cli", "server", "importer"]),
    ("admin", &["gateway", "cli", "server", "importer", "client"]),
    ("importer", &["app", "gateway", "admin", "cli", "server", "client"]),
    ("metrics", &["auth", "app", "gateway", "admin", "cli", "server", "importer", "client"]),
    ("client", &["store", "app", "gateway", "admin", "cli", "server", "importer", "metrics"]),
    ("server", &["cli", "importer", "client"]),
    ("cli", &["client"]),
];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// The files of a top-level module: `src/<name>.rs` or everything under `src/<name>/`.
fn module_files(name: &str) -> Vec<PathBuf> {
    let src = Path::new(ROOT).join("src");
    let dir = src.join(name);
    if dir.is_dir() { rust_files(&dir) } else { vec![src.join(format!("{name}.rs"))] }
}

/// The code of a file without its comments (a doc comment may name any module).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::<module>` the code names, also inside a group: `crate::{a, b::c}` names `a` and `b`.
fn crate_imports(code: &str) -> BTreeSet<String> {
    let ident =
        |text: &str| -> String { text.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                // Top-level items of the group, split at commas outside nested braces.
                let (mut depth, mut start) = (0usize, 0usize);
                for (index, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            names.insert(ident(&group[start..index]));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            names.insert(ident(&group[start..index]));
                            start = index + 1;
                        }
                        _ => {}
                    }
                }
            }
            None => {
                names.insert(ident(rest));
            }
        }
    }
    names.remove("");
    names
}

#[test]
fn grouped_imports_are_seen() {
    let names =
        crate_imports("use crate::{gateway::Gateway, store::{Store, OpenError}, app};\nlet x = crate::cli::run;");
    assert_eq!(names, ["app", "cli", "gateway", "store"].map(String::from).into_iter().collect());
}

#[test]
fn no_module_imports_across_a_forbidden_boundary() {
    let mut violations = Vec::new();
    for (module, forbidden) in FORBIDDEN {
        for file in module_files(module) {
            for import in crate_imports(&code(&file)) {
                if forbidden.contains(&import.as_str()) {
                    violations.push(format!("{} imports crate::{import}", file.display()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "boundaries of ARCHITECTURE.md crossed:\n{}", violations.join("\n"));
}

#[test]
fn every_top_level_module_has_a_rule() {
    let src = Path::new(ROOT).join("src");
    let mut modules: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let name = path.file_stem()?.to_string_lossy().into_owned();
            (path.is_dir() || path.extension().is_some_and(|ext| ext == "rs")).then_some(name)
        })
        .filter(|name| !["lib", "main"].contains(&name.as_str()))
        .collect();
    modules.sort();
    modules.dedup();
    for module in modules {
        assert!(
            FORBIDDEN.iter().any(|(name, _)| *name == module),
            "src/{module} has no row in FORBIDDEN: add it here and to ARCHITECTURE.md's code map"
        );
    }
}

#[test]
fn only_the_store_has_pairgate_sql() {
    // The importer reads OpenClaw's own database (read-only), never pairgate's.
    for file in rust_files(&Path::new(ROOT).join("src")) {
        let code = code(&file);
        let importer = file.starts_with(Path::new(ROOT).join("src/importer"));
        for macro_name in ["query!", "query_as!", "query_scalar!", "migrate!"] {
            assert!(!code.contains(macro_name), "{} uses sqlx::{macro_name}: SQL lives in the store", file.display());
        }
        assert!(importer || !code.contains("sqlx::"), "{} uses sqlx: SQL lives in the store", file.display());
    }
}

#[test]
fn the_policy_is_pure() {
    let policy = code(&Path::new(ROOT).join("src/auth/policy.rs"));
    for effect in ["async ", ".await", "tokio::", "sqlx::", "std::fs", "std::net", "SystemTime", "Instant"] {
        assert!(!policy.contains(effect), "src/auth/policy.rs uses {effect}: the policy is a pure function");
    }
}

#[test]
fn the_rest_router_is_built_only_from_documented_handlers() {
    for file in rust_files(&Path::new(ROOT).join("src/admin")) {
        let code = code(&file).replace("OpenApiRouter::new(", "OpenApiRouter::with_nothing(");
        for unlisted in [".route(", "Router::new(", ".nest("] {
            assert!(
                !code.contains(unlisted),
                "{} adds a route with {unlisted}: use OpenApiRouter::routes(routes!(…)) so openapi.json lists it",
                file.display()
            );
        }
    }
}

/// `[dependencies]` of a manifest, by name.
fn dependencies(manifest: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join(manifest)).unwrap();
    let section = text.split("\n[dependencies]\n").nth(1).unwrap_or("");
    let section = section.split("\n[").next().unwrap_or("");
    section.lines().filter_map(|line| line.split_once('=').map(|(name, _)| name.trim().to_owned())).collect()
}

#[test]
fn crates_depend_only_downward() {
    let domain = dependencies("crates/domain/Cargo.toml");
    for forbidden in ["sqlx", "tokio", "pairgate-store-sqlite", "pairgate"] {
        assert!(!domain.contains(forbidden), "pairgate-domain depends on {forbidden}: it does no I/O");
    }
    let types = dependencies("crates/store-types/Cargo.toml");
    for forbidden in ["pairgate-store-sqlite", "pairgate-store-postgres", "pairgate"] {
        assert!(!types.contains(forbidden), "pairgate-store-types depends on {forbidden}: it has no engine");
    }
    let types_manifest = std::fs::read_to_string(Path::new(ROOT).join("crates/store-types/Cargo.toml")).unwrap();
    let sqlx_line = types_manifest.lines().find(|line| line.starts_with("sqlx")).unwrap();
    assert!(sqlx_line.contains("default-features = false") && !sqlx_line.contains("features = ["), "{sqlx_line}");
    for file in rust_files(&Path::new(ROOT).join("crates/store-types/src")) {
        let code = code(&file);
        for macro_name in ["query!", "query_as!", "query_scalar!", "migrate!", "sqlx::query"] {
            assert!(!code.contains(macro_name), "{} has SQL: it belongs to an engine", file.display());
        }
    }
    for engine in ["crates/store-sqlite/Cargo.toml", "crates/store-postgres/Cargo.toml"] {
        let store = dependencies(engine);
        assert!(!store.contains("pairgate"), "{engine}: a store must not depend on the server crate");
        let other = if engine.contains("sqlite") { "pairgate-store-postgres" } else { "pairgate-store-sqlite" };
        assert!(!store.contains(other), "{engine}: one engine never depends on the other");
    }
    let server = dependencies("Cargo.toml");
    assert!(!server.contains("reqwest"), "reqwest is for the load generator and tests only");
}
