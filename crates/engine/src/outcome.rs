//! How a run ended, and the exit status the container reports for it.

use wasmtime::Trap;
use wasmtime_wasi::I32Exit;

use crate::error::one_line;
use crate::limits::MemoryLimitExceeded;

/// Exit status for a wasm trap, including hitting the memory limit.
pub const EXIT_TRAP: i32 = 125;
/// Exit status when the workload could not be instantiated at run time.
pub const EXIT_CANNOT_RUN: i32 = 126;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `proc_exit` / `wasi:cli/exit` code; 0 when `_start` returns or
    /// `wasi:cli/run` returns Ok, 1 when it returns Err; an entry point's i32
    /// result.
    Exited(i32),
    /// The guest trapped. `oom` is true when the memory limit was hit.
    Trap { message: String, oom: bool },
    /// `Engine::interrupt(signal)` stopped it.
    Interrupted(i32),
    /// Instantiation failed at run time.
    Failed(String),
}

impl Outcome {
    /// The container's exit status: the exit code, 125 for a trap, 126 when
    /// the workload could not start, 128 + signal when interrupted.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited(code) => *code,
            Outcome::Trap { .. } => EXIT_TRAP,
            Outcome::Interrupted(signal) => 128 + signal,
            Outcome::Failed(_) => EXIT_CANNOT_RUN,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Exited(code) => write!(f, "exited with code {code}"),
            Outcome::Trap { message, oom: true } => write!(f, "out of memory: {message}"),
            Outcome::Trap {
                message,
                oom: false,
            } => write!(f, "trapped: {message}"),
            Outcome::Interrupted(signal) => write!(f, "interrupted by signal {signal}"),
            Outcome::Failed(message) => write!(f, "cannot run: {message}"),
        }
    }
}

/// Maps the error a guest stopped with to an outcome.
pub(crate) fn classify(
    err: &wasmtime::Error,
    memory_limit_hit: Option<&MemoryLimitExceeded>,
    interrupted_by: Option<i32>,
    instantiating: bool,
) -> Outcome {
    // A denied growth always traps, so this is what stopped the guest.
    if let Some(hit) = memory_limit_hit {
        return Outcome::Trap {
            message: hit.to_string(),
            oom: true,
        };
    }
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return Outcome::Exited(exit.0);
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) if interrupted_by.is_some() => {
            Outcome::Interrupted(interrupted_by.unwrap_or_default())
        }
        Some(trap) => Outcome::Trap {
            message: trap_message(err, trap),
            oom: false,
        },
        // Not a trap: a link or resource failure while instantiating, or a
        // host function failing while the guest runs (that ends the guest the
        // way a trap does).
        None if instantiating => Outcome::Failed(one_line(err)),
        None => Outcome::Trap {
            message: one_line(err),
            oom: false,
        },
    }
}

/// The trap, then where it happened: the innermost wasm frame's function (its name from the
/// name section, else `func[N]`), its module when named, its offset in the module binary and,
/// with DWARF, its source line; then the callers' names, outermost last:
/// `wasm \`unreachable\` instruction executed in func boom (wasm offset 0x2f, src/main.rs:3)
/// called from run <- _start`.
fn trap_message(err: &wasmtime::Error, trap: &Trap) -> String {
    let Some(bt) = err.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return trap.to_string();
    };
    let Some(top) = bt.frames().first() else {
        return trap.to_string();
    };
    let mut at = Vec::new();
    if let Some(module) = top.module().name() {
        at.push(format!("module {module}"));
    }
    if let Some(offset) = top.module_offset() {
        at.push(format!("wasm offset {offset:#x}"));
    }
    if let Some(sym) = top.symbols().first() {
        if let (Some(file), Some(line)) = (sym.file(), sym.line()) {
            at.push(format!("{file}:{line}"));
        }
    }
    let mut text = format!("{trap} in func {}", frame_name(top));
    if !at.is_empty() {
        text.push_str(&format!(" ({})", at.join(", ")));
    }
    // Callers, a recursion's repeats folded: `called from deep (x19) <- run <- _start`.
    let mut callers: Vec<(String, usize)> = Vec::new();
    for name in bt.frames().iter().skip(1).map(frame_name) {
        match callers.last_mut() {
            Some((last, n)) if *last == name => *n += 1,
            _ => callers.push((name, 1)),
        }
    }
    if !callers.is_empty() {
        let shown: Vec<String> = callers
            .iter()
            .take(8)
            .map(|(name, n)| if *n > 1 { format!("{name} (x{n})") } else { name.clone() })
            .collect();
        text.push_str(" called from ");
        text.push_str(&shown.join(" <- "));
        if callers.len() > 8 {
            text.push_str(" <- ...");
        }
    }
    text
}

fn frame_name(frame: &wasmtime::FrameInfo) -> String {
    match frame.func_name() {
        Some(name) => name.to_string(),
        None => format!("func[{}]", frame.func_index()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(Outcome::Exited(3).exit_code(), 3);
        assert_eq!(Outcome::Exited(0).exit_code(), 0);
        let trap = Outcome::Trap {
            message: "x".into(),
            oom: true,
        };
        assert_eq!(trap.exit_code(), EXIT_TRAP);
        assert_eq!(Outcome::Interrupted(15).exit_code(), 143);
        assert_eq!(Outcome::Interrupted(2).exit_code(), 130);
        assert_eq!(Outcome::Failed("x".into()).exit_code(), EXIT_CANNOT_RUN);
    }

    #[test]
    fn classification() {
        let exit = wasmtime::Error::new(I32Exit(4));
        assert_eq!(classify(&exit, None, None, false), Outcome::Exited(4));

        let interrupt = wasmtime::Error::new(Trap::Interrupt);
        assert_eq!(
            classify(&interrupt, None, Some(15), false),
            Outcome::Interrupted(15)
        );
        assert!(matches!(
            classify(&interrupt, None, None, false),
            Outcome::Trap { oom: false, .. }
        ));

        let hit = MemoryLimitExceeded {
            limit: 10,
            desired: 20,
        };
        let grow = wasmtime::Error::msg(hit.to_string());
        assert!(matches!(
            classify(&grow, Some(&hit), None, false),
            Outcome::Trap { oom: true, .. }
        ));

        let link = wasmtime::Error::msg("no such thing");
        assert_eq!(
            classify(&link, None, None, true),
            Outcome::Failed("no such thing".into())
        );
    }
}
