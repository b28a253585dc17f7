//! The documentation stays true: the annotated example definition in
//! `docs/definition-format.md` parses and validates, every code block in the
//! Markdown docs says its language (so rustdoc compiles exactly the Rust
//! ones, through `src/lib.rs`), and every link points inside the repository.

use casebook::definition::{CaseDefinition, Format};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `README.md`, `ARCHITECTURE.md` and every `docs/*.md`, as repository paths.
fn markdown_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string(), "ARCHITECTURE.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    assert!(!docs.is_empty(), "no Markdown files in docs/");
    files.extend(docs);
    files
}

/// A fenced code block: the info string after the opening fence, its body and
/// the line (1-based) it opens on.
struct Block {
    info: String,
    body: String,
    line: usize,
}

fn code_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.as_mut() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some(Block {
                        info: info.trim().to_string(),
                        body: String::new(),
                        line: n + 1,
                    });
                }
            }
            Some(block) => {
                if trimmed.starts_with("```") {
                    blocks.push(open.take().unwrap());
                } else {
                    block.body.push_str(line);
                    block.body.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "an unclosed code block");
    blocks
}

/// The first TOML block after the `## Annotated example` heading.
fn annotated_example() -> String {
    let text = read("docs/definition-format.md");
    let (_, after) = text
        .split_once("## Annotated example")
        .expect("docs/definition-format.md has an '## Annotated example' section");
    let block = code_blocks(after)
        .into_iter()
        .next()
        .expect("a code block in the annotated example");
    assert_eq!(block.info, "toml", "the annotated example is a TOML block");
    block.body
}

#[test]
fn the_annotated_example_definition_validates() {
    let source = annotated_example();
    let def = CaseDefinition::parse(&source, Format::Toml)
        .unwrap_or_else(|e| panic!("the annotated example does not validate:\n{e}"));
    def.validate().unwrap();
    assert_eq!(def.key.as_str(), "burglary");
    // The same model in JSON has the same fingerprint.
    let json = def.canonical_json();
    let again = CaseDefinition::parse(&json, Format::Json).unwrap();
    assert_eq!(def.fingerprint(), again.fingerprint());
}

#[test]
fn every_code_block_names_its_language() {
    // rustdoc compiles a block with no language as Rust, so every block says
    // what it is; Rust blocks are compiled as doctests through `src/lib.rs`.
    let known = ["rust", "toml", "json", "text", "sh", "console"];
    let mut problems = Vec::new();
    for file in markdown_files() {
        for block in code_blocks(&read(&file)) {
            let lang = block.info.split(',').next().unwrap_or("").trim();
            if !known.contains(&lang) {
                problems.push(format!(
                    "{file}:{}: code block language {:?} (want one of {known:?})",
                    block.line, block.info
                ));
            }
            if lang == "rust" && block.body.contains("casebook_engine") {
                problems.push(format!(
                    "{file}:{}: Rust sample uses casebook_engine:: (use casebook::)",
                    block.line
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_docs_file_is_compiled_as_a_doctest() {
    let lib = read("src/lib.rs");
    for file in markdown_files() {
        if file == "ARCHITECTURE.md" {
            continue; // no Rust samples; it names paths, not code
        }
        let include = format!("include_str!(\"../{file}\")");
        assert!(
            lib.contains(&include),
            "src/lib.rs does not include {file} as a doctest ({include})"
        );
    }
    let arch = read("ARCHITECTURE.md");
    assert!(
        code_blocks(&arch).iter().all(|b| b.info != "rust"),
        "ARCHITECTURE.md has a Rust block: include it in src/lib.rs as a doctest"
    );
}

/// Markdown links `[text](target)` in `text`.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_link_points_to_a_file_in_the_repository() {
    let mut problems = Vec::new();
    for file in markdown_files() {
        let text = read(&file);
        let dir: PathBuf = Path::new(&file)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        for target in links(&text) {
            let path = target.split('#').next().unwrap_or("");
            if target.contains("://") || target.starts_with("mailto:") {
                problems.push(format!("{file}: links outside the repository: {target}"));
                continue;
            }
            if path.is_empty() {
                continue; // an anchor in the same file
            }
            let resolved = root().join(&dir).join(path);
            let inside = resolved
                .canonicalize()
                .map(|p| p.starts_with(root().canonicalize().unwrap()))
                .unwrap_or(false);
            if !inside {
                problems.push(format!(
                    "{file}: link to a missing or outside path: {target}"
                ));
            }
        }
        for (n, line) in text.lines().enumerate() {
            if line.contains("http://") || line.contains("https://") {
                problems.push(format!("{file}:{}: names a web address", n + 1));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
