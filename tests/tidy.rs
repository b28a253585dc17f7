//! House rules a machine can check: every Rust file opens with a `//!` doc line,
//! no stub macros or ignored tests are committed, ARCHITECTURE.md names every
//! source folder, and the docs point at nothing outside the repository.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') && !name.starts_with("casebook-") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc_and_has_no_stubs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(root, &mut files);
    assert!(
        files.len() > 10,
        "found only {} Rust files under {}",
        files.len(),
        root.display()
    );
    // Spelled in pieces so this file does not trip its own check.
    let banned = [
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
        concat!("dbg", "!("),
        concat!("#[", "ignore"),
    ];
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let rel = file.strip_prefix(root).unwrap().display().to_string();
        let first = text
            .lines()
            .find(|l| {
                let t = l.trim();
                !t.is_empty()
                    && !t.starts_with("#![")
                    && (!t.starts_with("//") || t.starts_with("//!"))
            })
            .unwrap_or("");
        if !first.starts_with("//!") && !rel.ends_with("build.rs") {
            problems.push(format!("{rel}: does not start with a //! doc line"));
        }
        for (n, line) in text.lines().enumerate() {
            for b in banned {
                if line.contains(b) {
                    problems.push(format!("{rel}:{}: contains {b}", n + 1));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "house rules broken:\n{}",
        problems.join("\n")
    );
}

/// Every folder under `dir` (recursively), as paths relative to `root`
/// with `/` separators.
fn folders(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            let rel = path.strip_prefix(root).unwrap();
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(rel.join("/"));
            folders(root, &path, out);
        }
    }
}

#[test]
fn architecture_names_every_source_folder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let arch = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    // Top-level folders with source, and every folder of the engine.
    let mut wanted: Vec<String> = [
        "src", "tests", "benches", "examples", "docs", "engine", "proto", "service",
    ]
    .iter()
    .filter(|d| root.join(d).is_dir())
    .map(|d| d.to_string())
    .collect();
    let before = wanted.len();
    folders(root, &root.join("engine/src"), &mut wanted);
    assert!(
        wanted.len() > before + 5,
        "found too few folders under engine/src: {wanted:?}"
    );
    // Named as a code path: `engine/src/log/file/` or `engine/src/log/file`.
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|p| !arch.contains(&format!("`{p}/`")) && !arch.contains(&format!("`{p}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not name these folders (as `path/`): {missing:?}\n\
         add a section for each: what it owns, what it must not know"
    );
}

#[test]
fn docs_refer_to_nothing_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "md") {
            files.push(entry.path());
        }
    }
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let rel = file.strip_prefix(root).unwrap().display().to_string();
        for (n, line) in text.lines().enumerate() {
            if line.contains("../shared") || line.contains("shared/design") {
                problems.push(format!("{rel}:{}: refers outside the repository", n + 1));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
