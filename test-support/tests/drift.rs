// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Drift guard: KVM uapi facts are taken from kvm-bindings, not written again.
//!
//! Scans every Rust source of the repository (workspace crates, `fuzz/`, `bench/`) for
//! definitions of constants named `KVM_*` and fails on any that is not in [`ALLOWED`],
//! the explicit list of what is *not* a copy of a kvm-bindings constant. What
//! kvm-bindings has is re-exported (`pub use kvm_bindings::X`), never defined. Also
//! checks that the `kvm_run` exit union is read with `unsafe` in exactly one place,
//! `x86_kvm_base::kvm_run`.

use std::path::{Path, PathBuf};

/// Why a `KVM_*` constant may be defined in the workspace.
#[derive(Debug, Clone, Copy)]
enum Allowed {
    /// Not a uapi constant: kvm-bindings does not and will not have it. The text says
    /// where it comes from.
    NotUapi(&'static str),
}

/// Every `KVM_*` constant the workspace may define: `(name, file, why)`.
const ALLOWED: &[(&str, &str, Allowed)] = &[
    // Heki RFC v2/v3 (never merged): the version flag of KVM_HC_LOCK_CR_UPDATE.
    (
        "KVM_LOCK_CR_UPDATE_VERSION",
        "heki-policy/src/hypercall.rs",
        Allowed::NotUapi("Heki RFC v2 hypercall flag, out of tree"),
    ),
    // Kernel-internal masks of arch/x86/kvm/kvm_cache_regs.h (not uapi).
    (
        "KVM_POSSIBLE_CR0_GUEST_BITS",
        "heki-policy/src/intercept.rs",
        Allowed::NotUapi("arch/x86/kvm/kvm_cache_regs.h, kernel-internal"),
    ),
    (
        "KVM_POSSIBLE_CR4_GUEST_BITS",
        "heki-policy/src/intercept.rs",
        Allowed::NotUapi("arch/x86/kvm/kvm_cache_regs.h, kernel-internal"),
    ),
    (
        "KVM_POSSIBLE_CR4_GUEST_BITS_WITH_CET",
        "heki-policy/src/intercept.rs",
        Allowed::NotUapi("KVM_POSSIBLE_CR4_GUEST_BITS plus CR4.CET, kernel-internal"),
    ),
    // size_of::<kvm_bindings::kvm_vcpu_events>(), not a uapi constant.
    (
        "KVM_VCPU_EVENTS_SIZE",
        "vcpu-events/src/vcpu_events.rs",
        Allowed::NotUapi("size_of::<kvm_vcpu_events>()"),
    ),
];

/// One `const KVM_*` definition found in a source file.
#[derive(Debug)]
struct Definition {
    file: String,
    line: usize,
    name: String,
    /// The text after `=` up to the `;` (on the same line).
    value: String,
}

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name == "target" || name.starts_with('.') {
                continue;
            }
            rust_sources(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// The `const KVM_*` definitions of `text` (comments skipped).
fn definitions(file: &str, text: &str) -> Vec<Definition> {
    // Built at run time so this file does not match itself.
    let needle = format!("{} KVM_", "const");
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let Some(at) = code.find(&needle) else {
            continue;
        };
        // A definition: `const` starts the item (after visibility), not e.g. a string.
        let before = code[..at].trim();
        if !(before.is_empty() || before.starts_with("pub")) {
            continue;
        }
        let rest = &code[at + "const ".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let value = rest
            .split_once('=')
            .map(|(_, v)| v.trim().trim_end_matches(';').trim().to_owned())
            .unwrap_or_default();
        found.push(Definition {
            file: file.to_owned(),
            line: i + 1,
            name,
            value,
        });
    }
    found
}

fn workspace_definitions() -> Vec<Definition> {
    let root = test_support::workspace_root();
    let mut files = Vec::new();
    rust_sources(&root, &mut files);
    assert!(files.len() > 50, "scanned too few files: {}", files.len());
    let mut defs = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        defs.extend(definitions(&rel, &text));
    }
    defs
}

/// No `KVM_*` constant is defined unless it is in [`ALLOWED`], in the file listed there.
#[test]
fn no_kvm_constant_duplicates_kvm_bindings() {
    let defs = workspace_definitions();
    let mut unexpected = Vec::new();
    for d in &defs {
        match ALLOWED.iter().find(|(name, _, _)| *name == d.name) {
            Some((_, file, _)) if *file == d.file => {}
            _ => unexpected.push(format!(
                "{}:{}: {} = {} (take it from kvm-bindings, or add it to ALLOWED with why)",
                d.file, d.line, d.name, d.value
            )),
        }
    }
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
}

/// Every entry of [`ALLOWED`] still exists (no stale entries), in the file it names, and
/// says where it comes from.
#[test]
fn allowed_constants_exist_where_listed() {
    let defs = workspace_definitions();
    for (name, file, why) in ALLOWED {
        let found: Vec<&Definition> = defs.iter().filter(|d| d.name == *name).collect();
        assert_eq!(found.len(), 1, "{name}: expected one definition in {file}");
        let d = found[0];
        assert_eq!(d.file, *file, "{name}");
        match why {
            Allowed::NotUapi(source) => assert!(!source.is_empty()),
        }
    }
}

/// The guard itself finds definitions and ignores comments and other text.
#[test]
fn scanner_finds_definitions_only() {
    let text = format!(
        "pub {c} KVM_A: u32 = 1;\n// {c} KVM_B: u32 = 2;\nlet s = \"{c} KVM_C\";\n{c} KVM_D: u8 = kvm_bindings::KVM_D as u8;\npub(crate) {c} KVM_E: u32 = 5;\n",
        c = "const"
    );
    let found: Vec<(String, String)> = definitions("x.rs", &text)
        .into_iter()
        .map(|d| (d.name, d.value))
        .collect();
    assert_eq!(
        found,
        [
            ("KVM_A".to_owned(), "1".to_owned()),
            ("KVM_D".to_owned(), "kvm_bindings::KVM_D as u8".to_owned()),
            ("KVM_E".to_owned(), "5".to_owned()),
        ]
    );
}

/// The `kvm_run` exit union is read with `unsafe` in one place only:
/// `x86_kvm_base::kvm_run::KvmRunExit::from_kvm_run`.
#[test]
fn one_unsafe_reader_of_the_kvm_run_exit_union() {
    let root = test_support::workspace_root();
    let mut files = Vec::new();
    rust_sources(&root, &mut files);
    let union_field = format!("__bindgen_{}", "anon_1");
    let mut readers = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") || !code.contains(&union_field) {
                continue;
            }
            if code.contains("unsafe") || code.contains("addr_of") {
                readers.push(format!("{rel}:{}", i + 1));
            }
        }
    }
    assert_eq!(readers.len(), 1, "{readers:#?}");
    assert!(
        readers[0].starts_with("x86-kvm-base/src/kvm_run.rs:"),
        "{readers:#?}"
    );
}

/// `text` with `//` comments removed (line by line; string contents are kept).
fn strip_line_comments(text: &str) -> String {
    text.lines()
        .map(|l| l.find("//").map_or(l, |at| &l[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Byte offsets of the uses of `cap` in `code` that enable it: the statement the use sits
/// in (from the last `;`, `{` or `}` before it) calls an enable function (`enable_cap`,
/// `enable_cap_request`, `enable(`, or builds a `kvm_enable_cap`).
fn cap_enables(code: &str, cap: &str) -> Vec<usize> {
    let enables = ["enable_cap", "enable(", "kvm_enable_cap"];
    code.match_indices(cap)
        .filter(|(at, _)| {
            let start = code[..*at].rfind([';', '{', '}']).map_or(0, |i| i + 1);
            let statement = &code[start..*at];
            enables.iter().any(|e| statement.contains(e))
        })
        .map(|(at, _)| at)
        .collect()
}

/// One owner of each KVM cap enable: `KVM_CAP_X86_TRIPLE_FAULT_EVENT` (it lets
/// `KVM_SET_VCPU_EVENTS` carry a pending triple fault, `kvm_vcpu_ioctl_x86_set_vcpu_events`
/// in arch/x86/kvm/x86.c) is enabled by vcpu-events (`kvm::enable_event_caps`) and by no
/// other crate, tool, example or test; the others probe it and take the outcome.
#[test]
fn the_triple_fault_event_cap_is_enabled_by_vcpu_events_only() {
    // Built at run time so this file does not match itself.
    let cap = format!("KVM_CAP_X86_{}", "TRIPLE_FAULT_EVENT");
    let root = test_support::workspace_root();
    let mut files = Vec::new();
    rust_sources(&root, &mut files);
    let mut enablers = Vec::new();
    for path in files {
        let rel = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let code = strip_line_comments(&std::fs::read_to_string(&path).unwrap());
        for at in cap_enables(&code, &cap) {
            let line = code[..at].lines().count();
            enablers.push(format!("{rel}:{line}"));
        }
    }
    assert!(
        enablers
            .iter()
            .any(|e| e.starts_with("vcpu-events/src/kvm")),
        "vcpu-events' enable_event_caps not found: {enablers:#?}"
    );
    let others: Vec<&String> = enablers
        .iter()
        .filter(|e| !e.starts_with("vcpu-events/src/"))
        .collect();
    assert!(
        others.is_empty(),
        "{cap} enabled outside vcpu-events (use vcpu_events::kvm::enable_event_caps): {others:#?}"
    );
}

/// The enable scanner finds calls, multi-line ones included, and ignores probes,
/// comparisons and comments.
#[test]
fn cap_enable_scanner_finds_enables_only() {
    let cap = "CAP_X";
    let code = strip_line_comments(&format!(
        "let a = vm.{e}_cap(&{e}_cap_request({cap}, 1));\n\
         let b = kvm.check_extension_raw({cap}.into());\n\
         if s.cap == {cap} {{ s.done = true; }}\n\
         // vm.{e}_cap({cap})\n\
         let c = {e}(\n    &vm,\n    supported,\n    {cap},\n    1,\n);\n\
         let d = {{ s.{e}d = 1; }} == {cap};\n",
        e = "enable"
    ));
    let lines: Vec<usize> = cap_enables(&code, cap)
        .into_iter()
        .map(|at| code[..at].lines().count())
        .collect();
    assert_eq!(lines, [1, 8]);
}
