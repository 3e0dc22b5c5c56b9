//! Which WebAssembly proposals the engine accepts: the defaults (what wasmtime calls stable),
//! turned on or off per node (`WASM_SHIM_WASM_FEATURES`) and per workload (the annotation
//! `wasm.containerd.io/wasm-features`) with one grammar: `+gc,-simd,threads` (a bare name is
//! `+name`; `_` and `-` are the same; later entries win). The resolved set is part of the
//! compile cache key.
//!
//! A feature that needs another turns it on with it (`+gc` is also `+function-references`),
//! and turning one off turns off what needs it (`-simd` is also `-relaxed-simd`), unless that
//! was asked for explicitly: `-simd,+relaxed-simd` is a conflict and an error naming both.
//!
//! The baseline compiler (Winch) implements fewer proposals than Cranelift: its engine gets the
//! same set minus the ones it lacks (see [`Feature::winch`]), so a module using one of those
//! does not validate there and is compiled by Cranelift instead (see `compile`).

use std::collections::BTreeMap;

/// One proposal the shim knows by name.
#[derive(Debug)]
pub struct Feature {
    /// The name in the grammar (the proposal's name, `-` separated).
    pub name: &'static str,
    /// On unless turned off.
    pub default: bool,
    /// Whether Winch (the baseline tier) compiles it, in wasmtime 48 on x86_64.
    pub winch: bool,
    /// Features it needs.
    pub requires: &'static [&'static str],
    set: fn(&mut wasmtime::Config, bool),
}

/// Every feature, in a fixed order (the order of [`Features::canonical`]). See `docs/wasm-features.md`
/// for why each default is what it is.
pub const FEATURES: &[Feature] = &[
    // WebAssembly 2.0: tier 1 in wasmtime.
    Feature { name: "reference-types", default: true, winch: true, requires: &[], set: |c, on| { c.wasm_reference_types(on); } },
    Feature { name: "bulk-memory", default: true, winch: true, requires: &[], set: |c, on| { c.wasm_bulk_memory(on); } },
    Feature { name: "multi-value", default: true, winch: true, requires: &[], set: |c, on| { c.wasm_multi_value(on); } },
    Feature { name: "simd", default: true, winch: true, requires: &[], set: |c, on| { c.wasm_simd(on); } },
    // Tier 1 proposals, on by default in wasmtime 48.
    Feature { name: "relaxed-simd", default: true, winch: false, requires: &["simd"], set: |c, on| { c.wasm_relaxed_simd(on); } },
    Feature { name: "multi-memory", default: true, winch: true, requires: &[], set: |c, on| { c.wasm_multi_memory(on); } },
    Feature { name: "tail-call", default: true, winch: false, requires: &[], set: |c, on| { c.wasm_tail_call(on); } },
    Feature { name: "extended-const", default: true, winch: true, requires: &[], set: |c, on| { c.wasm_extended_const(on); } },
    Feature { name: "memory64", default: true, winch: true, requires: &[], set: |c, on| { c.wasm_memory64(on); } },
    // WebAssembly 3.0 proposals wasmtime 48 turns on by default (its `WASM3` set).
    Feature { name: "function-references", default: true, winch: false, requires: &["reference-types"], set: |c, on| { c.wasm_function_references(on); } },
    Feature { name: "gc", default: true, winch: false, requires: &["function-references"], set: |c, on| { c.wasm_gc(on); } },
    Feature { name: "exceptions", default: true, winch: false, requires: &[], set: |c, on| { c.wasm_exceptions(on); } },
    Feature { name: "threads", default: true, winch: true, requires: &[], set: |c, on| { c.wasm_threads(on); } },
    // Off by default in wasmtime 48: not phase 4 or not tier 1 or 2.
    Feature { name: "wide-arithmetic", default: false, winch: true, requires: &[], set: |c, on| { c.wasm_wide_arithmetic(on); } },
    Feature { name: "custom-page-sizes", default: false, winch: true, requires: &[], set: |c, on| { c.wasm_custom_page_sizes(on); } },
    Feature { name: "stack-switching", default: false, winch: false, requires: &["function-references", "exceptions"], set: |c, on| { c.wasm_stack_switching(on); } },
];

/// A malformed or contradictory feature list. The message names the feature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FeatureError(pub String);

/// Turns on or off, as asked (explicitly, or by a dependency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Asked {
    on: bool,
    explicit: bool,
}

/// A resolved set of features: each known feature on or off.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Features {
    /// Indexed like [`FEATURES`].
    on: Vec<bool>,
    /// What was asked, as given (for messages).
    asked: String,
}

impl Default for Features {
    fn default() -> Self {
        Features { on: FEATURES.iter().map(|f| f.default).collect(), asked: String::new() }
    }
}

fn index(name: &str) -> Option<usize> {
    FEATURES.iter().position(|f| f.name == name)
}

impl Features {
    /// Parses `+gc,-simd,threads` (whitespace around entries ignored; empty entries skipped)
    /// and resolves it against the defaults.
    pub fn parse(text: &str) -> Result<Features, FeatureError> {
        let mut asked: BTreeMap<usize, bool> = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (on, name) = match entry.as_bytes()[0] {
                b'+' => (true, &entry[1..]),
                b'-' => (false, &entry[1..]),
                _ => (true, entry),
            };
            let name = name.trim().to_ascii_lowercase().replace('_', "-");
            let Some(i) = index(&name) else {
                let known: Vec<&str> = FEATURES.iter().map(|f| f.name).collect();
                return Err(FeatureError(format!("unknown wasm feature {name:?} (known: {})", known.join(", "))));
            };
            asked.insert(i, on);
        }
        let mut state: Vec<Asked> = FEATURES.iter().map(|f| Asked { on: f.default, explicit: false }).collect();
        for (&i, &on) in &asked {
            state[i] = Asked { on, explicit: true };
        }
        // Dependencies, to a fixed point (the graph is small and acyclic).
        loop {
            let mut changed = false;
            for (i, f) in FEATURES.iter().enumerate() {
                for dep in f.requires {
                    let d = index(dep).expect("dependencies name known features");
                    if !state[i].on || state[d].on {
                        continue;
                    }
                    match (state[i].explicit, state[d].explicit) {
                        (true, true) => {
                            return Err(FeatureError(format!(
                                "wasm feature {:?} needs {dep:?}, which is turned off",
                                f.name
                            )))
                        }
                        // Asked for: what it needs comes with it.
                        (true, false) => state[d].on = true,
                        // Not asked for: it goes with what it needs.
                        (false, _) => state[i].on = false,
                    }
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        Ok(Features { on: state.iter().map(|s| s.on).collect(), asked: text.trim().to_string() })
    }

    /// The node's list, then the workload's (whose entries win).
    pub fn layered(node: &str, workload: &str) -> Result<Features, FeatureError> {
        let joined = match (node.trim(), workload.trim()) {
            ("", w) => w.to_string(),
            (n, "") => n.to_string(),
            (n, w) => format!("{n},{w}"),
        };
        Features::parse(&joined)
    }

    /// What was asked, as given ("" for the defaults).
    pub fn asked(&self) -> &str {
        &self.asked
    }

    pub fn is_on(&self, name: &str) -> bool {
        index(name).is_some_and(|i| self.on[i])
    }

    /// The features on for `winch` (the baseline tier) or Cranelift.
    fn enabled(&self, winch: bool) -> impl Iterator<Item = &'static Feature> + '_ {
        FEATURES.iter().zip(&self.on).filter(move |(f, on)| **on && (!winch || f.winch)).map(|(f, _)| f)
    }

    /// The features on, in a fixed order: `simd,relaxed-simd,...`. What the cache key hashes
    /// (two lists asking the same thing differently compile the same code).
    pub fn canonical(&self, winch: bool) -> String {
        self.enabled(winch).map(|f| f.name).collect::<Vec<_>>().join(",")
    }

    /// The features on for Cranelift that Winch does not compile.
    pub fn beyond_winch(&self) -> Vec<&'static str> {
        self.enabled(false).filter(|f| !f.winch).map(|f| f.name).collect()
    }

    /// Sets every known feature on `config`, on or off: explicitly, so that wasmtime's own
    /// defaults changing cannot change what a workload gets unnoticed.
    pub(crate) fn apply(&self, config: &mut wasmtime::Config, winch: bool) {
        for (f, &on) in FEATURES.iter().zip(&self.on) {
            (f.set)(config, on && (!winch || f.winch));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_stable_set() {
        let d = Features::default();
        for on in ["simd", "relaxed-simd", "gc", "exceptions", "tail-call", "function-references", "extended-const", "multi-memory", "memory64", "threads"] {
            assert!(d.is_on(on), "{on}");
        }
        for off in ["wide-arithmetic", "custom-page-sizes", "stack-switching"] {
            assert!(!d.is_on(off), "{off}");
        }
        assert_eq!(Features::parse("").unwrap(), d);
        assert_eq!(Features::parse(" , ").unwrap().on, d.on);
    }

    #[test]
    fn grammar() {
        let f = Features::parse("+wide-arithmetic, -threads,custom_page_sizes, +GC").unwrap();
        assert!(f.is_on("wide-arithmetic") && f.is_on("custom-page-sizes") && f.is_on("gc"));
        assert!(!f.is_on("threads"));
        assert_eq!(f.asked(), "+wide-arithmetic, -threads,custom_page_sizes, +GC");
        // Later entries win.
        assert!(!Features::parse("+gc,-gc").unwrap().is_on("gc"));
        assert!(Features::parse("-gc,gc").unwrap().is_on("gc"));
    }

    #[test]
    fn unknown_names_are_named() {
        let e = Features::parse("+gc,+bogus").unwrap_err();
        assert!(e.0.starts_with("unknown wasm feature \"bogus\""), "{e}");
        assert!(e.0.contains("wide-arithmetic"), "lists the known ones: {e}");
        assert!(Features::parse("+").unwrap_err().0.contains("\"\""));
    }

    #[test]
    fn dependencies_follow_and_conflicts_are_errors() {
        // Off: what needs it goes too.
        let f = Features::parse("-simd").unwrap();
        assert!(!f.is_on("simd") && !f.is_on("relaxed-simd"));
        let f = Features::parse("-reference-types").unwrap();
        assert!(!f.is_on("function-references") && !f.is_on("gc"));
        // On: what it needs comes with it.
        let f = Features::parse("-function-references,+gc").unwrap_err();
        assert!(f.0.contains("\"gc\"") && f.0.contains("\"function-references\""), "{f}");
        let f = Features::parse("-exceptions,+stack-switching").unwrap_err();
        assert!(f.0.contains("stack-switching") && f.0.contains("exceptions"), "{f}");
        let f = Features::parse("-simd,+relaxed-simd").unwrap_err();
        assert_eq!(f.0, "wasm feature \"relaxed-simd\" needs \"simd\", which is turned off");
        // Asked for after a default-off dependency: brought along.
        let f = Features::layered("-function-references", "+gc");
        assert!(f.is_err(), "the node's explicit off and the workload's explicit on conflict");
        let f = Features::parse("-gc,+gc").unwrap();
        assert!(f.is_on("function-references"));
    }

    #[test]
    fn canonical_lists_what_is_on_per_tier() {
        let d = Features::default();
        assert!(d.canonical(false).contains("gc"));
        assert!(!d.canonical(true).contains("gc"), "Winch has no GC");
        assert_eq!(Features::parse("+simd").unwrap().canonical(false), d.canonical(false));
        assert_ne!(Features::parse("-simd").unwrap().canonical(false), d.canonical(false));
        assert_eq!(d.beyond_winch(), ["relaxed-simd", "tail-call", "function-references", "gc", "exceptions"]);
    }

    #[test]
    fn layers() {
        let f = Features::layered("+wide-arithmetic,-threads", "+threads").unwrap();
        assert!(f.is_on("wide-arithmetic") && f.is_on("threads"));
        assert_eq!(Features::layered("", "").unwrap(), Features::default());
        assert!(Features::layered("+nope", "").is_err());
    }
}
