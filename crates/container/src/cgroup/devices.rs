//! Device rules (`linux.resources.devices`): checking them, and emulating what the kernel keeps
//! once they are applied in order — a default (every device allowed, or every device denied) and
//! a list of exceptions to it. Both layouts start from that emulated [`Policy`]: v1 writes it to
//! `devices.deny`/`devices.allow`, v2 compiles it into an eBPF filter (`bpf`), so a rule list
//! means the same thing on both.
//!
//! The semantics are those of the kernel's v1 devices controller, as runc applies them:
//! - The list starts from "deny every device": a list that does not begin with an `a` rule is an
//!   allow-list all the same.
//! - An `a` rule means every device and every access, whatever numbers and access it names: it
//!   resets to "allow all" or "deny all" and drops every exception.
//! - While the default is deny, an allow rule adds an exception (its access merged into an
//!   exception for the same `type major:minor`), and a deny rule takes access away from the
//!   exception with exactly the same `type major:minor`. While the default is allow, the roles
//!   swap.
//! - A rule that would take access away from inside a broader wildcard exception (deny
//!   `c 136:3` under an allowed `c 136:*`) is refused: the kernel would silently keep the
//!   broader exception, so the rule would not do what it says.
//! - With a deny default, an access is allowed when one exception matches the device and holds
//!   every requested access bit; with an allow default, it is denied when any exception matches
//!   the device and shares one requested access bit.

use std::fmt;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::{CgroupError, Result};

/// The device types a cgroup rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// `a`: every device, char and block.
    All,
    /// `c`
    Char,
    /// `b`
    Block,
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceKind::All => "a",
            DeviceKind::Char => "c",
            DeviceKind::Block => "b",
        })
    }
}

/// A set of device accesses (`r`, `w`, `m`). The bits are the kernel's (`BPF_DEVCG_ACC_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceAccess(u8);

impl DeviceAccess {
    pub const MKNOD: DeviceAccess = DeviceAccess(1);
    pub const READ: DeviceAccess = DeviceAccess(2);
    pub const WRITE: DeviceAccess = DeviceAccess(4);
    pub const ALL: DeviceAccess = DeviceAccess(7);

    /// Parses a non-empty combination of `r`, `w` and `m` (repeats allowed); `None` otherwise.
    pub fn parse(letters: &str) -> Option<DeviceAccess> {
        let mut bits = 0;
        for c in letters.chars() {
            bits |= match c {
                'r' => Self::READ.0,
                'w' => Self::WRITE.0,
                'm' => Self::MKNOD.0,
                _ => return None,
            };
        }
        (bits != 0).then_some(DeviceAccess(bits))
    }

    /// The kernel's bits: mknod 1, read 2, write 4.
    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: DeviceAccess) -> bool {
        other.0 & !self.0 == 0
    }

    pub fn intersects(self, other: DeviceAccess) -> bool {
        self.0 & other.0 != 0
    }

    pub fn union(self, other: DeviceAccess) -> DeviceAccess {
        DeviceAccess(self.0 | other.0)
    }

    pub fn minus(self, other: DeviceAccess) -> DeviceAccess {
        DeviceAccess(self.0 & !other.0)
    }
}

impl fmt::Display for DeviceAccess {
    /// In the kernel's order, `rwm`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, c) in [(Self::READ, 'r'), (Self::WRITE, 'w'), (Self::MKNOD, 'm')] {
            if self.contains(bit) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// One rule of `linux.resources.devices`, checked. `None` major/minor = any (`*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DeviceKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: DeviceAccess,
}

impl DeviceRule {
    /// Allow rules for the device nodes every container gets (`null`, `zero`, `full`,
    /// `random`, `urandom`, `tty`: the OCI runtime spec's defaults, which the wasm init binds):
    /// runc appends the same after the spec's rules, so they open whatever the spec denies.
    /// Unlike runc, no blanket `mknod` rule: a wasm guest cannot call mknod.
    pub fn default_nodes() -> Vec<DeviceRule> {
        [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0)]
            .into_iter()
            .map(|(major, minor)| DeviceRule {
                allow: true,
                kind: DeviceKind::Char,
                major: Some(major),
                minor: Some(minor),
                access: DeviceAccess::READ.union(DeviceAccess::WRITE).union(DeviceAccess::MKNOD),
            })
            .collect()
    }

    /// Converts the spec's rule number `index`. A missing type is `a` and a missing (or -1)
    /// number is `*`, as in runc. Refused, naming the rule: a type other than `a`, `c` or `b`,
    /// an access that is empty or holds anything but `r`, `w` and `m`, a number outside u32.
    pub fn from_spec(index: usize, d: &LinuxDeviceCgroup) -> Result<DeviceRule> {
        let verb = if d.allow() { "allow" } else { "deny" };
        let shown = format!("{verb} {d}");
        let shown = shown.trim_end();
        let bad = |why: String| {
            CgroupError::InvalidResources(format!("devices[{index}] ({shown}): {why}"))
        };
        let kind = match d.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => DeviceKind::All,
            LinuxDeviceType::C => DeviceKind::Char,
            LinuxDeviceType::B => DeviceKind::Block,
            other => {
                return Err(bad(format!(
                    "type {} is not a cgroup device type (a, c or b)",
                    other.as_str()
                )))
            }
        };
        let number = |what: &str, v: Option<i64>| match v {
            None | Some(-1) => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| bad(format!("{what} number {n} is out of range"))),
        };
        let major = number("major", d.major())?;
        let minor = number("minor", d.minor())?;
        let letters = d.access().as_deref().unwrap_or("");
        let access = DeviceAccess::parse(letters).ok_or_else(|| {
            bad(format!(
                "access {letters:?} must be a non-empty combination of r, w and m"
            ))
        })?;
        Ok(DeviceRule {
            allow: d.allow(),
            kind,
            major,
            minor,
            access,
        })
    }
}

impl fmt::Display for DeviceRule {
    /// `allow c 1:3 rwm`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.allow { "allow" } else { "deny" };
        let key = Key {
            kind: self.kind,
            major: self.major,
            minor: self.minor,
        };
        write!(f, "{verb} {key} {}", self.access)
    }
}

/// `type major:minor` of an exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    pub kind: DeviceKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
}

impl fmt::Display for Key {
    /// `c 1:3`, `c 136:*`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |v: Option<u32>| v.map_or("*".to_string(), |n| n.to_string());
        write!(f, "{} {}:{}", self.kind, n(self.major), n(self.minor))
    }
}

/// What the kernel keeps after a rule list: a default and the exceptions to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    pub default_allow: bool,
    /// Devices that get the opposite of the default for the given access, in the order first
    /// named. Never an `a` key, never an empty access, never two entries with one key.
    pub exceptions: Vec<(Key, DeviceAccess)>,
}

impl Policy {
    /// Emulates the rules in order (see the module doc). Refuses a rule the kernel would
    /// silently ignore.
    pub(crate) fn from_rules(rules: &[DeviceRule]) -> Result<Policy> {
        let mut p = Policy {
            default_allow: false,
            exceptions: Vec::new(),
        };
        for (i, rule) in rules.iter().enumerate() {
            if rule.kind == DeviceKind::All {
                p = Policy {
                    default_allow: rule.allow,
                    exceptions: Vec::new(),
                };
                continue;
            }
            let key = Key {
                kind: rule.kind,
                major: rule.major,
                minor: rule.minor,
            };
            if rule.allow != p.default_allow {
                p.add(key, rule.access);
            } else {
                p.take_away(key, rule.access).map_err(|broader| {
                    CgroupError::InvalidResources(format!(
                        "devices[{i}] ({rule}): cannot carve {key} out of the broader \
                         exception {broader}; the kernel would ignore this rule"
                    ))
                })?;
            }
        }
        Ok(p)
    }

    fn add(&mut self, key: Key, access: DeviceAccess) {
        match self.exceptions.iter_mut().find(|(k, _)| *k == key) {
            Some((_, a)) => *a = a.union(access),
            None => self.exceptions.push((key, access)),
        }
    }

    /// Removes `access` from the exception with exactly `key`. Err(description of the broader
    /// exception) when a wildcard exception covering `key` shares some of that access.
    fn take_away(&mut self, key: Key, access: DeviceAccess) -> std::result::Result<(), String> {
        let broader = [
            Key { major: None, ..key },
            Key { minor: None, ..key },
            Key {
                major: None,
                minor: None,
                ..key
            },
        ];
        for b in broader.iter().filter(|b| **b != key) {
            if let Some((k, a)) = self
                .exceptions
                .iter()
                .find(|(k, a)| k == b && a.intersects(access))
            {
                return Err(format!("{k} {a}"));
            }
        }
        if let Some(pos) = self.exceptions.iter().position(|(k, _)| *k == key) {
            let left = self.exceptions[pos].1.minus(access);
            if left.is_empty() {
                self.exceptions.remove(pos);
            } else {
                self.exceptions[pos].1 = left;
            }
        }
        Ok(())
    }

    /// What cgroup v1 needs written, in order: `a` to set the default (to `devices.deny` or
    /// `devices.allow`), then each exception to the other file. The reset comes first, so the
    /// result does not depend on what the directory held before.
    pub(crate) fn v1_writes(&self) -> Vec<(&'static str, String)> {
        let (default_file, exception_file) = if self.default_allow {
            ("devices.allow", "devices.deny")
        } else {
            ("devices.deny", "devices.allow")
        };
        std::iter::once((default_file, "a".to_string()))
            .chain(
                self.exceptions
                    .iter()
                    .map(|(k, a)| (exception_file, format!("{k} {a}"))),
            )
            .collect()
    }

    /// The kernel's v1 decision for one access (the reference the eBPF filter is tested against).
    #[cfg(test)]
    pub(crate) fn allows(
        &self,
        kind: DeviceKind,
        major: u32,
        minor: u32,
        access: DeviceAccess,
    ) -> bool {
        let matching = self.exceptions.iter().filter(|(k, _)| {
            k.kind == kind
                && k.major.is_none_or(|m| m == major)
                && k.minor.is_none_or(|m| m == minor)
        });
        if self.default_allow {
            !matching.into_iter().any(|(_, a)| a.intersects(access))
        } else {
            matching.into_iter().any(|(_, a)| a.contains(access))
        }
    }
}

/// A rule from its text, `allow c 1:3 rwm` / `deny a` (tests only).
#[cfg(test)]
pub(crate) fn rule(text: &str) -> DeviceRule {
    let mut it = text.split_whitespace();
    let allow = match it.next() {
        Some("allow") => true,
        Some("deny") => false,
        _ => panic!("{text}"),
    };
    let kind = match it.next() {
        Some("a") => DeviceKind::All,
        Some("c") => DeviceKind::Char,
        Some("b") => DeviceKind::Block,
        _ => panic!("{text}"),
    };
    let (major, minor) = match it.next() {
        Some(nums) => {
            let (a, b) = nums.split_once(':').expect(text);
            let n = |s: &str| (s != "*").then(|| s.parse().expect(text));
            (n(a), n(b))
        }
        None => (None, None),
    };
    let access = DeviceAccess::parse(it.next().unwrap_or("rwm")).expect(text);
    DeviceRule {
        allow,
        kind,
        major,
        minor,
        access,
    }
}

/// What containerd puts in every container's spec: deny all, then its default devices.
#[cfg(test)]
pub(crate) fn containerd_defaults() -> Vec<DeviceRule> {
    [
        "deny a",
        "allow c 1:3 rwm",    // null
        "allow c 1:8 rwm",    // random
        "allow c 1:7 rwm",    // full
        "allow c 5:0 rwm",    // tty
        "allow c 1:5 rwm",    // zero
        "allow c 1:9 rwm",    // urandom
        "allow c 5:1 rwm",    // console
        "allow c 136:* rwm",  // pts
        "allow c 5:2 rwm",    // ptmx
        "allow c 10:200 rwm", // tun
    ]
    .iter()
    .map(|t| rule(t))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn spec_rule(
        allow: bool,
        typ: Option<LinuxDeviceType>,
        major: Option<i64>,
        minor: Option<i64>,
        access: Option<&str>,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(allow);
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        if let Some(a) = access {
            b = b.access(a);
        }
        b.build().unwrap()
    }

    #[test]
    fn access_parse_and_display() {
        assert_eq!(DeviceAccess::parse("rwm"), Some(DeviceAccess::ALL));
        assert_eq!(DeviceAccess::parse("mwr").unwrap().to_string(), "rwm");
        assert_eq!(DeviceAccess::parse("rr").unwrap(), DeviceAccess::READ);
        assert_eq!(DeviceAccess::parse("wm").unwrap().bits(), 5);
        assert_eq!(DeviceAccess::parse(""), None);
        assert_eq!(DeviceAccess::parse("rwx"), None);
        assert_eq!(DeviceAccess::parse("R"), None);
    }

    #[test]
    fn from_spec_defaults_and_wildcards() {
        let r = DeviceRule::from_spec(0, &spec_rule(false, None, None, None, Some("rwm"))).unwrap();
        assert_eq!(r, rule("deny a"));
        let r = DeviceRule::from_spec(
            1,
            &spec_rule(true, Some(LinuxDeviceType::C), Some(136), None, Some("rwm")),
        )
        .unwrap();
        assert_eq!(r, rule("allow c 136:* rwm"));
        let r = DeviceRule::from_spec(
            2,
            &spec_rule(
                true,
                Some(LinuxDeviceType::B),
                Some(-1),
                Some(4_000_000_000),
                Some("r"),
            ),
        )
        .unwrap();
        assert_eq!(r, rule("allow b *:4000000000 r"));
        assert_eq!(r.to_string(), "allow b *:4000000000 r");
    }

    #[test]
    fn from_spec_errors_name_the_rule() {
        let cases = [
            (spec_rule(true, Some(LinuxDeviceType::U), Some(1), Some(3), Some("rwm")), "devices[4] (allow u 1:3 rwm): type u is not a cgroup device type (a, c or b)"),
            (spec_rule(true, Some(LinuxDeviceType::P), None, None, Some("r")), "devices[4] (allow p *:* r): type p is not"),
            (spec_rule(false, Some(LinuxDeviceType::C), Some(1), Some(3), Some("rwx")), "devices[4] (deny c 1:3 rwx): access \"rwx\" must be a non-empty combination of r, w and m"),
            (spec_rule(true, Some(LinuxDeviceType::C), Some(1), Some(3), None), "devices[4] (allow c 1:3): access \"\" must be"),
            (spec_rule(true, Some(LinuxDeviceType::C), Some(1), Some(3), Some("")), "access \"\" must be"),
            (spec_rule(true, Some(LinuxDeviceType::C), Some(-2), Some(3), Some("r")), "devices[4] (allow c -2:3 r): major number -2 is out of range"),
            (spec_rule(true, Some(LinuxDeviceType::C), Some(1), Some(1 << 32), Some("r")), "minor number 4294967296 is out of range"),
        ];
        for (d, want) in cases {
            let err = DeviceRule::from_spec(4, &d).unwrap_err();
            assert!(matches!(err, CgroupError::InvalidResources(_)), "{err}");
            let msg = err.to_string();
            assert!(msg.starts_with("cgroup: invalid resources: "), "{msg}");
            assert!(msg.contains(want), "{msg}\nwanted: {want}");
        }
    }

    fn policy(rules: &[&str]) -> Policy {
        let rules: Vec<DeviceRule> = rules.iter().map(|t| rule(t)).collect();
        Policy::from_rules(&rules).unwrap()
    }

    fn exceptions(p: &Policy) -> Vec<String> {
        p.exceptions
            .iter()
            .map(|(k, a)| format!("{k} {a}"))
            .collect()
    }

    #[test]
    fn emulation_starts_from_deny_all() {
        let p = policy(&[]);
        assert!(!p.default_allow && p.exceptions.is_empty());
        // No leading `a`: still an allow-list.
        let p = policy(&["allow c 1:3 rwm"]);
        assert!(!p.default_allow);
        assert_eq!(exceptions(&p), ["c 1:3 rwm"]);
    }

    #[test]
    fn emulation_merges_takes_away_and_resets() {
        let p = policy(&[
            "deny a",
            "allow c 1:3 r",
            "allow c 1:3 w",
            "allow c 1:5 rwm",
            "deny c 1:5 m",
            "deny c 1:9 rwm",
        ]);
        assert_eq!(exceptions(&p), ["c 1:3 rw", "c 1:5 rw"]);
        let p = policy(&["deny a", "allow c 1:3 rw", "deny c 1:3 rw"]);
        assert!(p.exceptions.is_empty());
        // An `a` rule drops what came before, whatever numbers and access it names.
        let p = policy(&["deny a", "allow c 1:3 rwm", "allow a 1:1 r"]);
        assert!(p.default_allow && p.exceptions.is_empty());
        let p = policy(&["allow a", "deny c 1:3 rwm", "deny b 8:* w", "allow b 8:* w"]);
        assert!(p.default_allow);
        assert_eq!(exceptions(&p), ["c 1:3 rwm"]);
    }

    #[test]
    fn emulation_refuses_holes_in_wildcards() {
        for (rules, want) in [
            (vec!["deny a", "allow c 136:* rwm", "deny c 136:3 w"], "devices[2] (deny c 136:3 w): cannot carve c 136:3 out of the broader exception c 136:* rwm"),
            (vec!["allow a", "deny c *:* r", "allow c 1:3 rw"], "devices[2] (allow c 1:3 rw): cannot carve c 1:3 out of the broader exception c *:* r"),
            (vec!["deny a", "allow b *:0 r", "deny b 8:0 r"], "exception b *:0 r"),
        ] {
            let rules: Vec<DeviceRule> = rules.iter().map(|t| rule(t)).collect();
            let err = Policy::from_rules(&rules).unwrap_err().to_string();
            assert!(err.contains(want), "{err}\nwanted: {want}");
        }
        // No shared access, or a different type: nothing is carved out, so it is fine.
        policy(&["deny a", "allow c 136:* r", "deny c 136:3 w"]);
        policy(&["deny a", "allow c 136:* rwm", "deny b 136:3 rwm"]);
    }

    #[test]
    fn v1_writes_reset_then_exceptions_in_order() {
        let p = Policy::from_rules(&containerd_defaults()).unwrap();
        let writes = p.v1_writes();
        assert_eq!(writes[0], ("devices.deny", "a".to_string()));
        let rest: Vec<String> = writes[1..]
            .iter()
            .map(|(f, l)| {
                assert_eq!(*f, "devices.allow");
                l.clone()
            })
            .collect();
        assert_eq!(
            rest,
            [
                "c 1:3 rwm",
                "c 1:8 rwm",
                "c 1:7 rwm",
                "c 5:0 rwm",
                "c 1:5 rwm",
                "c 1:9 rwm",
                "c 5:1 rwm",
                "c 136:* rwm",
                "c 5:2 rwm",
                "c 10:200 rwm"
            ]
        );
        let p = policy(&["allow a", "deny b 8:* w"]);
        assert_eq!(
            p.v1_writes(),
            [
                ("devices.allow", "a".to_string()),
                ("devices.deny", "b 8:* w".to_string())
            ]
        );
    }

    #[test]
    fn v1_writes_replayed_give_the_same_policy() {
        for rules in [
            containerd_defaults(),
            vec![rule("allow a"), rule("deny c 1:3 w"), rule("deny b *:* m")],
            vec![rule("allow c 1:3 r"), rule("allow c 1:3 w")],
            vec![],
        ] {
            let p = Policy::from_rules(&rules).unwrap();
            let replay: Vec<DeviceRule> = p
                .v1_writes()
                .iter()
                .map(|(file, line)| {
                    let verb = if *file == "devices.allow" {
                        "allow"
                    } else {
                        "deny"
                    };
                    rule(&format!("{verb} {line}"))
                })
                .collect();
            assert_eq!(Policy::from_rules(&replay).unwrap(), p, "{rules:?}");
        }
    }

    #[test]
    fn kernel_decisions() {
        use DeviceKind::*;
        let (r, w, m) = (DeviceAccess::READ, DeviceAccess::WRITE, DeviceAccess::MKNOD);
        let rw = r.union(w);
        let p = policy(&["deny a", "allow c 1:* r", "allow c 1:3 w"]);
        assert!(p.allows(Char, 1, 3, r) && p.allows(Char, 1, 3, w) && p.allows(Char, 1, 9, r));
        // Allow-list: one exception must hold every requested bit.
        assert!(!p.allows(Char, 1, 3, rw));
        assert!(!p.allows(Block, 1, 3, r) && !p.allows(Char, 2, 3, r) && !p.allows(Char, 1, 3, m));
        // Deny-list: one shared bit is enough to deny.
        let p = policy(&["allow a", "deny c 1:3 w"]);
        assert!(p.allows(Char, 1, 3, r) && !p.allows(Char, 1, 3, w) && !p.allows(Char, 1, 3, rw));
        assert!(p.allows(Char, 1, 4, rw) && p.allows(Block, 1, 3, w));
    }
}
