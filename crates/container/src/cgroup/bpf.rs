//! cgroup v2 has no devices file: on every device open or mknod the kernel runs the eBPF programs
//! of type `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the cgroup (and its ancestors), and the
//! access is allowed only if all of them return 1. This module compiles an emulated [`Policy`]
//! into such a program, loads it and attaches it to the container's directory.
//!
//! The program reads `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`,
//! where `access_type = access << 16 | type` (type: block 1, char 2; access: mknod 1, read 2,
//! write 4), and decides as the v1 kernel would for the same policy:
//!
//! ```text
//! r2 = type, r3 = access, r4 = major, r5 = minor
//! for each exception:   if it matches: return !default      (r1 is scratch)
//! return default
//! ```
//!
//! An exception matches when the type is equal, the major and minor are equal or wildcards, and
//! the access fits: with a deny default (the exception allows) every requested bit must be in
//! the exception's access; with an allow default (the exception denies) one shared bit is enough.
//! Every exception has the same verdict, so their order does not matter.
//!
//! The loader (`bpf(2)` `BPF_PROG_LOAD` then `BPF_PROG_ATTACH` with `BPF_F_ALLOW_MULTI` on the
//! directory fd) needs root and a cgroup2 directory. Its tests run as root against a cgroup2
//! mount if the machine has one (a hybrid host mounts it at `/sys/fs/cgroup/unified`); the
//! program itself is tested without root by a small interpreter in the tests below.

use std::fs::File;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::devices::{DeviceAccess, DeviceKind, Key, Policy};
use super::{CgroupError, Result};

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    /// dst_reg:4, src_reg:4 — a C bitfield, so which nibble is which follows the byte order.
    regs: u8,
    off: i16,
    imm: i32,
}

// The opcodes we emit: class | operation | source.
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JSET_K: u8 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

const R0: u8 = 0; // return value
const R1: u8 = 1; // the context on entry, scratch afterwards
const R2: u8 = 2; // device type
const R3: u8 = 3; // requested access
const R4: u8 = 4; // major
const R5: u8 = 5; // minor

const DEV_BLOCK: i32 = 1; // BPF_DEVCG_DEV_BLOCK
const DEV_CHAR: i32 = 2; // BPF_DEVCG_DEV_CHAR

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        let regs = if cfg!(target_endian = "little") {
            dst | src << 4
        } else {
            dst << 4 | src
        };
        Insn {
            code,
            regs,
            off,
            imm,
        }
    }

    #[cfg(test)]
    pub(crate) fn parts(&self) -> (u8, u8, u8, i16, i32) {
        let (dst, src) = if cfg!(target_endian = "little") {
            (self.regs & 0xf, self.regs >> 4)
        } else {
            (self.regs >> 4, self.regs & 0xf)
        };
        (self.code, dst, src, self.off, self.imm)
    }
}

/// An instruction of an exception's block; jumps go to the start of the next block.
enum Step {
    Op(Insn),
    /// A conditional jump (`code` with `dst`, `src`, `imm`) to the next block.
    SkipIf(u8, u8, u8, i32),
}

/// Compiles the policy into the filter program.
pub(crate) fn program(policy: &Policy) -> Vec<Insn> {
    let mut p = vec![
        Insn::new(LDX_MEM_W, R2, R1, 0, 0),
        Insn::new(ALU32_AND_K, R2, 0, 0, 0xffff),
        Insn::new(LDX_MEM_W, R3, R1, 0, 0),
        Insn::new(ALU32_RSH_K, R3, 0, 0, 16),
        Insn::new(LDX_MEM_W, R4, R1, 4, 0),
        Insn::new(LDX_MEM_W, R5, R1, 8, 0),
    ];
    for (key, access) in &policy.exceptions {
        let block = exception(key, *access, policy.default_allow);
        let len = block.len();
        p.extend(block.into_iter().enumerate().map(|(i, step)| match step {
            Step::Op(insn) => insn,
            Step::SkipIf(code, dst, src, imm) => {
                // A block is at most 9 instructions: the offset always fits.
                Insn::new(code, dst, src, (len - i - 1) as i16, imm)
            }
        }));
    }
    p.push(Insn::new(
        ALU32_MOV_K,
        R0,
        0,
        0,
        policy.default_allow as i32,
    ));
    p.push(Insn::new(EXIT, 0, 0, 0, 0));
    p
}

/// The block returning the opposite of the default when the device matches `key` and `access`.
fn exception(key: &Key, access: DeviceAccess, default_allow: bool) -> Vec<Step> {
    let dev_type = match key.kind {
        DeviceKind::Block => DEV_BLOCK,
        DeviceKind::Char => DEV_CHAR,
        DeviceKind::All => unreachable!("the emulation never keeps an `a` exception"),
    };
    let mut b = vec![Step::SkipIf(JNE_K, R2, 0, dev_type)];
    if access != DeviceAccess::ALL {
        let bits = access.bits() as i32;
        if default_allow {
            // A deny exception: skip unless the request shares a bit with it.
            b.push(Step::Op(Insn::new(ALU32_MOV_X, R1, R3, 0, 0)));
            b.push(Step::Op(Insn::new(ALU32_AND_K, R1, 0, 0, bits)));
            b.push(Step::SkipIf(JEQ_K, R1, 0, 0));
        } else {
            // An allow exception: skip if the request has a bit it lacks.
            b.push(Step::SkipIf(
                JSET_K,
                R3,
                0,
                !bits & DeviceAccess::ALL.bits() as i32,
            ));
        }
    }
    for (reg, value) in [(R4, key.major), (R5, key.minor)] {
        let Some(v) = value else { continue };
        match i32::try_from(v) {
            Ok(imm) => b.push(Step::SkipIf(JNE_K, reg, 0, imm)),
            Err(_) => {
                // A 64-bit jump sign-extends its immediate; a 32-bit move does not.
                b.push(Step::Op(Insn::new(ALU32_MOV_K, R1, 0, 0, v as i32)));
                b.push(Step::SkipIf(JNE_X, reg, R1, 0));
            }
        }
    }
    b.push(Step::Op(Insn::new(
        ALU32_MOV_K,
        R0,
        0,
        0,
        !default_allow as i32,
    )));
    b.push(Step::Op(Insn::new(EXIT, 0, 0, 0, 0)));
    b
}

// ---------------------------------------------------------------------------------------------
// Loading and attaching

const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_ATTACH: u32 = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `expected_attach_type` (kernel 4.17;
/// older kernels accept it as long as the fields they do not know are zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// The attribute structs above, each with its command. Private: `bpf` relies on the layouts.
trait BpfAttr {
    const CMD: u32;
}

impl BpfAttr for ProgLoadAttr {
    const CMD: u32 = BPF_PROG_LOAD;
}

impl BpfAttr for ProgAttachAttr {
    const CMD: u32 = BPF_PROG_ATTACH;
}

fn bpf<A: BpfAttr>(attr: &mut A) -> io::Result<i64> {
    // SAFETY: `attr` is a live, initialized `repr(C)` struct with the layout the kernel expects
    // for `A::CMD` (checked against <linux/bpf.h> in the tests), and its exact size is passed, so
    // the kernel reads only memory we own. The pointers inside it (instructions, license, log
    // buffer) come from borrows the callers hold across this call; the kernel writes only into
    // the log buffer, within the `log_size` bytes the caller set.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            A::CMD as libc::c_long,
            attr as *mut A,
            mem::size_of::<A>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as i64)
    }
}

/// Loads `prog` as a device filter. `log`, when not empty, receives the verifier's log.
fn load_once(prog: &[Insn], log: &mut [u8]) -> io::Result<OwnedFd> {
    const LICENSE: &[u8] = b"Apache\0";
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"wasm_shim_dev");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    if !log.is_empty() {
        attr.log_level = 1;
        attr.log_size = log.len() as u32;
        attr.log_buf = log.as_mut_ptr() as u64;
    }
    let fd = bpf(&mut attr)?;
    // SAFETY: on success BPF_PROG_LOAD returns a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Loads the filter; on failure returns the error and what the verifier said, if anything.
fn load(prog: &[Insn]) -> std::result::Result<OwnedFd, (io::Error, String)> {
    let err = match load_once(prog, &mut []) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    match err.raw_os_error() {
        // Kernels before 5.11 charge programs to RLIMIT_MEMLOCK, which is often small. Lift it
        // for this one load only: the container init spawned afterwards must not inherit it.
        Some(libc::EPERM) => {
            use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};
            let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_MEMLOCK) else {
                return Err((err, String::new()));
            };
            if setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY).is_err() {
                return Err((err, String::new()));
            }
            let again = load_once(prog, &mut []);
            let _ = setrlimit(Resource::RLIMIT_MEMLOCK, soft, hard);
            again.map_err(|e| (e, String::new()))
        }
        // The verifier refused the program: once more with its log, for the error message.
        Some(libc::EINVAL) | Some(libc::EACCES) => {
            let mut log = vec![0u8; 64 * 1024];
            match load_once(prog, &mut log) {
                Ok(fd) => Ok(fd),
                Err(_) => Err((err, verifier_tail(&log))),
            }
        }
        _ => Err((err, String::new())),
    }
}

/// The last few lines of the verifier's log, where it says what it refused.
fn verifier_tail(log: &[u8]) -> String {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join("; ")
}

/// Loads `prog` and attaches it to the cgroup directory `dir`, beside any filter already there
/// (`BPF_F_ALLOW_MULTI`: all of them must allow an access). The cgroup keeps the program; our
/// fds are closed on return.
pub(crate) fn attach_device_filter(dir: &Path, prog: &[Insn]) -> Result<()> {
    let failed = |op, err, detail| CgroupError::DeviceFilter {
        op,
        path: dir.to_path_buf(),
        err,
        detail,
    };
    let cgroup = File::open(dir).map_err(|e| CgroupError::io("open", dir, e))?;
    let filter = load(prog).map_err(|(err, log)| failed("load", err, log))?;
    let mut attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: filter.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    bpf(&mut attr).map_err(|err| failed("attach", err, String::new()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::devices::{containerd_defaults, rule, DeviceRule};
    use super::*;

    /// Runs a program the way the kernel would, for the opcodes `program` emits. Panics on
    /// anything the verifier would refuse that we can see here: an unknown opcode, a read of an
    /// unset register, a load other than from the context, a backward or out-of-range jump.
    fn run(prog: &[Insn], dev_type: u32, major: u32, minor: u32, access: u32) -> u32 {
        let ctx = [(access << 16) | dev_type, major, minor];
        let mut reg = [0u64; 11];
        let mut set = [false; 11];
        set[R1 as usize] = true; // holds the context pointer
        let mut ctx_in_r1 = true;
        let mut pc = 0usize;
        loop {
            assert!(pc < prog.len(), "fell off the end at {pc}");
            let (code, dst, src, off, imm) = prog[pc].parts();
            let (d, s) = (dst as usize, src as usize);
            let read = |r: usize| {
                assert!(set[r], "r{r} read before being set at {pc}");
                reg[r]
            };
            let sext = imm as i64 as u64;
            let mut jump = false;
            match code {
                LDX_MEM_W => {
                    assert!(s == 1 && ctx_in_r1, "load not from the context at {pc}");
                    assert!(
                        off >= 0 && off % 4 == 0 && off < 12,
                        "bad context offset {off}"
                    );
                    reg[d] = ctx[off as usize / 4] as u64;
                }
                ALU32_AND_K => reg[d] = (read(d) as u32 & imm as u32) as u64,
                ALU32_RSH_K => reg[d] = ((read(d) as u32) >> imm) as u64,
                ALU32_MOV_K => reg[d] = imm as u32 as u64,
                ALU32_MOV_X => reg[d] = read(s) as u32 as u64,
                JEQ_K => jump = read(d) == sext,
                JSET_K => jump = read(d) & sext != 0,
                JNE_K => jump = read(d) != sext,
                JNE_X => jump = read(d) != read(s),
                EXIT => return read(0) as u32,
                _ => panic!("unexpected opcode {code:#x} at {pc}"),
            }
            if matches!(
                code,
                LDX_MEM_W | ALU32_AND_K | ALU32_RSH_K | ALU32_MOV_K | ALU32_MOV_X
            ) {
                set[d] = true;
                if d == 1 {
                    ctx_in_r1 = false;
                }
            } else {
                assert!(off >= 0, "backward jump at {pc}");
            }
            pc += 1 + if jump { off as usize } else { 0 };
        }
    }

    const R: u32 = 2;
    const W: u32 = 4;
    const M: u32 = 1;
    const C: u32 = DEV_CHAR as u32;
    const B: u32 = DEV_BLOCK as u32;

    fn kind(t: u32) -> DeviceKind {
        if t == C {
            DeviceKind::Char
        } else {
            DeviceKind::Block
        }
    }

    /// The program's verdict for every (type, major, minor, access) of a grid that covers the
    /// rules' numbers, their neighbours and the u32 extremes, compared to the v1 emulation.
    fn agrees_with_v1(rules: &[DeviceRule]) -> Policy {
        let policy = Policy::from_rules(rules).unwrap();
        let prog = program(&policy);
        let mut nums = vec![
            0u32,
            1,
            2,
            3,
            5,
            7,
            8,
            136,
            255,
            4095,
            0x7fff_ffff,
            0x8000_0000,
            u32::MAX,
        ];
        for (k, _) in &policy.exceptions {
            for v in [k.major, k.minor].into_iter().flatten() {
                nums.extend([v.wrapping_sub(1), v, v.wrapping_add(1)]);
            }
        }
        for t in [C, B] {
            for &major in &nums {
                for &minor in &nums {
                    for access in 1..=7 {
                        let want = policy.allows(
                            kind(t),
                            major,
                            minor,
                            DeviceAccess::parse(&letters(access)).unwrap(),
                        );
                        let got = run(&prog, t, major, minor, access);
                        assert_eq!(
                            got, want as u32,
                            "{rules:?}: type {t} {major}:{minor} access {access}"
                        );
                    }
                }
            }
        }
        policy
    }

    fn letters(access: u32) -> String {
        let mut s = String::new();
        for (bit, c) in [(R, 'r'), (W, 'w'), (M, 'm')] {
            if access & bit != 0 {
                s.push(c);
            }
        }
        s
    }

    fn rules(texts: &[&str]) -> Vec<DeviceRule> {
        texts.iter().map(|t| rule(t)).collect()
    }

    #[test]
    fn containerd_defaults_program() {
        let rules = containerd_defaults();
        let policy = agrees_with_v1(&rules);
        let prog = program(&policy);
        for (t, major, minor, access, allowed) in [
            (C, 1, 3, R | W, true), // /dev/null
            (C, 1, 3, M, true),
            (C, 1, 9, R, true),       // /dev/urandom
            (C, 136, 0, R | W, true), // /dev/pts/0
            (C, 136, 4095, W, true),
            (C, 10, 200, R | W, true),  // /dev/net/tun
            (C, 1, 1, R, false),        // /dev/mem
            (C, 1, 11, R, false),       // /dev/kmsg
            (C, 10, 232, R | W, false), // /dev/kvm
            (C, 137, 0, R, false),
            (B, 1, 3, R, false),     // block 1:3 is not char 1:3
            (B, 8, 0, R | W, false), // /dev/sda
            (B, 7, 0, M, false),
        ] {
            assert_eq!(
                run(&prog, t, major, minor, access),
                allowed as u32,
                "type {t} {major}:{minor} access {access}"
            );
        }
        // Prologue (6), 10 blocks (a test each for type, major and minor, then `return 1`: 5
        // instructions, 4 for pts which has no minor; every exception has full access, so no
        // access test), the default `return 0` (2).
        assert_eq!(prog.len(), 6 + 9 * 5 + 4 + 2);
    }

    #[test]
    fn allow_all_program() {
        let policy = agrees_with_v1(&rules(&["allow a"]));
        let prog = program(&policy);
        assert_eq!(prog.len(), 8, "prologue and `return 1`");
        for (t, major, minor) in [(C, 1, 3), (B, 8, 0), (C, u32::MAX, u32::MAX)] {
            assert_eq!(run(&prog, t, major, minor, R | W | M), 1);
        }
    }

    #[test]
    fn deny_all_but_one_block_device() {
        let policy = agrees_with_v1(&rules(&["deny a", "allow b 8:0 rw"]));
        let prog = program(&policy);
        for (t, major, minor, access, allowed) in [
            (B, 8, 0, R, true),
            (B, 8, 0, R | W, true),
            (B, 8, 0, M, false),
            (B, 8, 0, R | M, false),
            (B, 8, 1, R, false),
            (C, 8, 0, R, false),
            (C, 1, 3, R, false),
        ] {
            assert_eq!(
                run(&prog, t, major, minor, access),
                allowed as u32,
                "type {t} {major}:{minor} access {access}"
            );
        }
    }

    #[test]
    fn partial_access_and_deny_lists() {
        agrees_with_v1(&rules(&[
            "deny a",
            "allow c 1:* r",
            "allow c 1:3 w",
            "allow b *:* m",
            "allow c *:5 rm",
        ]));
        agrees_with_v1(&rules(&[
            "allow a",
            "deny c 1:3 w",
            "deny b 8:* rw",
            "deny c *:* m",
        ]));
        agrees_with_v1(&rules(&[
            "allow a",
            "deny c 1:3 rwm",
            "deny a",
            "allow c 1:3 r",
        ]));
        agrees_with_v1(&rules(&["deny a"]));
        agrees_with_v1(&rules(&[]));
    }

    #[test]
    fn numbers_above_i32_max_match_exactly() {
        let policy = agrees_with_v1(&rules(&["deny a", "allow c 4294967295:2147483648 r"]));
        let prog = program(&policy);
        assert_eq!(run(&prog, C, u32::MAX, 0x8000_0000, R), 1);
        assert_eq!(run(&prog, C, 0x7fff_ffff, 0x8000_0000, R), 0);
    }

    #[test]
    fn attr_layouts_match_linux_bpf_h() {
        // Offsets from <linux/bpf.h> (union bpf_attr), as offsetof() reports them.
        assert_eq!(mem::size_of::<Insn>(), 8);
        assert_eq!(mem::offset_of!(ProgLoadAttr, insns), 8);
        assert_eq!(mem::offset_of!(ProgLoadAttr, license), 16);
        assert_eq!(mem::offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(mem::offset_of!(ProgLoadAttr, kern_version), 40);
        assert_eq!(mem::offset_of!(ProgLoadAttr, prog_flags), 44);
        assert_eq!(mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(mem::offset_of!(ProgLoadAttr, prog_ifindex), 64);
        assert_eq!(mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(mem::size_of::<ProgLoadAttr>(), 72);
        assert_eq!(mem::offset_of!(ProgAttachAttr, attach_bpf_fd), 4);
        assert_eq!(mem::offset_of!(ProgAttachAttr, attach_type), 8);
        assert_eq!(mem::offset_of!(ProgAttachAttr, attach_flags), 12);
        assert_eq!(mem::size_of::<ProgAttachAttr>(), 16);
    }

    #[test]
    fn verifier_tail_keeps_the_last_lines() {
        let mut log =
            b"0: (61) r2 = *(u32 *)(r1 +0)\n\n1: (95) exit\nR0 !read_ok\nprocessed 2 insns\n"
                .to_vec();
        log.extend([0u8; 8]);
        assert_eq!(
            verifier_tail(&log),
            "1: (95) exit; R0 !read_ok; processed 2 insns"
        );
        assert_eq!(verifier_tail(&[0u8; 4]), "");
    }

    /// Root only: the kernel's verifier accepts what we generate (loading needs no cgroup2).
    #[test]
    fn kernel_verifier_accepts_our_programs() {
        if !nix::unistd::geteuid().is_root() {
            println!("skipped: loading eBPF programs needs root");
            return;
        }
        for rules in [
            containerd_defaults(),
            rules(&["allow a"]),
            rules(&["deny a", "allow b 8:0 rw"]),
            rules(&["allow a", "deny c 1:3 w", "deny b 8:* rw"]),
            rules(&["deny a", "allow c 4294967295:2147483648 r", "allow c 1:* r"]),
        ] {
            let prog = program(&Policy::from_rules(&rules).unwrap());
            if let Err((err, log)) = load(&prog) {
                panic!("{rules:?}: {err} ({log})");
            }
        }
        // And what it says about a program it refuses (r0 never set) reaches the error.
        let bad = [Insn::new(EXIT, 0, 0, 0, 0)];
        let (err, log) = load(&bad).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES), "{err}");
        assert!(log.contains("R0"), "{log}");
    }
}
