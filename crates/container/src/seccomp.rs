//! The spec's `linux.seccomp` as a filter on the container init, through libseccomp (the
//! library runc uses, so a profile means the same thing under both runtimes).
//!
//! [`plan`] turns the spec into a [`Plan`] (pure: every field checked, every refusal names the
//! field); [`Plan::load`] builds the libseccomp filter and loads it on every thread of the
//! process. Like runc: syscall names this libseccomp does not know are skipped, a rule whose
//! action is the default action is dropped, and the comparisons of a rule that test the same
//! argument more than once become separate rules (libseccomp cannot AND them). Unlike runc,
//! `SCMP_ACT_NOTIFY` is refused: there is no seccomp agent for a wasm init to hand a listener to.

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator};

/// What errno an `SCMP_ACT_ERRNO` or `SCMP_ACT_TRACE` without `errnoRet` returns (runc's default).
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile asks for something the shim does not apply; names the field.
    #[error("linux.seccomp: {0}")]
    Unsupported(String),
    /// libseccomp refused the filter or the kernel refused to load it.
    #[error("linux.seccomp: {what}: {err}")]
    Library { what: String, err: String },
}

/// One comparison of a syscall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub arg: u32,
    pub op: Op,
    pub value: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    /// `(arg & mask) == value`.
    MaskedEq { mask: u64 },
}

/// What a matching syscall gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    KillThread,
    KillProcess,
    Trap,
    Errno(u32),
    Trace(u32),
    Log,
    Allow,
}

/// One libseccomp rule: a syscall, an action, and comparisons that must all hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub syscall: String,
    pub action: Action,
    pub conds: Vec<Cond>,
}

/// A checked profile, ready to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub default: Action,
    pub archs: Vec<Arch>,
    pub log: bool,
    pub spec_allow: bool,
    pub wait_killable: bool,
    pub rules: Vec<Rule>,
}

fn action(a: LinuxSeccompAction, errno: Option<u32>, field: &str) -> Result<Action, SeccompError> {
    use LinuxSeccompAction::*;
    Ok(match a {
        ScmpActKill | ScmpActKillThread => Action::KillThread,
        ScmpActKillProcess => Action::KillProcess,
        ScmpActTrap => Action::Trap,
        ScmpActErrno => Action::Errno(errno.unwrap_or(DEFAULT_ERRNO)),
        ScmpActTrace => Action::Trace(errno.unwrap_or(DEFAULT_ERRNO)),
        ScmpActLog => Action::Log,
        ScmpActAllow => Action::Allow,
        ScmpActNotify => {
            return Err(SeccompError::Unsupported(format!(
                "{field}: SCMP_ACT_NOTIFY is not supported for wasm containers (no seccomp agent receives the listener)"
            )))
        }
    })
}

fn op(o: LinuxSeccompOperator, value_two: Option<u64>, value: u64) -> (Op, u64) {
    use LinuxSeccompOperator::*;
    match o {
        ScmpCmpNe => (Op::Ne, value),
        ScmpCmpLt => (Op::Lt, value),
        ScmpCmpLe => (Op::Le, value),
        ScmpCmpEq => (Op::Eq, value),
        ScmpCmpGe => (Op::Ge, value),
        ScmpCmpGt => (Op::Gt, value),
        // The spec: `value` is the mask, `valueTwo` what the masked argument must equal.
        ScmpCmpMaskedEq => (Op::MaskedEq { mask: value }, value_two.unwrap_or(0)),
    }
}

/// Checks the spec's profile and turns it into rules. Pure: no libseccomp call.
pub fn plan(s: &LinuxSeccomp) -> Result<Plan, SeccompError> {
    let default = action(s.default_action(), s.default_errno_ret(), "defaultAction")?;
    if s.listener_path().is_some() {
        return Err(SeccompError::Unsupported("listenerPath: seccomp agents are not supported for wasm containers".into()));
    }
    let (mut log, mut spec_allow, mut wait_killable) = (false, false, false);
    for f in s.flags().as_deref().unwrap_or(&[]) {
        match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => log = true,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => spec_allow = true,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => wait_killable = true,
            // Always on: the filter covers every thread of the init.
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {}
        }
    }
    let mut rules = Vec::new();
    for (i, sc) in s.syscalls().as_deref().unwrap_or(&[]).iter().enumerate() {
        let act = action(sc.action(), sc.errno_ret(), &format!("syscalls[{i}].action"))?;
        if act == default {
            continue;
        }
        let mut conds = Vec::new();
        for (j, a) in sc.args().as_deref().unwrap_or(&[]).iter().enumerate() {
            if a.index() > 5 {
                return Err(SeccompError::Unsupported(format!("syscalls[{i}].args[{j}].index: {} (a syscall has 6 arguments, 0-5)", a.index())));
            }
            let (op, value) = op(a.op(), a.value_two(), a.value());
            conds.push(Cond { arg: a.index() as u32, op, value });
        }
        // Comparisons that test one argument twice cannot be ANDed by libseccomp: each becomes
        // a rule of its own (what runc does).
        let repeated = conds.iter().enumerate().any(|(k, c)| conds[..k].iter().any(|d| d.arg == c.arg));
        let groups: Vec<Vec<Cond>> = if repeated { conds.iter().map(|c| vec![*c]).collect() } else { vec![conds] };
        for name in sc.names() {
            for g in &groups {
                rules.push(Rule { syscall: name.clone(), action: act, conds: g.clone() });
            }
        }
    }
    Ok(Plan { default, archs: s.architectures().clone().unwrap_or_default(), log, spec_allow, wait_killable, rules })
}

fn scmp_action(a: Action) -> ScmpAction {
    match a {
        Action::KillThread => ScmpAction::KillThread,
        Action::KillProcess => ScmpAction::KillProcess,
        Action::Trap => ScmpAction::Trap,
        Action::Errno(e) => ScmpAction::Errno(e as i32),
        Action::Trace(e) => ScmpAction::Trace(e as u16),
        Action::Log => ScmpAction::Log,
        Action::Allow => ScmpAction::Allow,
    }
}

fn scmp_arch(a: Arch) -> ScmpArch {
    use Arch::*;
    match a {
        ScmpArchNative => ScmpArch::Native,
        ScmpArchX86 => ScmpArch::X86,
        ScmpArchX86_64 => ScmpArch::X8664,
        ScmpArchX32 => ScmpArch::X32,
        ScmpArchArm => ScmpArch::Arm,
        ScmpArchAarch64 => ScmpArch::Aarch64,
        ScmpArchMips => ScmpArch::Mips,
        ScmpArchMips64 => ScmpArch::Mips64,
        ScmpArchMips64n32 => ScmpArch::Mips64N32,
        ScmpArchMipsel => ScmpArch::Mipsel,
        ScmpArchMipsel64 => ScmpArch::Mipsel64,
        ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        ScmpArchPpc => ScmpArch::Ppc,
        ScmpArchPpc64 => ScmpArch::Ppc64,
        ScmpArchPpc64le => ScmpArch::Ppc64Le,
        ScmpArchS390 => ScmpArch::S390,
        ScmpArchS390x => ScmpArch::S390X,
        ScmpArchParisc => ScmpArch::Parisc,
        ScmpArchParisc64 => ScmpArch::Parisc64,
        ScmpArchRiscv64 => ScmpArch::Riscv64,
        ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        ScmpArchM68k => ScmpArch::M68k,
        ScmpArchSh => ScmpArch::Sh,
        ScmpArchSheb => ScmpArch::Sheb,
    }
}

fn scmp_cond(c: &Cond) -> ScmpArgCompare {
    let op = match c.op {
        Op::Ne => ScmpCompareOp::NotEqual,
        Op::Lt => ScmpCompareOp::Less,
        Op::Le => ScmpCompareOp::LessOrEqual,
        Op::Eq => ScmpCompareOp::Equal,
        Op::Ge => ScmpCompareOp::GreaterEqual,
        Op::Gt => ScmpCompareOp::Greater,
        Op::MaskedEq { mask } => ScmpCompareOp::MaskedEqual(mask),
    };
    ScmpArgCompare::new(c.arg, op, c.value)
}

impl Plan {
    /// Builds the libseccomp filter (not loaded). Skips syscall names this libseccomp does not
    /// know, as runc does; returns how many rules were skipped that way.
    pub fn build(&self) -> Result<(ScmpFilterContext, usize), SeccompError> {
        let lib = |what: &str| {
            let what = what.to_string();
            move |e: libseccomp::error::SeccompError| SeccompError::Library { what: what.clone(), err: e.to_string() }
        };
        let mut ctx = ScmpFilterContext::new(scmp_action(self.default)).map_err(lib("new filter"))?;
        for a in &self.archs {
            let arch = scmp_arch(*a);
            if !ctx.is_arch_present(arch).map_err(lib("architectures"))? {
                ctx.add_arch(arch).map_err(lib(&format!("architectures: {a:?}")))?;
            }
        }
        // no_new_privs is the spec's business (process.noNewPrivileges), not the filter's.
        ctx.set_ctl_nnp(false).map_err(lib("no_new_privs attribute"))?;
        ctx.set_ctl_tsync(true).map_err(lib("tsync attribute"))?;
        if self.log {
            ctx.set_ctl_log(true).map_err(lib("flags: SECCOMP_FILTER_FLAG_LOG"))?;
        }
        if self.spec_allow {
            ctx.set_ctl_ssb(true).map_err(lib("flags: SECCOMP_FILTER_FLAG_SPEC_ALLOW"))?;
        }
        if self.wait_killable {
            ctx.set_ctl_waitkill(true).map_err(lib("flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"))?;
        }
        let mut skipped = 0;
        for r in &self.rules {
            let sc = match ScmpSyscall::from_name(&r.syscall) {
                Ok(sc) => sc,
                Err(_) => {
                    skipped += 1;
                    continue;
                }
            };
            let conds: Vec<ScmpArgCompare> = r.conds.iter().map(scmp_cond).collect();
            let res = if conds.is_empty() {
                ctx.add_rule(scmp_action(r.action), sc)
            } else {
                ctx.add_rule_conditional(scmp_action(r.action), sc, &conds)
            };
            res.map_err(lib(&format!("syscall {}", r.syscall)))?;
        }
        Ok((ctx, skipped))
    }

    /// Builds and loads the filter on every thread of the calling process. Needs
    /// no_new_privs or CAP_SYS_ADMIN.
    pub fn load(&self) -> Result<(), SeccompError> {
        let (ctx, skipped) = self.build()?;
        if skipped > 0 {
            log::debug!("seccomp: {skipped} rules name syscalls this libseccomp does not know; skipped");
        }
        ctx.load().map_err(|e| SeccompError::Library { what: "load".into(), err: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn actions_errnos_and_archs_convert() {
        let p = plan(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["ptrace"], "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            ]
        })))
        .unwrap();
        assert_eq!(p.default, Action::Errno(38));
        assert_eq!(p.archs, vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]);
        assert!(p.log && !p.spec_allow);
        let rules: Vec<(&str, Action)> = p.rules.iter().map(|r| (r.syscall.as_str(), r.action)).collect();
        assert_eq!(
            rules,
            vec![("read", Action::Allow), ("write", Action::Allow), ("mkdirat", Action::Errno(1)), ("ptrace", Action::KillProcess), ("kill", Action::Errno(1))]
        );
    }

    #[test]
    fn rules_equal_to_the_default_are_dropped() {
        let p = plan(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}, {"names": ["bpf"], "action": "SCMP_ACT_ERRNO"}]
        })))
        .unwrap();
        assert_eq!(p.rules, vec![Rule { syscall: "bpf".into(), action: Action::Errno(1), conds: vec![] }]);
    }

    #[test]
    fn arguments_convert_and_repeated_ones_split() {
        // Docker's/containerd's personality rule: one argument, one rule per value.
        let p = plan(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 2114060288u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [
                    {"index": 0, "value": 1, "op": "SCMP_CMP_NE"}, {"index": 0, "value": 2, "op": "SCMP_CMP_NE"}]},
                {"names": ["x"], "action": "SCMP_ACT_ALLOW", "args": [
                    {"index": 0, "value": 1, "op": "SCMP_CMP_GE"}, {"index": 1, "value": 2, "op": "SCMP_CMP_LT"}]}
            ]
        })))
        .unwrap();
        assert_eq!(p.rules[0].conds, vec![Cond { arg: 0, op: Op::Eq, value: 0 }]);
        assert_eq!(p.rules[1].conds, vec![Cond { arg: 0, op: Op::MaskedEq { mask: 2114060288 }, value: 0 }]);
        // Same argument twice: two rules of one comparison each.
        assert_eq!(p.rules[2].conds, vec![Cond { arg: 0, op: Op::Ne, value: 1 }]);
        assert_eq!(p.rules[3].conds, vec![Cond { arg: 0, op: Op::Ne, value: 2 }]);
        // Different arguments: one rule, both comparisons.
        assert_eq!(p.rules[4].conds, vec![Cond { arg: 0, op: Op::Ge, value: 1 }, Cond { arg: 1, op: Op::Lt, value: 2 }]);
    }

    #[test]
    fn what_cannot_be_applied_is_an_error_naming_the_field() {
        let notify = plan(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["openat"], "action": "SCMP_ACT_NOTIFY"}]
        })))
        .unwrap_err()
        .to_string();
        assert!(notify.contains("syscalls[0].action") && notify.contains("SCMP_ACT_NOTIFY"), "{notify}");
        let listener = plan(&profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"})))
            .unwrap_err()
            .to_string();
        assert!(listener.contains("listenerPath"), "{listener}");
        let index = plan(&profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]
        })))
        .unwrap_err()
        .to_string();
        assert!(index.contains("syscalls[0].args[0].index"), "{index}");
    }

    /// containerd's default profile (the RuntimeDefault of Kubernetes), as shipped in
    /// `test/fixtures`, builds into a libseccomp filter: every architecture and argument
    /// comparison is accepted, and unknown syscall names are only skipped.
    #[test]
    fn containerd_default_profile_builds() {
        let text = include_str!("../tests/fixtures/seccomp-default.json");
        let s: LinuxSeccomp = serde_json::from_str(text).unwrap();
        let p = plan(&s).unwrap();
        assert_eq!(p.default, Action::Errno(1));
        assert!(p.rules.len() > 300, "{} rules", p.rules.len());
        let (ctx, skipped) = p.build().unwrap();
        assert!(skipped < p.rules.len() / 10, "{skipped} of {} rules skipped", p.rules.len());
        let out = tempfile::tempfile().unwrap();
        ctx.export_bpf(&out).unwrap();
        let len = out.metadata().unwrap().len();
        assert!(len > 8 * 100, "the filter is {len} bytes");
    }
}
