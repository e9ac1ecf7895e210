// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The published crates' READMEs render on the registry page: crates.io shows them
//! without a repository to resolve relative links against, and each library
//! `include_str!`s its README as the crate docs, so its Rust blocks are doctests that
//! docs.rs renders too. Checked here for every published crate:
//!
//! - links are absolute (`http(s)://`): no relative paths, no intra-doc `crate::` links;
//! - no hidden doctest lines (`# ...` in a Rust block shows as-is on crates.io);
//! - no path that leaves the crate (`../`).

/// The crates `cargo publish --workspace` publishes (reference-vmm and test-support are
/// `publish = false`).
const PUBLISHED: [&str; 7] = [
    "x86-kvm-base",
    "vmx-caps",
    "vmx-controls",
    "notify-exit",
    "heki-policy",
    "vcpu-events",
    "vmxcap",
];

/// Problems of one README's text, as `line: what`.
fn problems(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fence: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if let Some(rest) = line.trim_start().strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(rest.trim().to_owned()),
            };
            continue;
        }
        match &fence {
            Some(lang) => {
                // rustdoc treats an unlabeled block (and `rust,...`) as Rust.
                let rust = lang.is_empty() || lang.split(',').any(|t| t == "rust");
                let t = line.trim_start();
                if rust && (t == "#" || t.starts_with("# ")) {
                    out.push(format!("{n}: hidden doctest line {line:?}"));
                }
            }
            None => {
                let mut rest = line;
                while let Some(at) = rest.find("](") {
                    let target = &rest[at + 2..];
                    let end = target.find(')').unwrap_or(target.len());
                    let target = &target[..end];
                    if !(target.starts_with("https://") || target.starts_with("http://")) {
                        out.push(format!("{n}: non-absolute link target {target:?}"));
                    }
                    rest = &rest[at + 2..];
                }
                if line.contains("../") {
                    out.push(format!("{n}: path outside the crate"));
                }
            }
        }
    }
    out
}

#[test]
fn published_readmes_render_on_the_registry() {
    let root = test_support::workspace_root();
    let mut all = Vec::new();
    for krate in PUBLISHED {
        let text = std::fs::read_to_string(root.join(krate).join("README.md")).unwrap();
        all.extend(
            problems(&text)
                .into_iter()
                .map(|p| format!("{krate}/README.md:{p}")),
        );
    }
    assert!(all.is_empty(), "{}", all.join("\n"));
}

#[test]
fn the_readme_check_finds_what_breaks_on_the_registry() {
    let text = "see [the licence](LICENSE-APACHE) and [`probe`](crate::probe)\n\
                and [docs](https://docs.rs/vmx-caps), ../fixtures\n\
                ```rust\n# fn hidden() {}\nlet x = 1; // # not hidden\n```\n\
                ```sh\n# a shell comment\n```\n";
    let found = problems(text);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].contains("\"LICENSE-APACHE\""));
    assert!(found[1].contains("\"crate::probe\""));
    assert!(found[2].starts_with("2: path outside"));
    assert!(found[3].starts_with("4: hidden doctest line"));
}
