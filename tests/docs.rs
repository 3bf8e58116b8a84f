//! The documents agree with the code: the method tables of the README and of docs/protocol.md are the
//! method table of `gateway::methods`, and every `docs/protocol.md §N` a source file cites exists.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use pairgate::gateway::methods::Method;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap()
}

/// (method, scope) of each row of the first table whose header starts with `| method | scope |`.
fn method_rows(markdown: &str) -> Vec<(String, String)> {
    let mut lines = markdown.lines().skip_while(|line| !line.starts_with("| method | scope |")).skip(2);
    let mut rows = Vec::new();
    for line in lines.by_ref().take_while(|line| line.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let unquote = |cell: &str| cell.trim_matches('`').to_owned();
        rows.push((unquote(cells[1]), unquote(cells[2])));
    }
    rows
}

fn expected(scope_name: impl Fn(&str) -> String) -> BTreeSet<(String, String)> {
    Method::ALL.iter().map(|m| (m.name().to_owned(), scope_name(m.required_scope().as_str()))).collect()
}

#[test]
fn the_readme_method_table_is_the_method_enum() {
    let rows: BTreeSet<(String, String)> = method_rows(&read("README.md")).into_iter().collect();
    assert_eq!(rows, expected(str::to_owned), "README.md's method table");
}

#[test]
fn the_protocol_method_table_is_the_method_enum() {
    // docs/protocol.md writes scopes without their `operator.` prefix.
    let rows: BTreeSet<(String, String)> = method_rows(&read("docs/protocol.md")).into_iter().collect();
    let short = |scope: &str| scope.trim_start_matches("operator.").to_owned();
    assert_eq!(rows, expected(short), "docs/protocol.md §5's method table");
}

#[test]
fn every_cited_protocol_section_exists() {
    let protocol = read("docs/protocol.md");
    let sections: BTreeSet<u32> =
        protocol.lines().filter_map(|line| line.strip_prefix("## ")?.split('.').next()?.parse().ok()).collect();
    let mut files = vec![Path::new(ROOT).join("README.md")];
    for dir in ["src", "tests", "crates"] {
        let mut stack = vec![Path::new(ROOT).join(dir)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|ext| ext == "rs") {
                    files.push(path);
                }
            }
        }
    }
    let mut cited = 0;
    for file in files.into_iter().filter(|file| !file.ends_with("tests/docs.rs")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, _) in text.match_indices("docs/protocol.md §") {
            let rest = &text[at + "docs/protocol.md §".len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let section: u32 = digits.parse().unwrap();
            assert!(sections.contains(&section), "{} cites docs/protocol.md §{section}", file.display());
            cited += 1;
        }
        assert!(!text.contains("PROTOCOL.md"), "{} cites PROTOCOL.md, which is not in this repository", file.display());
    }
    assert!(cited > 10, "the code cites the protocol document");
}

/// Every `curl -s http://127.0.0.1:18789/PATH   # {…}` line of the README shows what the server answers.
#[tokio::test]
async fn the_readme_sample_outputs_are_the_servers() {
    let readme = read("README.md");
    let samples: Vec<(&str, &str)> = readme
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("curl -s http://127.0.0.1:18789")?;
            let (path, shown) = rest.split_once('#')?;
            Some((path.trim(), shown.trim()))
        })
        .collect();
    assert!(!samples.is_empty(), "the README shows at least /readyz");
    let server = common::Server::start().await;
    for (path, shown) in samples {
        let url = format!("http://{}{path}", server.addr);
        let answer: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        let shown: serde_json::Value = serde_json::from_str(shown).unwrap_or_else(|e| panic!("{path}: {shown}: {e}"));
        assert_eq!(answer, shown, "the README's sample for {path}");
    }
}
