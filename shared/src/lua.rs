//! The Lua sandbox in which user code runs (spec §6): lambda functions and template code blocks.
//!
//! Each sandbox is its own Lua 5.4 state with only safe globals (no `io`, `require`, `load*`,
//! `dofile`, `debug`, `collectgarbage`, no bytecode; `os` reduced to clock/date/difftime/time), a
//! memory limit, and an instruction hook that stops code past its CPU-time budget. A runaway or
//! failing function becomes an error value, never a crash of the process that runs it.
//!
//! The hook only runs between VM instructions, so what could outrun it is closed here for every
//! user of the sandbox: `pcall`/`xpcall` re-raise the CPU-time and memory limit errors instead of
//! returning them; `setmetatable` refuses `__gc` (Lua runs finalizers with hooks off); the
//! pattern functions (`string.find`, `match`, `gmatch`, `gsub`, also reached as `s:find(...)`)
//! refuse a pattern whose worst-case backtracking over the subject could outlast any budget (see
//! [`pattern_refusal`]); and `string.rep` of nothing returns at once rather than looping in C.
//! The originals live only in upvalues of trusted code, out of reach without `debug`, and the
//! strings' metatable is protected, so user code cannot get them back.

use std::time::{Duration, Instant};

use mlua::{ChunkMode, HookTriggers, Lua, LuaOptions, StdLib, Value, VmState};

/// Resource limits for one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory the Lua state may allocate.
    pub memory: usize,
    /// CPU time one call may use.
    pub cpu_time: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory: 16 * 1024 * 1024,
            cpu_time: Duration::from_secs(1),
        }
    }
}

/// The deployment switch `untrusted_lua` (as Kong's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LuaPolicy {
    /// Run user Lua in the sandbox with these limits (the default).
    Sandbox(Limits),
    /// Refuse hooks that carry user Lua.
    Off,
}

impl Default for LuaPolicy {
    fn default() -> LuaPolicy {
        LuaPolicy::Sandbox(Limits::default())
    }
}

impl std::str::FromStr for LuaPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<LuaPolicy, String> {
        match s {
            "sandbox" => Ok(LuaPolicy::default()),
            "off" => Ok(LuaPolicy::Off),
            other => Err(format!(
                "untrusted_lua must be 'sandbox' or 'off', not '{other}'"
            )),
        }
    }
}

/// How often (in VM instructions) the CPU-time budget is checked.
const HOOK_EVERY: u32 = 10_000;

/// Globals of the base library that would let code escape or load code.
const UNSAFE_GLOBALS: &[&str] = &[
    "dofile",
    "load",
    "loadfile",
    "loadstring",
    "require",
    "collectgarbage",
    "module",
    "package",
    "debug",
    "io",
];

/// A fresh sandboxed Lua state.
pub fn sandbox(limits: &Limits) -> mlua::Result<Lua> {
    let libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8 | StdLib::OS;
    let lua = Lua::new_with(libs, LuaOptions::default())?;
    let globals = lua.globals();
    for name in UNSAFE_GLOBALS {
        globals.raw_set(*name, Value::Nil)?;
    }
    // `os` keeps only the clock functions; `string.dump` would expose bytecode.
    let os: mlua::Table = globals.get("os")?;
    let safe_os = lua.create_table()?;
    for name in ["clock", "date", "difftime", "time"] {
        safe_os.set(name, os.get::<Value>(name)?)?;
    }
    globals.set("os", safe_os)?;
    let string: mlua::Table = globals.get("string")?;
    string.set("dump", Value::Nil)?;
    lua.set_memory_limit(limits.memory)?;
    Ok(lua)
}

/// Runs `f` with the CPU-time budget of `limits` enforced on `lua`.
pub fn with_cpu_budget<R>(lua: &Lua, limits: &Limits, f: impl FnOnce() -> R) -> R {
    let deadline = Instant::now() + limits.cpu_time;
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(HOOK_EVERY),
        move |_lua, _debug| {
            if Instant::now() > deadline {
                Err(mlua::Error::RuntimeError("CPU time limit exceeded".into()))
            } else {
                Ok(VmState::Continue)
            }
        },
    );
    let result = f();
    lua.remove_hook();
    result
}

/// Lua's own name for the type of `value` (integers are numbers, as in Lua).
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Integer(_) | Value::Number(_) => "number",
        other => other.type_name(),
    }
}

/// Compiles `source` as text (never bytecode) and runs the chunk in a fresh sandbox; it must
/// return a function. The error messages are Kong's.
pub fn check_function(source: &str, limits: &Limits) -> Result<(), String> {
    let lua = sandbox(limits).map_err(|e| format!("Error parsing function: {e}"))?;
    let chunk = lua
        .load(source)
        .set_name("function")
        .set_mode(ChunkMode::Text);
    let function = chunk
        .into_function()
        .map_err(|e| format!("Error parsing function: {}", first_line(&e)))?;
    let returned = with_cpu_budget(&lua, limits, || function.call::<Value>(()))
        .map_err(|e| format!("Error running function: {}", first_line(&e)))?;
    match returned {
        Value::Function(_) => Ok(()),
        other => Err(format!(
            "Bad return value from function, expected function type, got {}",
            type_name(&other)
        )),
    }
}

/// The message of a Lua error without its traceback.
fn first_line(err: &mlua::Error) -> String {
    let text = match err {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::CallbackError { cause, .. } => return first_line(cause),
        other => other.to_string(),
    };
    text.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            memory: 4 * 1024 * 1024,
            cpu_time: Duration::from_millis(200),
        }
    }

    #[test]
    fn accepts_a_chunk_returning_a_function() {
        assert_eq!(
            check_function("return function(data) return data end", &limits()),
            Ok(())
        );
    }

    #[test]
    fn reports_syntax_errors_and_wrong_return_types() {
        let err = check_function("return function(", &limits()).unwrap_err();
        assert!(err.starts_with("Error parsing function: "), "{err}");
        assert_eq!(
            check_function("return {}", &limits()).unwrap_err(),
            "Bad return value from function, expected function type, got table"
        );
        assert_eq!(
            check_function("local x = 1", &limits()).unwrap_err(),
            "Bad return value from function, expected function type, got nil"
        );
    }

    #[test]
    fn stops_runaway_and_greedy_chunks() {
        let err = check_function("while true do end", &limits()).unwrap_err();
        assert!(err.contains("CPU time limit exceeded"), "{err}");
        let err = check_function(
            "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1024) end",
            &limits(),
        )
        .unwrap_err();
        assert!(err.contains("memory"), "{err}");
    }

    #[test]
    fn refuses_escapes() {
        for code in [
            "os.execute('true')",
            "io.open('/etc/passwd')",
            "require('os')",
            "load('return 1')",
            "dofile('/etc/passwd')",
            "string.dump(function() end)",
            "debug.getinfo(1)",
        ] {
            let err = check_function(code, &limits()).unwrap_err();
            assert!(err.starts_with("Error running function: "), "{code}: {err}");
        }
    }

    #[test]
    fn refuses_bytecode() {
        let err = check_function("\x1bLuaT\0", &limits()).unwrap_err();
        assert!(err.starts_with("Error parsing function: "), "{err}");
    }
}
