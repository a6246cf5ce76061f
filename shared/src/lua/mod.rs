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
//! refuse a pattern whose worst-case backtracking over the subject could keep C busy far longer
//! than the hook allows (see [`pattern_refusal`]) and check the budget themselves; `string.rep` of
//! nothing returns at once and `table.move`/`insert`/`remove` refuse ranges longer than memory
//! could fill, rather than looping in C. The originals live only in upvalues of trusted code, out
//! of reach without `debug`, and the strings' metatable is protected, so user code cannot get
//! them back.
//!
//! Three more places run user code where the instruction hook cannot: a `__close` handler closed
//! while a limit error unwinds (refused at compile time, see [`syntax`]), an `xpcall` message
//! handler called for the hook's own error (the guard below stops it before it starts once the
//! budget is spent), and `__gc` (refused above). `print` and `warn` write to the structured log,
//! capped, never raw to stdout (on Lambda stdout also carries the metrics); `tostring` and
//! `string.format` never show an address (`table: 0x…` would leak the process's memory layout).
//! The CPU-time budget is a deadline ([`with_deadline`]): one per delivery, however many
//! functions or templates the delivery runs.
//!
//! Everything about running user Lua lives under this module: the trusted Lua of the guards
//! (`sandbox.lua`), [`pattern`] (which pattern calls are refused), [`syntax`] (refused syntax),
//! [`json`] (Lua values out as JSON), [`chain`] (the `lambda` handler's functions), [`template`]
//! (webhook-custom templates), [`pool`] (the threads user code runs on) and [`hooks`] (each
//! hook's lane on the pool and its cached compiled code).

pub(crate) mod chain;
pub use chain::LuaChain;
pub(crate) mod hooks;
pub(crate) mod json;
pub(crate) mod pattern;
pub(crate) mod pool;
pub(crate) mod syntax;
pub(crate) mod template;

use std::time::{Duration, Instant};

use mlua::{ChunkMode, HookTriggers, Lua, LuaOptions, StdLib, Value, VmState};
use uuid::Uuid;

use self::pattern::pattern_refusal;

/// Resource limits for one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory the Lua state may allocate.
    pub memory: usize,
    /// CPU time one call may use.
    pub(crate) cpu_time: Duration,
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

/// A value of `untrusted_lua` that is neither `sandbox` nor `off`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("untrusted_lua must be 'sandbox' or 'off', not '{0}'")]
pub struct UnknownLuaPolicy(pub String);

impl std::str::FromStr for LuaPolicy {
    type Err = UnknownLuaPolicy;

    fn from_str(s: &str) -> Result<LuaPolicy, UnknownLuaPolicy> {
        match s {
            "sandbox" => Ok(LuaPolicy::default()),
            "off" => Ok(LuaPolicy::Off),
            other => Err(UnknownLuaPolicy(other.to_string())),
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
    let refusal = lua.create_function(|lua, (subject, pattern): (Value, Value)| {
        // Checked here too: between two of these calls the hook may see only a few instructions.
        if budget_spent(lua) {
            return Err(mlua::Error::RuntimeError(CPU_LIMIT.into()));
        }
        let (Some(subject), Some(pattern)) =
            (lua.coerce_string(subject)?, lua.coerce_string(pattern)?)
        else {
            // Not text: the original raises Lua's own argument error.
            return Ok(None);
        };
        Ok(pattern_refusal(&subject.as_bytes(), &pattern.as_bytes()))
    })?;
    let settle = lua.create_function(|lua, (ok, err): (bool, Value)| {
        if budget_spent(lua) {
            Err(mlua::Error::RuntimeError(CPU_LIMIT.into()))
        } else if !ok && is_memory_error(&err) {
            Err(mlua::Error::MemoryError(MEMORY_LIMIT.into()))
        } else {
            Ok(())
        }
    })?;
    let emit = lua.create_function(|lua, (stream, text): (mlua::String, mlua::String)| {
        emit_output(lua, &stream.to_string_lossy(), &text.as_bytes());
        Ok(())
    })?;
    lua.load(GUARDS)
        .set_name("=sandbox")
        .set_mode(ChunkMode::Text)
        .call::<()>((refusal, settle, limits.memory / MIN_ELEMENT_SIZE, emit))?;
    lua.set_memory_limit(limits.memory)?;
    Ok(lua)
}

/// Bytes a table element takes at least (one `TValue`): a range longer than the memory limit
/// divided by this holds mostly nothing.
const MIN_ELEMENT_SIZE: usize = 16;

/// Trusted Lua (`sandbox.lua`) run by [`sandbox`] before any user code, given the Rust helpers
/// `refusal` (see [`pattern_refusal`]) and `settle` (raises the limit error a caught error hides),
/// how many table elements the memory limit could hold, and `emit` (the log of `print`/`warn`). The originals it wraps stay in its upvalues, which
/// user code cannot reach without `debug`.
const GUARDS: &str = include_str!("sandbox.lua");

/// The error the CPU budget raises.
const CPU_LIMIT: &str = "CPU time limit exceeded";

/// The message Lua gives a failed allocation (its preallocated `memerrmsg`).
const MEMORY_LIMIT: &str = "not enough memory";

/// Whether a caught error is running out of memory: Lua's own message, or the error [`sandbox`]'s
/// `pcall` re-raised (a `pcall(pcall, f)` catches that one).
fn is_memory_error(err: &Value) -> bool {
    fn is_memory(e: &mlua::Error) -> bool {
        match e {
            mlua::Error::MemoryError(_) => true,
            mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
                is_memory(cause)
            }
            _ => false,
        }
    }
    match err {
        Value::String(s) => s.as_bytes() == MEMORY_LIMIT.as_bytes(),
        Value::Error(e) => is_memory(e),
        _ => false,
    }
}

/// The CPU-time deadline of the call [`with_deadline`] is running, for the guards of [`GUARDS`].
struct Deadline(Instant);

/// Whether `lua` is running past its CPU-time budget.
fn budget_spent(lua: &Lua) -> bool {
    lua.app_data_ref::<Deadline>()
        .is_some_and(|deadline| Instant::now() > deadline.0)
}

/// What one delivery's user code may use, in all: the sandbox's limits, and one deadline that
/// every Lua call of the delivery shares (spec §6, "one budget per delivery").
#[derive(Debug, Clone)]
pub struct Budget {
    pub limits: Limits,
    pub deadline: Instant,
    /// The hook whose code runs, named on its `print`/`warn` log lines.
    pub(crate) owner: Option<Uuid>,
}

impl Budget {
    /// A budget of `limits.cpu_time` from now.
    pub fn starting_now(limits: &Limits, owner: Option<Uuid>) -> Budget {
        Budget {
            limits: limits.clone(),
            deadline: Instant::now() + limits.cpu_time,
            owner,
        }
    }
}

/// Bytes of `print`/`warn` output one call of [`with_deadline`] may log; one line is cut at
/// [`OUTPUT_LINE`] bytes.
const OUTPUT_PER_CALL: usize = 8 * 1024;
const OUTPUT_LINE: usize = 1024;

/// Whose code a sandbox runs (a hook id), for the log lines of its output, and how much more
/// output the current call may log.
struct Output {
    owner: Option<Uuid>,
    remaining: usize,
}

/// Names the hook whose code `lua` runs, so that its `print`/`warn` lines carry the hook id.
pub(crate) fn set_owner(lua: &Lua, hook_id: Uuid) {
    lua.set_app_data(Output {
        owner: Some(hook_id),
        remaining: OUTPUT_PER_CALL,
    });
}

/// Writes one `print`/`warn` line of user code to the log, within the call's allowance.
fn emit_output(lua: &Lua, stream: &str, text: &[u8]) {
    let Some(mut output) = lua.app_data_mut::<Output>() else {
        return;
    };
    if output.remaining == 0 {
        return;
    }
    let owner = output.owner.map(|id| id.to_string()).unwrap_or_default();
    let allowed = text.len().min(OUTPUT_LINE).min(output.remaining);
    output.remaining -= allowed;
    let mut line = String::from_utf8_lossy(&text[..allowed]).into_owned();
    if allowed < text.len() {
        line.push_str(" [cut]");
    }
    // Debug formatting escapes newlines, so user output cannot fake log lines.
    tracing::info!(target: "event_hooks::user_lua", hook_id = %owner, stream, output = ?line, "user code output");
    if output.remaining == 0 {
        tracing::warn!(target: "event_hooks::user_lua", hook_id = %owner, "user code output past {OUTPUT_PER_CALL} bytes dropped");
    }
}

#[cfg(test)]
/// Runs `f` with the CPU-time budget of `limits` enforced on `lua`, starting now.
pub(crate) fn with_cpu_budget<R>(lua: &Lua, limits: &Limits, f: impl FnOnce() -> R) -> R {
    with_deadline(lua, Instant::now() + limits.cpu_time, f)
}

/// Runs `f` with `lua` stopped at `deadline`: every Lua call of one delivery shares it, so the
/// delivery's user code has one budget in all.
pub(crate) fn with_deadline<R>(lua: &Lua, deadline: Instant, f: impl FnOnce() -> R) -> R {
    match lua.app_data_mut::<Output>() {
        Some(mut output) => output.remaining = OUTPUT_PER_CALL,
        None => {
            lua.set_app_data(Output {
                owner: None,
                remaining: OUTPUT_PER_CALL,
            });
        }
    }
    lua.set_app_data(Deadline(deadline));
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(HOOK_EVERY),
        move |_lua, _debug| {
            if Instant::now() > deadline {
                Err(mlua::Error::RuntimeError(CPU_LIMIT.into()))
            } else {
                Ok(VmState::Continue)
            }
        },
    );
    let result = f();
    lua.remove_hook();
    lua.remove_app_data::<Deadline>();
    result
}

/// Lua's own name for the type of `value` (integers are numbers, as in Lua).
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Integer(_) | Value::Number(_) => "number",
        other => other.type_name(),
    }
}

/// Why a lambda function's source was refused, when its hook is checked or its chain compiled;
/// the messages are Kong's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionRefused {
    /// The source does not compile (or declares a to-be-closed variable, or the sandbox could
    /// not start); Lua's reason, without traceback or addresses.
    #[error("Error parsing function: {0}")]
    Parse(String),
    /// Running the chunk failed: a Lua error, the CPU-time budget or the memory limit.
    #[error("Error running function: {0}")]
    Run(String),
    /// The chunk returned something other than a function; Lua's name of its type.
    #[error("Bad return value from function, expected function type, got {0}")]
    NotAFunction(&'static str),
}

#[cfg(test)]
/// Compiles `source` as text (never bytecode) and runs the chunk in a fresh sandbox; it must
/// return a function.
pub(crate) fn check_function(source: &str, limits: &Limits) -> Result<(), FunctionRefused> {
    check_function_until(source, limits, Instant::now() + limits.cpu_time)
}

/// [`check_function`] within `deadline`, which the checks of one hook's functions share.
pub(crate) fn check_function_until(
    source: &str,
    limits: &Limits,
    deadline: Instant,
) -> Result<(), FunctionRefused> {
    syntax::refuse_to_be_closed(source).map_err(|e| FunctionRefused::Parse(e.to_string()))?;
    let lua = sandbox(limits).map_err(|e| FunctionRefused::Parse(e.to_string()))?;
    let chunk = lua
        .load(source)
        .set_name("function")
        .set_mode(ChunkMode::Text);
    let function = chunk
        .into_function()
        .map_err(|e| FunctionRefused::Parse(first_line(&e)))?;
    let returned = with_deadline(&lua, deadline, || function.call::<Value>(()))
        .map_err(|e| FunctionRefused::Run(first_line(&e)))?;
    match returned {
        Value::Function(_) => Ok(()),
        other => Err(FunctionRefused::NotAFunction(type_name(&other))),
    }
}

/// `text` with the addresses Lua writes for reference values (`table: 0x55d0c3a2`) replaced by
/// the type's name, for error messages that leave the sandbox.
pub(crate) fn scrub_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(": 0x") {
        let digits = rest[at + 4..]
            .bytes()
            .take_while(u8::is_ascii_hexdigit)
            .count();
        let named = ["table", "function", "thread", "userdata"]
            .iter()
            .any(|name| rest[..at].ends_with(name));
        out.push_str(&rest[..at]);
        if digits == 0 || !named {
            out.push_str(": 0x");
        }
        rest = &rest[at + 4 + if named { digits } else { 0 }..];
    }
    out.push_str(rest);
    out
}

/// The message of a Lua error without its traceback.
fn first_line(err: &mlua::Error) -> String {
    let text = match err {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::CallbackError { cause, .. } => return first_line(cause),
        other => other.to_string(),
    };
    scrub_addresses(text.lines().next().unwrap_or_default())
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
        assert!(matches!(err, FunctionRefused::Parse(_)), "{err:?}");
        assert!(
            err.to_string().starts_with("Error parsing function: "),
            "{err}"
        );
        let err = check_function("return {}", &limits()).unwrap_err();
        assert_eq!(err, FunctionRefused::NotAFunction("table"));
        assert_eq!(
            err.to_string(),
            "Bad return value from function, expected function type, got table"
        );
        assert_eq!(
            check_function("local x = 1", &limits()).unwrap_err(),
            FunctionRefused::NotAFunction("nil")
        );
    }

    #[test]
    fn stops_runaway_and_greedy_chunks() {
        let err = check_function("while true do end", &limits()).unwrap_err();
        assert!(
            matches!(&err, FunctionRefused::Run(m) if m.contains(CPU_LIMIT)),
            "{err:?}"
        );
        let err = check_function(
            "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1024) end",
            &limits(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, FunctionRefused::Run(m) if m.contains("memory")),
            "{err:?}"
        );
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
            assert!(matches!(err, FunctionRefused::Run(_)), "{code}: {err:?}");
            assert!(
                err.to_string().starts_with("Error running function: "),
                "{code}: {err}"
            );
        }
    }

    /// Runs `code` in a fresh sandbox under the CPU budget of [`limits`].
    fn eval<R: mlua::FromLuaMulti>(code: &str) -> mlua::Result<R> {
        let lua = sandbox(&limits())?;
        with_cpu_budget(&lua, &limits(), || lua.load(code).eval())
    }

    const BOMB: &str = "local s, bomb = string.rep('a', 40), string.rep('a*', 40) .. 'b'\n";

    #[test]
    fn refuses_pattern_bombs_at_once_however_called() {
        for call in [
            "return string.find(s, bomb)",
            "return s:find(bomb)",
            "return s:match(bomb)",
            "return s:gmatch(bomb)()",
            "return s:gsub(bomb, '')",
            "return (s):find(bomb, 1, false)",
        ] {
            // Given a pattern that would backtrack for minutes, when it is called
            let err = eval::<Value>(&format!("{BOMB}{call}")).unwrap_err();
            // Then it is refused with a clear error before it runs (not stopped by the budget,
            // whose error says something else)
            assert!(
                err.to_string().contains(
                    "pattern too complex for the sandbox: 40 quantifiers over a subject of 40 bytes"
                ),
                "{call}: {err}"
            );
        }
        // A plain find matches no pattern, so it is never refused.
        let plain: Option<i64> = eval(&format!("{BOMB}return s:find(bomb, 1, true)")).unwrap();
        assert_eq!(plain, None);
    }

    #[test]
    fn typical_patterns_still_work() {
        let (k, v): (String, String) =
            eval("return (string.rep(' ', 1021) .. 'k=v'):match('(%w+)=(%w+)')").unwrap();
        assert_eq!((k.as_str(), v.as_str()), ("k", "v"));
        let (squeezed, n): (String, i64) =
            eval("return string.rep('a \\t\\n', 16384):gsub('%s+', ' ')").unwrap();
        assert_eq!((squeezed.len(), n), (2 * 16384, 16384));
        let at: (i64, i64) = eval(
            "local s = string.rep('x', 1024 * 1024) .. 'needle' return s:find('needle', 1, true)",
        )
        .unwrap();
        assert_eq!(at, (1024 * 1024 + 1, 1024 * 1024 + 6));
        let words: Vec<String> =
            eval("local t = {} for w in ('a bb ccc'):gmatch('%a+') do t[#t + 1] = w end return t")
                .unwrap();
        assert_eq!(words, ["a", "bb", "ccc"]);
        let found: (i64, i64, String) = eval("return ('hello'):find('(l+)')").unwrap();
        assert_eq!(found, (3, 4, "ll".into()));
        // Numbers are strings to the pattern functions, as in Lua.
        let (digits, n): (String, i64) = eval("return string.gsub(12345, '[24]', '')").unwrap();
        assert_eq!((digits.as_str(), n), ("135", 2));
        // Lua's own argument errors still name the function.
        let err = eval::<Value>("return string.find(nil, 'x')").unwrap_err();
        assert!(
            err.to_string().contains("bad argument #1 to 'find'"),
            "{err}"
        );
    }

    #[test]
    fn allowed_patterns_in_a_loop_are_stopped_by_the_cpu_budget() {
        // The costliest call the guard lets through: one quantifier that backtracks over 4.4 KB.
        let started = Instant::now();
        let err = eval::<Value>("local s = string.rep(' ', 4400) while true do s:find('%s*x') end")
            .unwrap_err();
        assert!(err.to_string().contains(CPU_LIMIT), "{err}");
        // Generous: only proves it stopped at all (the alternative loops forever)
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn the_original_pattern_functions_cannot_be_recovered() {
        let recovered: bool = eval(&format!(
            "{BOMB}
            assert(getmetatable('') == false)
            assert(not pcall(function() return getmetatable('').__index end))
            assert(not pcall(setmetatable, getmetatable(''), {{}}))
            assert(('').find == string.find and rawget(string, 'find') == string.find)
            for _, name in ipairs({{'find', 'match', 'gmatch', 'gsub'}}) do
              for _, f in ipairs({{string[name], rawget(string, name), ('')[name]}}) do
                local ok, err = pcall(f, s, bomb)
                if ok or not err:find('too complex', 1, true) then return true end
              end
            end
            return false"
        ))
        .unwrap();
        assert!(!recovered);
    }

    #[test]
    fn pcall_cannot_swallow_the_limits() {
        for code in [
            "while true do pcall(function() while true do end end) end",
            "while true do xpcall(function() while true do end end, function(e) return e end) end",
            "while true do pcall(pcall, function() while true do end end) end",
        ] {
            let err = eval::<Value>(code).unwrap_err();
            assert!(err.to_string().contains(CPU_LIMIT), "{code}: {err}");
        }
        let greedy =
            "function() local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1024) end end";
        for code in [
            format!("pcall({greedy}) return 'swallowed'"),
            format!("pcall(pcall, {greedy}) return 'swallowed'"),
            format!("xpcall({greedy}, function(e) return e end) return 'swallowed'"),
        ] {
            let err = eval::<Value>(&code).unwrap_err();
            assert!(memory_error(&err), "{code}: {err:?}");
        }
        // Other errors are caught as usual.
        let caught: (bool, String) = eval("return pcall(error, 'boom', 0)").unwrap();
        assert_eq!(caught, (false, "boom".into()));
    }

    fn memory_error(err: &mlua::Error) -> bool {
        match err {
            mlua::Error::MemoryError(_) => true,
            mlua::Error::CallbackError { cause, .. } => memory_error(cause),
            _ => false,
        }
    }

    #[test]
    fn refuses_finalizers() {
        let err = eval::<Value>("setmetatable({}, {__gc = function() while true do end end})")
            .unwrap_err();
        assert!(err.to_string().contains("__gc"), "{err}");
        let seven: i64 =
            eval("return setmetatable({}, {__index = function() return 7 end}).x").unwrap();
        assert_eq!(seven, 7);
    }

    #[test]
    fn repeating_nothing_returns_at_once() {
        let started = Instant::now();
        let empty: String =
            eval("return string.rep('', math.maxinteger) .. ('').rep('', 1e15, '')").unwrap();
        assert_eq!(empty, "");
        // Generous: only proves it returned at all (the alternative loops 2^63 times)
        assert!(started.elapsed() < Duration::from_secs(10));
        let joined: String = eval("return ('ab'):rep(3, ',')").unwrap();
        assert_eq!(joined, "ab,ab,ab");
        assert!(eval::<Value>("return string.rep('', 1.5)").is_err());
    }

    #[test]
    fn refuses_table_ranges_longer_than_memory_could_fill() {
        for code in [
            "table.move({}, 1, math.maxinteger, 2)",
            "table.move({}, -1e15, 0, 1, {})",
            "local t = setmetatable({}, {__len = function() return 1e15 end}) table.insert(t, 1, 'x')",
            "local t = setmetatable({}, {__len = function() return 1e15 end}) table.remove(t, 1)",
        ] {
            // Refused before it starts: the message says so (the budget would say something else)
            let err = eval::<Value>(code).unwrap_err();
            assert!(err.to_string().contains("range too large"), "{code}: {err}");
        }
        let moved: Vec<i64> = eval(
            "local t = {1, 2, 3} table.insert(t, 4) table.insert(t, 1, 0) table.remove(t, 2)
             return table.move(t, 1, #t, 2, {9})",
        )
        .unwrap();
        assert_eq!(moved, [9, 0, 2, 3, 4]);
    }

    /// Runs `f` on a thread of its own and waits at most `seconds` for it: a test of something
    /// that used to hang fails instead of hanging the suite.
    fn within<R: Send + 'static>(seconds: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(f());
        });
        result
            .recv_timeout(Duration::from_secs(seconds))
            .expect("still running: the budget did not stop it")
    }

    #[test]
    fn refuses_to_be_closed_variables_whose_handlers_no_budget_could_stop() {
        // Given the attack of issue 8: a `__close` handler that loops, closed by the limit error
        let attack = "return function() local x <close> = setmetatable({}, {__close=function() while true do end end}) while true do end end";
        // Then it is refused when the function is checked
        let err = within(10, move || check_function(attack, &limits())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Error parsing function: line 1: to-be-closed variables ('<close>') are not allowed in the sandbox"
        );
    }

    #[test]
    fn an_error_handler_cannot_outlive_the_budget() {
        // Lua calls the handler for the hook's own error from inside the hook, with hooks off.
        let err = within(10, || {
            eval::<Value>(
                "xpcall(function() while true do end end, function(e) while true do end end)",
            )
            .map_err(|e| e.to_string())
        })
        .unwrap_err();
        assert!(err.contains(CPU_LIMIT), "{err}");
        // Handlers of ordinary errors still run.
        let handled: (bool, String) =
            eval("return xpcall(error, function(e) return 'handled ' .. e end, 'boom', 0)")
                .unwrap();
        assert_eq!(handled, (false, "handled boom".into()));
    }

    #[test]
    fn one_deadline_holds_across_calls() {
        // Given a deadline that a first call used up
        let lua = sandbox(&limits()).unwrap();
        let deadline = Instant::now() + Duration::from_millis(100);
        with_deadline(&lua, deadline, || lua.load("return 1").exec()).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        // When a second call runs under the same deadline, code that a fresh budget would let
        // finish is stopped
        let short = "local t = os.clock() while os.clock() - t < 0.05 do end";
        assert!(with_cpu_budget(&lua, &limits(), || lua.load(short).exec()).is_ok());
        let second = with_deadline(&lua, deadline, || lua.load(short).exec()).unwrap_err();
        assert!(second.to_string().contains(CPU_LIMIT), "{second}");
    }

    #[test]
    fn no_addresses_leave_the_sandbox() {
        let shown: (String, String, String) = eval(
            "return tostring({}), string.format('%s %s', print, {}), tostring(setmetatable({}, {__tostring = function() return 'mine' end}))",
        )
        .unwrap();
        assert_eq!(
            shown,
            ("table".into(), "function table".into(), "mine".into())
        );
        let err = eval::<String>("return string.format('%p', {})").unwrap_err();
        assert!(err.to_string().contains("'%p' is not allowed"), "{err}");
        let plain: String = eval("return string.format('%d%% %5.1f %s', 3, 1.25, 'x')").unwrap();
        assert_eq!(plain, "3%   1.2 x");
        assert_eq!(
            scrub_addresses("bad: table: 0x55d0c3a2f0 and function: 0xAB, not x: 0x12"),
            "bad: table and function, not x: 0x12"
        );
    }

    #[test]
    fn print_and_warn_go_to_the_log_escaped_and_capped() {
        // Given a log that this thread writes to
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let hook = Uuid::from_u128(7);
        tracing::subscriber::with_default(subscriber, || {
            let lua = sandbox(&limits()).unwrap();
            set_owner(&lua, hook);
            // When user code prints a forged log line, warns, and prints far past the cap
            with_cpu_budget(&lua, &limits(), || {
                lua.load(
                    r#"print("a\n{\"_aws\":{}}", 1, nil) warn("careful") warn("@on")
                       for i = 1, 100 do print(string.rep("x", 2000)) end"#,
                )
                .exec()
            })
            .unwrap();
        });
        let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        // Then each line is in the log with the hook id, newlines escaped, and the flood capped
        assert!(log.contains(&hook.to_string()), "{log}");
        assert!(log.contains(r#"a\n{\"_aws\":{}}\t1\tnil"#), "{log}");
        assert!(log.contains("careful"), "{log}");
        assert!(!log.contains("@on"), "{log}");
        assert!(
            log.lines().all(|line| !line.starts_with("{\"_aws\"")),
            "{log}"
        );
        let printed = log.matches("[cut]").count();
        assert!(
            (1..=9).contains(&printed),
            "{printed} lines of the flood logged"
        );
        assert!(log.contains("dropped"), "{log}");
    }

    #[test]
    fn refuses_bytecode() {
        let err = check_function("\x1bLuaT\0", &limits()).unwrap_err();
        assert!(matches!(err, FunctionRefused::Parse(_)), "{err:?}");
    }
}
