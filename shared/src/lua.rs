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
    lua.load(GUARDS)
        .set_name("=sandbox")
        .set_mode(ChunkMode::Text)
        .call::<()>((refusal, settle, limits.memory / MIN_ELEMENT_SIZE))?;
    lua.set_memory_limit(limits.memory)?;
    Ok(lua)
}

/// Bytes a table element takes at least (one `TValue`): a range longer than the memory limit
/// divided by this holds mostly nothing.
const MIN_ELEMENT_SIZE: usize = 16;

/// Trusted Lua run by [`sandbox`] before any user code, given the Rust helpers `refusal` (see
/// [`pattern_refusal`]) and `settle` (raises the limit error a caught error hides), and how many
/// table elements the memory limit could hold. The originals it wraps stay in its upvalues, which
/// user code cannot reach without `debug`.
const GUARDS: &str = r#"
local refusal, settle, max_elements = ...
local error, rawget, type = error, rawget, type
local raw_pcall, raw_xpcall, raw_setmetatable = pcall, xpcall, setmetatable
local string, table, tointeger = string, table, math.tointeger
local find, match, gmatch, gsub, rep = string.find, string.match, string.gmatch, string.gsub, string.rep
local move, insert, remove = table.move, table.insert, table.remove

-- Called, not tail-called, the originals keep their own name in argument errors.
local function pass(...) return ... end

-- Lua's matcher backtracks in C, where the CPU hook cannot stop it.
local function check(s, pattern)
  local refused = refusal(s, pattern)
  if refused then error(refused, 3) end
end
function string.find(s, pattern, init, plain, ...)
  if not plain then check(s, pattern) end
  return pass(find(s, pattern, init, plain, ...))
end
function string.match(s, pattern, ...)
  check(s, pattern)
  return pass(match(s, pattern, ...))
end
function string.gmatch(s, pattern, ...)
  check(s, pattern)
  return pass(gmatch(s, pattern, ...))
end
function string.gsub(s, pattern, ...)
  check(s, pattern)
  return pass(gsub(s, pattern, ...))
end

-- With nothing to copy, Lua's `rep` still loops `n` times in C; the result is "" all the same.
function string.rep(s, n, sep, ...)
  if s == "" and (sep == nil or sep == "") then
    local count = tointeger(n)
    if count and count > 1 then n = 1 end
  end
  return pass(rep(s, n, sep, ...))
end

-- These loop in C over the range given, or over `#t`, which `__len` can make anything; a range
-- longer than memory could fill is holes, and refused.
local function check_range(first, last)
  first, last = tointeger(first), tointeger(last)
  if first and last and last - first >= max_elements then
    error("range too large for the sandbox: " .. first .. " to " .. last, 3)
  end
end
function table.move(a, f, e, ...)
  check_range(f, e)
  return pass(move(a, f, e, ...))
end
function table.insert(t, ...)
  if type(t) == "table" then check_range(1, #t) end
  return pass(insert(t, ...))
end
function table.remove(t, ...)
  if type(t) == "table" then check_range(1, #t) end
  return pass(remove(t, ...))
end

-- The CPU budget is an error raised by the instruction hook, and running out of memory is an
-- error too: a pcall in a loop would catch them again and again. Once a limit is hit, they are
-- raised again, uncatchable.
local function settled(ok, ...)
  settle(ok, (...))
  return ok, ...
end
function pcall(...) return settled(raw_pcall(...)) end
function xpcall(...) return settled(raw_xpcall(...)) end

-- Finalizers run with hooks off, beyond the budget's reach. Lua only honours a `__gc` present
-- when the metatable is set, so checking here is enough.
function setmetatable(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("__gc metamethods are not allowed", 2)
  end
  return raw_setmetatable(t, mt)
end

-- The strings' metatable holds the string library as `__index`: no handing it out or swapping it.
getmetatable("").__metatable = false
"#;

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

/// The largest worst-case cost, in [`pattern_refusal`]'s units, of a pattern call the sandbox
/// allows: about 0.15 s of C (measured: one backtracking quantifier over 4.4 KB of spaces,
/// `s:find("%s*x")`, takes 0.12 s; a linear pattern over 16 MB, 0.17 s). So one allowed call
/// overruns the budget by little, and as each guarded call checks the budget, a loop of them is
/// stopped as promptly as `while true do end`. `(%w+)=(%w+)` over 1 KB costs 10^6.
const MAX_PATTERN_COST: u128 = 20_000_000;

/// Why a call of a pattern function on `subject` with `pattern` could outlast any CPU budget, if
/// it could; `None` for calls the sandbox allows.
///
/// Lua's matcher (lstrlib.c) is a backtracking search: each quantified single-character class
/// (`*`, `+`, `-`, `?` after a class, not escaped by `%` nor inside a `[...]` set) may try every
/// length the subject leaves it, and the search starts again at each subject position, so q such
/// quantifiers cost at worst about len(subject)^(q + 1) steps. A quantifier that ends the pattern
/// (captures closing aside) is not counted: once the matcher reaches it, the rest is empty and
/// the first length it tries succeeds, so it adds a linear scan, not a factor. `%b`, `%f`, and
/// back-references are linear at each position and are not counted either. The estimate
/// saturates; a call above [`MAX_PATTERN_COST`] is refused.
pub fn pattern_refusal(subject: &[u8], pattern: &[u8]) -> Option<String> {
    let quantifiers = backtracking_quantifiers(pattern);
    let n = subject.len() as u128;
    let cost = n.saturating_pow(quantifiers.saturating_add(1));
    (cost > MAX_PATTERN_COST).then(|| {
        format!(
            "pattern too complex for the sandbox: {quantifiers} quantifiers over a subject of {} bytes",
            subject.len()
        )
    })
}

/// What one element of a pattern is, for [`backtracking_quantifiers`].
#[derive(Clone, Copy, PartialEq)]
enum Item {
    /// A single-character class with a quantifier.
    Quantified,
    /// A capture's `(` or `)`: matching them never fails.
    Capture,
    /// Anything else: a class without quantifier, `%b`, `%f`, a back-reference, a final `$`.
    Other,
}

/// The quantifiers of a Lua pattern that can make the matcher backtrack, read the way lstrlib.c's
/// `do_match` reads a pattern. A malformed pattern is read as far as it goes; Lua refuses it.
fn backtracking_quantifiers(pattern: &[u8]) -> u32 {
    let p = pattern;
    let mut items = Vec::new();
    let mut i = usize::from(p.first() == Some(&b'^'));
    while i < p.len() {
        match (p[i], p.get(i + 1)) {
            (b'(' | b')', _) => {
                items.push(Item::Capture);
                i += 1;
            }
            (b'$', None) => {
                items.push(Item::Other);
                i += 1;
            }
            (b'%', Some(b'b')) => {
                items.push(Item::Other);
                i += 4;
            }
            (b'%', Some(b'f')) => {
                items.push(Item::Other);
                i = class_end(p, i + 2);
            }
            (b'%', Some(d)) if d.is_ascii_digit() => {
                items.push(Item::Other);
                i += 2;
            }
            _ => {
                let end = class_end(p, i);
                if matches!(p.get(end), Some(b'*' | b'+' | b'-' | b'?')) {
                    items.push(Item::Quantified);
                    i = end + 1;
                } else {
                    items.push(Item::Other);
                    i = end;
                }
            }
        }
    }
    let mut count = items
        .iter()
        .filter(|&&item| item == Item::Quantified)
        .count();
    if items.iter().rev().find(|&&item| item != Item::Capture) == Some(&Item::Quantified) {
        count -= 1;
    }
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Where the single-character class starting at `i` ends, as lstrlib.c's `classEnd`: `%x` is two
/// bytes; a set runs to the first `]` after its first member (so `[]]` and `[^]]` hold `]`, and
/// `-` there is a member or a range, never a quantifier), `%` escaping inside it.
fn class_end(p: &[u8], mut i: usize) -> usize {
    let first = p.get(i).copied();
    i += 1;
    match first {
        Some(b'%') => i + 1,
        Some(b'[') => {
            if p.get(i) == Some(&b'^') {
                i += 1;
            }
            loop {
                let Some(&c) = p.get(i) else { return p.len() };
                i += 1;
                if c == b'%' && i < p.len() {
                    i += 1;
                }
                if p.get(i) == Some(&b']') {
                    return i + 1;
                }
            }
        }
        _ => i,
    }
}

/// The CPU-time deadline of the call [`with_cpu_budget`] is running, for the guards of [`GUARDS`].
struct Budget(Instant);

/// Whether `lua` is running past its CPU-time budget.
fn budget_spent(lua: &Lua) -> bool {
    lua.app_data_ref::<Budget>()
        .is_some_and(|budget| Instant::now() > budget.0)
}

/// Runs `f` with the CPU-time budget of `limits` enforced on `lua`.
pub fn with_cpu_budget<R>(lua: &Lua, limits: &Limits, f: impl FnOnce() -> R) -> R {
    let deadline = Instant::now() + limits.cpu_time;
    lua.set_app_data(Budget(deadline));
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
    lua.remove_app_data::<Budget>();
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
            let started = Instant::now();
            let err = eval::<Value>(&format!("{BOMB}{call}")).unwrap_err();
            // Then it is refused with a clear error, long before any budget ends
            assert!(started.elapsed() < Duration::from_secs(1), "{call}");
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
        assert!(started.elapsed() < Duration::from_secs(1));
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
    fn counts_the_quantifiers_that_can_backtrack() {
        for (pattern, count) in [
            ("a*b", 1),
            ("a*", 0),
            ("^a*", 0),
            ("a-b", 1),
            ("a*()", 0),
            ("(a*)", 0),
            ("a*$", 1),
            ("(%w+)=(%w+)", 1),
            ("%s+", 0),
            ("%*x", 0),
            ("[a-z]+x", 1),
            ("[-*+?]x", 0),
            ("[]*]x", 0),
            ("[^]-]x", 0),
            ("[%]*]+x", 1),
            ("%b()*x", 0),
            ("%f[%w]%w+", 0),
            ("(a)%1*x", 0),
            (".?.?x", 2),
        ] {
            assert_eq!(
                backtracking_quantifiers(pattern.as_bytes()),
                count,
                "{pattern}"
            );
        }
        assert_eq!(
            backtracking_quantifiers("a*".repeat(40).as_bytes()),
            39,
            "the last one ends the pattern"
        );
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
        assert!(started.elapsed() < Duration::from_secs(1));
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
            let started = Instant::now();
            let err = eval::<Value>(code).unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(1), "{code}");
            assert!(err.to_string().contains("range too large"), "{code}: {err}");
        }
        let moved: Vec<i64> = eval(
            "local t = {1, 2, 3} table.insert(t, 4) table.insert(t, 1, 0) table.remove(t, 2)
             return table.move(t, 1, #t, 2, {9})",
        )
        .unwrap();
        assert_eq!(moved, [9, 0, 2, 3, 4]);
    }

    #[test]
    fn refuses_bytecode() {
        let err = check_function("\x1bLuaT\0", &limits()).unwrap_err();
        assert!(err.starts_with("Error parsing function: "), "{err}");
    }
}
